"""The master's work between claims, as duties: each says when it is next due and does its work.

The loop runs every duty whose :meth:`Duty.next_due` has come and waits no longer than the
earliest one, so what it waits for can never drift from what runs. A duty that has nothing to do
(the database is down, the pool is stopping) is due at infinity.

- :class:`Heartbeat`: keeps this master alive in the process table (and retries a down database);
- :class:`OutagePolicy`: kills the children at half the lease without a heartbeat;
- :class:`ShutdownGrace`: force-stops when running jobs take longer than the grace;
- :class:`RunTimeLimits`: stops jobs over their priority's limit;
- :class:`Maintenance`: recovers dead masters' claims, fails malformed rows, purges;
- :class:`PeriodicTasks`: enqueues the periodic tasks, once per period across the cluster;
- :class:`LogLines`: Friendica's "Load" and "Performance" lines.

:class:`Watchdog` is the thread that kills the children when the loop is stuck in a database call.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from fastsched import pidfile, tasks
from fastsched.backends import one_host
from fastsched.clock import DatabaseWall
from fastsched.config import PoolSettings
from fastsched.errors import DatabaseError
from fastsched.master.childset import ChildSet
from fastsched.master.dblink import DB_ERROR_LOG_INTERVAL, DbLink, Lease
from fastsched.master.metrics import DbKind, PoolMetrics
from fastsched.master.registration import Registration
from fastsched.priority import Priority

log = logging.getLogger("fastsched.pool")

LOG_INTERVAL = 10.0  # seconds between the "Load" and "Performance" lines
STATS_BUDGET_FACTOR = 100  # the Load line's counts are read again after 100x the time the last read took
# The purge deletes in chunks, each its own transaction (0.1-0.3 s for 5,000 rows on MariaDB on a
# busy 2-core machine: no long locks), until one deletes less than a chunk or the run has taken
# PURGE_BUDGET. The loop claims nothing meanwhile, so the loop is never held much longer than the
# budget; a run that stops at it brings the next maintenance forward to PURGE_PAUSE later instead of
# a whole maintenance_interval. A backlog so gets two thirds of the loop: 34,000 deleted rows/s
# while purging there make ~22,000/s, more than that machine drains.
PURGE_CHUNK = 5_000
# Rows a purge call reads at most: a million rows older than the cutoff that must stay (a deep
# pending backlog) cost a maintenance run 1.4 s to walk on MariaDB; the walk now goes on from where
# the last run stopped, a slice per run.
PURGE_SCAN = 20_000
PURGE_BUDGET = 0.5  # seconds
PURGE_PAUSE = 0.25  # seconds
PERIODIC_CHECKS = 4  # a periodic task's lease is tried this many times per period (at most every maintenance)
CRON_MIN_RECHECK = 0.01  # seconds: the least wait before a cron task's lease is tried again


class Duty(Protocol):
    def next_due(self) -> float:
        """Monotonic time this duty wants to run next (math.inf: not now)."""

    def run(self, mono: float) -> None:
        """Do the work due at ``mono``."""


def run_due(duties: list[Duty], mono: float) -> None:
    for duty in duties:
        if duty.next_due() <= mono:
            duty.run(mono)


def next_deadline(duties: list[Duty]) -> float:
    return min((duty.next_due() for duty in duties), default=math.inf)


class Heartbeat:
    """Every ``interval`` seconds (while the database is down: at each back-off's end), refresh our
    rows, renew the lease and list the children again if they changed. ``on_lost``: our rows were
    gone: another master declared us dead and released our claims."""

    def __init__(
        self, link: DbLink, lease: Lease, registration: Registration, interval: float, on_lost: Callable[[], None]
    ) -> None:
        self._link = link
        self._lease = lease
        self._registration = registration
        self._interval = interval
        self._on_lost = on_lost
        self._next = 0.0

    def started(self, mono: float) -> None:
        """Start-up registered us at ``mono``."""
        self._lease.renew(mono)
        self._next = mono + self._interval

    def next_due(self) -> float:
        return self._link.retry_at if self._link.down else self._next

    def run(self, mono: float) -> None:
        self._next = mono + self._interval
        try:
            alive = self._registration.heartbeat()
        except DatabaseError:
            return
        self._link.answered(mono)
        self._lease.renew(mono)
        if not alive:
            self._on_lost()
            return
        try:
            self._registration.sync_children()
        except DatabaseError:
            pass  # listed again at the next heartbeat


class OutagePolicy:
    """While the database is down: past the lease's ``valid_until`` (half a lease without a
    heartbeat), kill the children before another master recovers their claims (``on_expired``),
    once per outage; and warn every DB_ERROR_LOG_INTERVAL."""

    def __init__(self, link: DbLink, lease: Lease, children: ChildSet, on_expired: Callable[[float], None]) -> None:
        self._link = link
        self._lease = lease
        self._children = children
        self._on_expired = on_expired
        self._fired_for = -math.inf  # the heartbeat (renewed_at) whose lease ran out

    def _armed(self) -> bool:
        return self._fired_for != self._lease.renewed_at and len(self._children) > 0

    def next_due(self) -> float:
        if not self._link.down:
            return math.inf
        due = self._link.warned_at + DB_ERROR_LOG_INTERVAL
        if self._armed():
            due = min(due, self._lease.valid_until)
        return due

    def run(self, mono: float) -> None:
        if not self._link.down:
            return
        if self._armed() and mono >= self._lease.valid_until:
            self._fired_for = self._lease.renewed_at
            self._on_expired(mono)
        self._link.warn_if_still_down(mono)


class ShutdownGrace:
    """Stopping with busy children past ``deadline``: ``on_expired`` force-stops."""

    def __init__(self, busy: Callable[[], int], grace: float, on_expired: Callable[[], None]) -> None:
        self._busy = busy
        self._grace = grace
        self._on_expired = on_expired
        self.deadline = math.inf

    def begin(self, mono: float) -> None:
        self.deadline = mono + self._grace

    def next_due(self) -> float:
        return self.deadline

    def run(self, mono: float) -> None:
        busy = self._busy()
        if busy:
            log.warning(
                "shutdown grace of %gs is over: killing %d busy children and releasing their jobs", self._grace, busy,
            )
            self.deadline = math.inf
            self._on_expired()


class RunTimeLimits:
    def __init__(self, children: ChildSet) -> None:
        self._children = children

    def next_due(self) -> float:
        return self._children.next_limit_check()

    def run(self, mono: float) -> None:
        self._children.check_limits(mono)


class Maintenance:
    """Every maintenance_interval while the database answers and the pool is not stopping: release
    the claims of masters past their lease, fail malformed rows, purge old done jobs."""

    def __init__(
        self,
        link: DbLink,
        settings: PoolSettings,
        wall: Callable[[], dt.datetime],
        mono: Callable[[], float],
        stopping: Callable[[], bool],
        synced: DatabaseWall | None = None,
    ) -> None:
        """``synced``: the master's wall clock, set to the server's by each run's reading of it."""
        self._link = link
        self._synced = synced
        self._interval = settings.maintenance_interval
        self._retention = settings.retention
        self._lease = settings.lease
        # One machine (SQLite): a master whose pid lives here is alive, however old its heartbeat
        # (it waited for another connection's write lock): its claims are left to it.
        self._spare = _alive_here if one_host(settings.dsn) else None
        self._wall = wall
        self._mono = mono
        self._stopping = stopping
        self._next = 0.0

    def next_due(self) -> float:
        return math.inf if self._link.down or self._stopping() else self._next

    def run(self, mono: float) -> None:
        self._next = mono + self._interval
        backend = self._link.backend
        now = self._wall()
        try:
            # The lease is measured on the database's clock, which every master's heartbeat is stamped
            # with: a host whose clock is off is not declared dead for it, nor kept alive.
            synced = self._synced
            before = synced.host() if synced else now
            server_now = self._link.call(DbKind.OTHER, backend.server_now)
            if synced:
                synced.sync(server_now, before, synced.host())
            for host, released in self._link.call(
                DbKind.WRITE, backend.recover_expired, server_now - dt.timedelta(seconds=self._lease),
                self._spare,
            ):
                log.warning(
                    "master %s missed its heartbeat for longer than the lease (%gs): released its %d claimed jobs",
                    host, self._lease, released,
                )
            self._link.call(DbKind.WRITE, backend.release_orphans)  # owners gone without releasing
            malformed = self._link.call(DbKind.WRITE, backend.fail_malformed, now)
            if malformed:
                log.warning("failed %d pending jobs with a priority that is not one of 10..50", malformed)
        except DatabaseError:
            return
        self._purge()

    def _purge(self) -> None:
        """Delete the done jobs older than the retention, chunk by chunk, for up to PURGE_BUDGET."""
        cutoff = self._wall() - dt.timedelta(seconds=self._retention)
        started = self._mono()
        purged = 0
        behind = False
        try:
            while True:
                count = self._link.call(
                    DbKind.WRITE, self._link.backend.purge, cutoff, limit=PURGE_CHUNK, max_scan=PURGE_SCAN
                )
                purged += count
                if count < PURGE_CHUNK:
                    break
                if self._mono() - started >= PURGE_BUDGET:
                    behind = True
                    self._next = min(self._next, self._mono() + PURGE_PAUSE)
                    break
        except DatabaseError:
            pass
        if purged:
            log.info(
                "purged %d done jobs older than %gs%s", purged, self._retention,
                f" (more left: going on in {PURGE_PAUSE:g}s)" if behind else "",
            )


def _alive_here(host: str, pid: int, machine: str) -> bool:
    return bool(machine) and machine == pidfile.machine_identity() and pidfile.pid_alive(pid)


class PeriodicTasks:
    """Enqueue each registered periodic task once per period across the cluster (a lease in the
    database decides who), trying PERIODIC_CHECKS times per period."""

    def __init__(
        self,
        link: DbLink,
        registry: tasks.Registry,
        maintenance_interval: float,
        wall: Callable[[], dt.datetime],
        stopping: Callable[[], bool],
    ) -> None:
        self._link = link
        self._registry = registry
        self._maintenance_interval = maintenance_interval
        self._wall = wall
        self._stopping = stopping
        self._due = {entry.name: 0.0 for entry in registry.periodic_tasks()}

    def next_due(self) -> float:
        if not self._due or self._link.down or self._stopping():
            return math.inf
        return min(self._due.values())

    def run(self, mono: float) -> None:
        entries = {entry.name: entry for entry in self._registry.periodic_tasks()}
        for name in [name for name, at in self._due.items() if mono >= at]:
            entry = entries.get(name)
            if entry is None:
                del self._due[name]
                continue
            now = self._wall()
            try:
                # The lease moves and the job is queued in one transaction: a crash in between
                # leaves the slot due for the next master, never skipped.
                job_id = self._link.call(DbKind.WRITE, self._link.backend.run_periodic, entry, now)
            except DatabaseError:
                return
            if job_id is not None:
                log.info("periodic task %s enqueued as job %d (%s)", name, job_id, entry.schedule)
            self._due[name] = mono + self._recheck(entry, now)

    def _recheck(self, entry: tasks.PeriodicTask, now: dt.datetime) -> float:
        """Seconds until this master tries the task's lease again: a share of the period, or the
        next slot of a cron schedule; at most a maintenance interval (another master may have
        moved the lease, or the clock)."""
        if entry.seconds is not None:
            wait = entry.seconds / PERIODIC_CHECKS
        else:
            wait = max((entry.next_due(now) - now).total_seconds(), CRON_MIN_RECHECK)
        return min(wait, self._maintenance_interval)


@dataclasses.dataclass(frozen=True)
class LoadView:
    """What the Load line tells of the pool itself."""

    children: int
    busy: int
    active: int  # cluster-wide workers, as last planned
    waiting: int  # as last planned (capped counts: at least)
    allowed: int  # by the load governor


class LogLines:
    """Every LOG_INTERVAL: Friendica's "Load" and "Performance" lines, with the same numbers as
    structured fields (``extra={"fields": ...}``: keys of their own in ``--log-format json``)."""

    def __init__(
        self,
        link: DbLink,
        metrics: PoolMetrics,
        settings: PoolSettings,
        view: Callable[[], LoadView],
        wall: Callable[[], dt.datetime],
        perf: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._link = link
        self._metrics = metrics
        self._max_load = settings.max_load
        self._workers = settings.workers
        self._view = view
        self._wall = wall
        self._perf = perf
        self._next = 0.0
        self.last_stats: list[Any] = []  # the last stats() read
        self._stats_due = 0.0
        self._stats_read_at = 0.0
        self._mark: PoolMetrics | None = None  # the numbers at the last Performance line
        self._mark_at: float | None = None

    def next_due(self) -> float:
        return self._next

    def run(self, mono: float) -> None:
        self._next = mono + LOG_INTERVAL
        view = self._view()
        metrics = self._metrics
        metrics.workers = view.children
        metrics.busy_workers = view.busy
        self._load_line(mono, view)
        self._performance_line(mono)

    def _read_stats(self, mono: float) -> None:
        if self._link.down or mono < self._stats_due:
            return
        try:
            asked = self._perf()
            self.last_stats = self._link.call(DbKind.STAT, self._link.backend.stats, self._wall())
            # stats counts every pending row: a second at a million on MariaDB. Read it at most
            # once per STATS_BUDGET_FACTOR times its cost (1% of the loop), else repeat the last.
            self._stats_due = mono + (self._perf() - asked) * STATS_BUDGET_FACTOR
            self._stats_read_at = mono
        except DatabaseError:
            pass

    def _load_line(self, mono: float, view: LoadView) -> None:
        try:
            load = os.getloadavg()[0]
        except OSError:
            load = 0.0
        self._read_stats(mono)
        deferred_total = 0
        parts = [f"0:{view.children - view.busy}"]
        per_priority: dict[str, dict[str, int]] = {}
        if not self._link.down:
            for entry in self.last_stats:
                deferred_total += entry.deferred
                per_priority[Priority(entry.priority).name] = {
                    "running": entry.running, "waiting": entry.waiting, "deferred": entry.deferred,
                }
                if entry.waiting or entry.running or entry.deferred:
                    parts.append(f"{entry.priority}:{entry.running}/{entry.waiting}/{entry.deferred}")
        log.info(
            "Load: %.2f/%s - processes: %d/%d/%d (idle, priority:running/waiting/deferred: %s) - maximum: %d/%d",
            load, f"{self._max_load:g}" if self._max_load > 0 else "off",
            deferred_total, view.active, view.waiting, ", ".join(parts), view.allowed, self._workers,
            extra={"fields": {
                "event": "load", "load": round(load, 2), "max_load": self._max_load,
                "deferred": deferred_total, "active": view.active, "waiting": view.waiting,
                "idle": view.children - view.busy, "busy": view.busy, "priorities": per_priority,
                "allowed_workers": view.allowed, "max_workers": self._workers,
                "counts_age_seconds": round(mono - self._stats_read_at, 3),
            }},
        )

    def _performance_line(self, mono: float) -> None:
        metrics = self._metrics
        mark = self._mark
        elapsed = max(mono - (self._mark_at if self._mark_at is not None else mono - LOG_INTERVAL), 1e-9)
        grown = metrics.since(mark if mark is not None else PoolMetrics())
        done = grown.jobs_done
        if mark is not None or done:
            db = {kind.value: round(grown.db_seconds_by_kind[kind], 6) for kind in DbKind}
            db_total = grown.db_seconds
            rest = max(grown.cycle_seconds - db_total, 0.0)
            log.info(
                "Performance: %d jobs done (%.1f/s), %d failed, %d retried, %d deferred, %d crashed - "
                "db %.3fs (count %.3f, stat %.3f, claim %.3f, write %.3f, other %.3f), rest %.3fs, jobs %.3fs, "
                "%d claims, %d cycles (last %.2f ms)",
                done, done / elapsed,
                grown.jobs_failed, grown.jobs_retried, grown.jobs_deferred, grown.jobs_crashed,
                db_total, db["count"], db["stat"], db["claim"], db["write"], db["other"], rest,
                grown.job_seconds, grown.claims, grown.cycles, metrics.last_cycle_seconds * 1000,
                extra={"fields": {
                    "event": "performance", "interval_seconds": round(elapsed, 3), "jobs_done": done,
                    "jobs_per_second": round(done / elapsed, 3), "jobs_failed": grown.jobs_failed,
                    "jobs_retried": grown.jobs_retried, "jobs_deferred": grown.jobs_deferred,
                    "jobs_crashed": grown.jobs_crashed, "db_seconds": round(db_total, 6),
                    **{f"db_{kind}_seconds": value for kind, value in db.items()},
                    "rest_seconds": round(rest, 6), "job_seconds": round(grown.job_seconds, 6),
                    "claims": grown.claims, "cycles": grown.cycles,
                    "last_cycle_seconds": round(metrics.last_cycle_seconds, 6),
                }},
            )
        self._mark = metrics.copy()
        self._mark_at = mono


class Watchdog(threading.Thread):
    """Kills the children when the lease has run out (half a lease without a successful heartbeat).

    The loop's OutagePolicy does the same when it notices a database outage, but the loop may be
    stuck inside a database call (a server that stopped answering, a socket without a read
    timeout). After one lease another master recovers our claims and runs the jobs again: our
    children must be dead by then. This thread only reads the published ``Lease.valid_until`` and
    sends SIGKILL; the loop settles the deaths (released, no crash counted) when it gets going again.
    """

    def __init__(self, lease: Lease, children: ChildSet, interval: float, mono: Callable[[], float]) -> None:
        super().__init__(name="fastsched-watchdog", daemon=True)
        self._lease = lease
        self._children = children
        self._interval = interval
        self._mono = mono
        self._stopped = threading.Event()
        self._fired_for = -math.inf  # the valid_until it fired for: once per outage

    def stop(self) -> None:
        self._stopped.set()
        self.join(1.0)

    def run(self) -> None:
        while not self._stopped.wait(self._interval):
            valid_until = self._lease.valid_until
            if self._mono() <= valid_until or valid_until == self._fired_for or not len(self._children):
                continue
            self._fired_for = valid_until
            pids = self._children.kill_from_watchdog()
            log.error(
                "watchdog: no successful heartbeat for %.1fs (half the lease is %gs) and the master is stuck: "
                "killed the children %s so that no job runs twice once another master recovers the claims",
                self._mono() - self._lease.renewed_at, self._lease.seconds / 2, pids,
            )
