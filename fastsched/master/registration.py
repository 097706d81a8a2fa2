"""This master's rows in the process table: start-up, the heartbeat, and starting over.

Start-up connects, refuses a second live master with our host id, recovers what a dead
predecessor with our host id held, and registers the master and its children. The heartbeat
refreshes the rows and says whether they are still there (another master may have declared us
dead and taken our claims). After a claim whose answer was lost, and after being declared dead,
the master starts over holding nothing: every claim of its host is released and it registers again.
"""
from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

from fastsched import pidfile
from fastsched.errors import DatabaseUnavailable, PoolAlreadyRunning
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
                self._refuse_if_running(self._wall())
                released = self._link.call(DbKind.WRITE, backend.recover_host, self.host)
                if released:
                    log.warning(
                        "released %d jobs claimed by a previous master with host id %s (it died)", released, self.host
                    )
                self._register()
                return
            except DatabaseUnavailable as exc:
                left = deadline - self._mono()
                if left <= 0 or give_up():
                    raise
                delay = min(delay, left)
                log.warning("database unreachable at start-up (%s); retrying in %.1fs", exc, delay)
                self._sleep(delay)
                delay = min(delay * 2, DB_RETRY_MAX)

    def _refuse_if_running(self, now: dt.datetime) -> None:
        alive_after = now - dt.timedelta(seconds=self._lease)
        for info in self._link.call(DbKind.OTHER, self._link.backend.processes):
            if info.role != "master" or info.host != self.host or info.pid == self.pid:
                continue
            if info.heartbeat >= alive_after and pidfile.pid_alive(info.pid):
                raise PoolAlreadyRunning(
                    f"a pool with host id {self.host!r} is already running against this database "
                    f"(master pid {info.pid}, last heartbeat {info.heartbeat:%Y-%m-%d %H:%M:%S} UTC); "
                    f"stop it first, or give this pool another host id"
                )
            log.info(
                "the previous master with host id %s (pid %d) is dead: recovering its claims", self.host, info.pid
            )

    def _register(self) -> None:
        now = self._wall()
        backend = self._link.backend
        self._link.call(DbKind.WRITE, backend.register_master, self.host, self.pid, self._workers, now, self._queues)
        self._register_children(now)

    def _register_children(self, now: dt.datetime) -> None:
        generation = self._children.generation
        self._link.call(
            DbKind.WRITE, self._link.backend.register_children, self.host, self.pid, self._children.pids(), now
        )
        self._registered_generation = generation

    def heartbeat(self) -> bool:
        """Refresh our rows; False when they are gone (we were declared dead). DatabaseError raised."""
        return bool(self._link.call(
            DbKind.WRITE, self._link.backend.heartbeat, self.host, self.pid, self._workers, self._wall()
        ))

    @property
    def children_listed(self) -> bool:
        """The process table lists our children as they are."""
        return self._registered_generation == self._children.generation

    def sync_children(self) -> None:
        """List our children as they are now (DatabaseError raised, and tried again later)."""
        if not self.children_listed:
            self._register_children(self._wall())

    def start_over(self) -> int:
        """Release every claim of our host and register again: what we held is void. How many
        jobs were released. DatabaseError raised."""
        released = int(self._link.call(DbKind.WRITE, self._link.backend.recover_host, self.host))
        self._register()
        return released

    def unregister(self) -> None:
        self._link.call(DbKind.WRITE, self._link.backend.unregister, self.host, self.pid)
