"""The master's link to its database: the backend, timing by kind, outage state and back-off; the lease.

Every database call of the master goes through :meth:`DbLink.call` with an explicit
:class:`~fastsched.master.metrics.DbKind`, so the Performance line's split of database time never
depends on a method's name. A call that fails marks the database down: no claims until the
heartbeat gets an answer again, retried with a back-off that doubles up to DB_RETRY_MAX (and a
quarter of the lease). A connection that dropped is closed, so the next call reconnects.

:class:`Lease` is the one published value the outage policy reads: the monotonic time until which
this master's claims are safe, half a lease after its last successful heartbeat (after one lease
another master recovers them and runs the jobs again). The loop's outage duty and the watchdog
thread both read :attr:`Lease.valid_until`, and the children fence themselves on the same value.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from typing import Any, TypeVar

from fastsched.backends.contracts import MasterStore
from fastsched.errors import DatabaseError, DatabaseUnavailable
from fastsched.master.metrics import DbKind, PoolMetrics

log = logging.getLogger("fastsched.pool")

T = TypeVar("T")

DB_RETRY_MIN = 0.1  # seconds: first back-off after a database error
DB_RETRY_MAX = 5.0  # seconds: longest back-off between database attempts
DB_ERROR_LOG_INTERVAL = 30.0  # seconds between "still unreachable" warnings


class Lease:
    """Until when this master's claims are safe (monotonic seconds): half a lease after the last
    successful heartbeat. Written by the loop's thread only.

    ``published``: where the value lives, the one copy every reader reads: the loop (may it still
    claim), the watchdog thread and the outage duty (must the children die), and the children,
    who fence themselves on it (shared memory, ``fastsched.child_process``). A float store is
    atomic, so the watchdog and the children read it without a lock. None: a copy of its own
    (in-process tests, a pool whose children are not fenced)."""

    def __init__(self, lease: float, published: Any = None) -> None:
        self.seconds = lease
        self.renewed_at = -math.inf  # monotonic time of the last successful heartbeat
        self._published = published if published is not None else [-math.inf]

    @property
    def valid_until(self) -> float:
        return float(self._published[0])

    def renew(self, mono: float) -> None:
        self.renewed_at = mono
        self._published[0] = mono + self.seconds / 2

    def valid(self, mono: float) -> bool:
        """Whether this master may still dispatch: its last heartbeat is younger than half the lease."""
        return mono < self._published[0]


class DbLink:
    """The backend as the master uses it. ``open_backend``: called for the first call (the pool
    forks its children before any connection exists)."""

    def __init__(
        self,
        open_backend: Callable[[], MasterStore],
        metrics: PoolMetrics,
        lease: float,
        mono: Callable[[], float],
        perf: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._open = open_backend
        self._backend: MasterStore | None = None
        self._metrics = metrics
        self._lease = lease
        self._mono = mono
        self._perf = perf
        self.down = False
        self.down_since = 0.0
        self.retry_at = 0.0  # monotonic: the next attempt while down
        self.warned_at = 0.0
        self.last_error: DatabaseError | None = None
        self._backoff = DB_RETRY_MIN

    @property
    def backend(self) -> MasterStore:
        if self._backend is None:
            self._backend = self._open()
        return self._backend

    def call(self, kind: DbKind, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``function(*args, **kwargs)``, its time added to ``kind``; a DatabaseError marks the
        database down (see :meth:`failed`) and is raised on."""
        started = self._perf()
        try:
            return function(*args, **kwargs)
        except DatabaseError as exc:
            self.failed(exc)
            raise
        finally:
            self._metrics.add_db_time(kind, self._perf() - started)

    def failed(self, exc: DatabaseError) -> None:
        mono = self._mono()
        self.last_error = exc
        self._metrics.db_errors += 1
        self._metrics.db_up = False
        if not self.down:
            self.down = True
            self.down_since = self.warned_at = mono
            self._backoff = DB_RETRY_MIN
            log.error(
                "database error: %s: no claims until it answers again (children keep running for up to half "
                "the lease, %gs)", exc, self._lease / 2,
            )
        else:
            self._backoff = min(self._backoff * 2, DB_RETRY_MAX, max(self._lease / 4, DB_RETRY_MIN))
        self.retry_at = mono + self._backoff
        if isinstance(exc, DatabaseUnavailable) and self._backend is not None:
            with contextlib.suppress(Exception):  # closing a broken connection may fail too
                self._backend.close()

    def answered(self, mono: float) -> None:
        """A call succeeded after the database was down (the heartbeat says so)."""
        if self.down:
            log.warning("database reachable again after %.1fs", mono - self.down_since)
        self.down = False
        self._backoff = DB_RETRY_MIN
        self._metrics.db_up = True

    def warn_if_still_down(self, mono: float) -> None:
        if self.down and mono - self.warned_at >= DB_ERROR_LOG_INTERVAL:
            self.warned_at = mono
            log.warning("database still unreachable after %.0fs; retrying", mono - self.down_since)

    def close(self) -> None:
        if self._backend is not None:
            with contextlib.suppress(Exception):
                self._backend.close()
