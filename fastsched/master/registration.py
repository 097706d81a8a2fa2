"""This master's rows in the process table: start-up, the heartbeat, and starting over.

Start-up connects, refuses a second live master with our host id (whatever machine it is on: its
heartbeat is fresh on the database's clock), replaces a dead predecessor with our host id and
releases what it held, and registers the master and its children, atomically. Each start is an
instance of its own, and owns its claims as that instance (``owner``). The heartbeat
refreshes the rows and says whether they are still there (another master may have declared us
dead and taken our claims). After a claim whose answer was lost, and after being declared dead,
the master starts over holding nothing: every claim of its host is released and it registers again.
"""
from __future__ import annotations

import datetime as dt
import logging
import secrets
from collections.abc import Callable

from fastsched import pidfile
from fastsched.backends.base import ProcessInfo, claim_owner
from fastsched.errors import DatabaseError, DatabaseUnavailable, PoolAlreadyRunning
from fastsched.master.childset import ChildSet
from fastsched.master.dblink import DB_RETRY_MAX, DB_RETRY_MIN, DbLink
from fastsched.master.metrics import DbKind

log = logging.getLogger("fastsched.pool")

# Start-up gives up sooner than a running pool: a wrong DSN or a database that is not up yet should
# be told at once, while a running pool rides out an outage (its children are killed at half the lease).
STARTUP_RETRY = 5.0  # seconds start-up retries an unreachable database before it gives up


class Registration:
    """The master ``pid`` with ``workers`` children on ``host``, as the database knows it."""

    def __init__(
        self,
        link: DbLink,
        children: ChildSet,
        *,
        host: str,
        pid: int,
        workers: int,
        lease: float,
        wall: Callable[[], dt.datetime],
        mono: Callable[[], float],
        sleep: Callable[[float], None],
        queues: tuple[str, ...] = (),
    ) -> None:
        self._queues = queues  # the queue set this master claims from, listed with it
        self._link = link
        self._children = children
        self.host = host
        self.pid = pid
        self._workers = workers
        self._lease = lease
        self._wall = wall
        self._mono = mono
        self._sleep = sleep
        self._registered_generation = -1  # the ChildSet generation the process table lists
        self.instance = secrets.token_hex(8)  # this start's: a twin with our host id is another one
        self.machine = pidfile.machine_identity()
        self.owner = claim_owner(host, self.instance)  # what our claims are owned by

    def start(self, give_up: Callable[[], bool]) -> None:
        """Connect, check for a live master with our host id, recover our predecessor, register.

        Retries an unreachable database for STARTUP_RETRY seconds (or the lease if shorter, or until
        ``give_up()``), then raises DatabaseUnavailable; PoolAlreadyRunning for a live twin."""
        deadline = self._mono() + min(self._lease, STARTUP_RETRY)
        delay = DB_RETRY_MIN
        while True:
            try:
                backend = self._link.backend
                self._link.call(DbKind.OTHER, backend.init_schema)
                self._register(check=self._refuse_if_running)
                return
            except DatabaseUnavailable as exc:
                left = deadline - self._mono()
                if left <= 0 or give_up():
                    raise
                delay = min(delay, left)
                log.warning("database unreachable at start-up (%s); retrying in %.1fs", exc, delay)
                self._sleep(delay)
                delay = min(delay * 2, DB_RETRY_MAX)

    def _refuse_if_running(self, others: list[ProcessInfo], server_now: dt.datetime) -> None:
        """Refuse to start beside a master with our host id whose heartbeat is fresh on the
        database's clock, wherever it runs; unless it is on this machine (same boot, same PID
        namespace) and its pid is gone: then it died, and we replace it."""
        alive_after = server_now - dt.timedelta(seconds=self._lease)
        for info in others:
            here = bool(self.machine) and info.machine == self.machine
            if info.heartbeat >= alive_after and not (here and not pidfile.pid_alive(info.pid)):
                where = "on this machine" if here else "on another machine or in another PID namespace"
                raise PoolAlreadyRunning(
                    f"a pool with host id {self.host!r} is already running against this database, {where} "
                    f"(master pid {info.pid}, last heartbeat {info.heartbeat:%Y-%m-%d %H:%M:%S} UTC, within "
                    f"the lease of {self._lease:g}s); stop it first, or give this pool another host id"
                )
            log.info(
                "the previous master with host id %s (pid %d) is dead: recovering its claims", self.host, info.pid
            )

    def _register(self, check: Callable[[list[ProcessInfo], dt.datetime], None] | None = None) -> None:
        backend = self._link.backend
        _, released = self._link.call(
            DbKind.WRITE, backend.register_master, self.host, self.pid, self._workers, None, self._queues,
            instance=self.instance, machine=self.machine, check=check,
        )
        if released:
            log.warning("released %d jobs claimed by a previous master with host id %s (it died)", released, self.host)
        self._register_children(None)

    def _register_children(self, now: dt.datetime | None) -> None:
        generation = self._children.generation
        self._link.call(
            DbKind.WRITE, self._link.backend.register_children, self.host, self.pid, self._children.pids(), now
        )
        self._registered_generation = generation

    def heartbeat(self) -> bool:
        """Refresh our rows; False when they are gone (we were declared dead). DatabaseError raised."""
        return bool(self._link.call(
            DbKind.WRITE, self._link.backend.heartbeat, self.host, self.pid, self._workers, None, self.instance
        ))

    @property
    def children_listed(self) -> bool:
        """The process table lists our children as they are."""
        return self._registered_generation == self._children.generation

    def sync_children(self) -> None:
        """List our children as they are now (DatabaseError raised, and tried again later)."""
        if not self.children_listed:
            self._register_children(None)

    def start_over(self) -> int:
        """Release every claim of this instance and register again: what we held is void. How
        many jobs were released. DatabaseError raised."""
        released = self.release()
        self._register()
        return released

    def release(self, keep: list[int] | None = None) -> int:
        """Release this instance's claims but those of the children ``keep`` (busy: we know what
        they hold); how many. DatabaseError raised."""
        return int(self._link.call(DbKind.WRITE, self._link.backend.release_claims, self.owner, keep or ()))

    def unregister(self) -> None:
        """Release whatever this instance still holds, then unregister (a stop, or the failure
        path: nothing is left for the lease to expire)."""
        self.release()
        self._link.call(DbKind.WRITE, self._link.backend.unregister, self.host, self.pid)

    def leave(self, write_last: Callable[[], bool], within: float) -> bool:
        """``write_last()`` (the last outcomes: done, released), then :meth:`unregister`, retried
        with a back-off for ``within`` seconds; False when the database did not let us. The last
        outcomes must reach the database first, or their jobs run again after the lease."""
        deadline = self._mono() + within
        delay = DB_RETRY_MIN
        while True:
            if write_last():
                try:
                    self.unregister()
                    return True
                except DatabaseError:
                    pass
            if self._mono() >= deadline:
                return False
            self._sleep(delay)
            delay = min(delay * 2, DB_RETRY_MAX)
