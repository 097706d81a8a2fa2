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

__all__ = ["Clock", "DatabaseWall", "utcnow"]

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


# A host clock off the database's by less is left alone: the estimate of the offset is off by up to
# half a round trip, and a master a fraction of a millisecond behind would find a job added that
# instant not yet runnable and claim it a poll later. NTP keeps hosts far closer than this.
SKEW_IGNORED = dt.timedelta(milliseconds=50)


class DatabaseWall:
    """This host's wall clock moved onto the database server's, for the master's claims (a job is
    runnable once ``next_try`` has passed) and the times its outcomes write (a retry's ``next_try``):
    a master whose clock is minutes behind would otherwise start every job minutes late, and one
    ahead would run delayed jobs and retries early. ``sync`` takes a reading of the server's clock
    with the host's readings just before and after it (the master takes one at registration and
    at each maintenance run). Off (``enabled`` False) where the server's clock is this host's (SQLite)."""

    def __init__(self, wall: Callable[[], dt.datetime], *, enabled: bool = True) -> None:
        self._wall = wall
        self.enabled = enabled
        self.offset = dt.timedelta(0)

    def __call__(self) -> dt.datetime:
        return self._wall() + self.offset

    def host(self) -> dt.datetime:
        """The host's own reading, for the readings around a ``sync``."""
        return self._wall()

    def sync(self, server_now: dt.datetime, before: dt.datetime, after: dt.datetime) -> None:
        """Take the offset of ``server_now``, read between the host's ``before`` and ``after``.
        A reading that took longer than twice SKEW_IGNORED (a retried or stalled call) is too
        uncertain to move the clock by: the offset stays as it was."""
        if not self.enabled or after - before > 2 * SKEW_IGNORED:
            return
        offset = server_now - (before + (after - before) / 2)
        self.offset = offset if abs(offset) > SKEW_IGNORED else dt.timedelta(0)
