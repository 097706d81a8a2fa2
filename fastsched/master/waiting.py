"""What the master's loop waits on besides its children: a stop request and the wake-up socket.

:class:`Wakeups` holds a self-pipe (a stop request, from a signal handler, writes a byte to it so
that the wait returns at once) and the ``fastsched.wakeup`` listener (a producer on this host added
a job). :meth:`Wakeups.wait` waits on both and on whatever else it is given (the children's pipes
and sentinels), up to a timeout, and says what arrived.
"""
from __future__ import annotations

import dataclasses
import logging
import multiprocessing.connection
import os
from collections.abc import Sequence
from typing import Any, cast

log = logging.getLogger("fastsched.pool")


@dataclasses.dataclass(frozen=True)
class Woken:
    """What one wait brought."""

    ready: list[Any]  # the objects of the wait that are ready (the children's among them)
    added: bool = False  # a wake-up datagram: a job was added on this host
    priorities: list[int] | None = None  # with added: the priorities it named (None: not all did)


NOTHING = Woken([])


class Wakeups:
    def __init__(self) -> None:
        self._read = -1
        self._write = -1
        self._listener: Any = None

    def open(self, identity: str, host_id: str, poll_interval: float) -> None:
        """The self-pipe, and the wake-up socket of master ``host_id`` of database ``identity``
        (without it new jobs are found by polling every ``poll_interval``)."""
        from fastsched import wakeup

        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        try:
            self._listener = wakeup.Listener(identity, host_id)
        except OSError as exc:
            log.warning("no wake-up socket (%s): new jobs are found by polling every %gs", exc, poll_interval)

    def poke(self) -> None:
        """Make the current or next wait return at once. Safe in a signal handler."""
        if self._write >= 0:
            try:
                os.write(self._write, b"s")
            except OSError:
                pass

    def wait(self, others: Sequence[Any], timeout: float) -> Woken:
        objects: list[Any] = [self._read] if self._read >= 0 else []
        listener = self._listener
        if listener is not None:
            objects.append(listener)
        objects.extend(others)
        ready = multiprocessing.connection.wait(objects, timeout)
        if not ready:
            return NOTHING
        if self._read in ready:
            try:
                while os.read(self._read, 512):
                    pass
            except OSError:
                pass
        if listener is not None and any(obj is cast(Any, listener) for obj in ready):
            listener.drain()
            return Woken(ready, True, listener.take_added())
        return Woken(ready)

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for fd in (self._read, self._write):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._read = self._write = -1
