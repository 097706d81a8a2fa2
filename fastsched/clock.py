"""Time, in one place: the wall clock that stamps what is written, and the injected clocks of the master.

Everything stored is a naive UTC ``datetime`` (:func:`utcnow`). The pool master decides on a
monotonic clock (intervals, run-time limits, back-off, the lease) and sleeps only for back-off; a
:class:`Clock` carries all three so that its decisions can be tested in-process with fake time.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Callable

__all__ = ["Clock", "utcnow"]

_UTC = dt.timezone.utc


def utcnow() -> dt.datetime:
    """Now, as a naive UTC datetime (the form every stored time takes)."""
    return dt.datetime.now(_UTC).replace(tzinfo=None)


@dataclasses.dataclass(frozen=True)
class Clock:
    """The master's clocks. ``mono`` must be the host's ``time.monotonic`` in a real pool: the
    children stamp their progress slot with it and the master compares against it."""

    wall: Callable[[], dt.datetime] = utcnow
    mono: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
