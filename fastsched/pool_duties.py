"""The pool master's standing with the database, and the work it does between claims.

Start-up (connect, refuse a second master with our host id, recover our predecessor, register),
the heartbeat and the outage policy (no claims while the database is down; the children are killed
at half the lease, by the loop or, when the loop is stuck in a database call, by the watchdog
thread), maintenance (recovery of dead masters, malformed rows, purge), periodic tasks, and
Friendica's "Load" and "Performance" lines with the database time they account.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from fastsched import pidfile, tasks
from fastsched.children import KILL_DB, KILL_LOST, ChildrenMixin, signal_pid
from fastsched.errors import DatabaseError, DatabaseUnavailable, PoolAlreadyRunning
from fastsched.jobs import NewJob, Outcomes
from fastsched.priority import Priority

log = logging.getLogger("fastsched.pool")

LOG_INTERVAL = 10.0  # seconds between the "Load" and "Performance" lines
STATS_BUDGET_FACTOR = 100  # the Load line's counts are read again after 100x the time the last read took
LIMIT_CHECK_INTERVAL = 0.1  # seconds between run-time-limit checks while a limited job runs
DB_RETRY_MIN = 0.1  # seconds: first back-off after a database error
DB_RETRY_MAX = 5.0  # seconds: longest back-off between database attempts
# Start-up gives up sooner than a running pool: a wrong DSN or a database that is not up yet should
# be told at once, while a running pool rides out an outage (its children are killed at half the lease).
STARTUP_RETRY = 5.0  # seconds start-up retries an unreachable database before it gives up
DB_ERROR_LOG_INTERVAL = 30.0  # seconds between "still unreachable" warnings
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

# Database time by kind, after Friendica's "Performance" line (fastsched has no lock: the claim
# transaction takes the place of Friendica's lock wait). Backend methods not named here are "other".
DB_TIME_KINDS = ("count", "stat", "claim", "write", "other")
_DB_KIND = {
    "plan_counts": "count",
    "stats": "stat",
    "claim": "claim",
    **dict.fromkeys(
        ("write_outcomes", "heartbeat", "register_master", "register_children", "unregister", "recover_host",
         "recover_expired", "fail_malformed", "fail_jobs", "purge", "take_periodic", "add_many"),
        "write",
    ),
}
_DB_KEY = {name: f"db_{kind}_seconds" for name, kind in _DB_KIND.items()}  # metrics key per backend method


class DutiesMixin(ChildrenMixin):
    """The part of :class:`fastsched.pool.Pool` that keeps it registered, healthy and tidy."""

    # Set by Pool.__init__; declared for the type checker.
    _lease: float
    _sleep: Callable[[float], None]
    _stop_requests: int
    _stop_deadline: float
    _resync: bool
    _db_down_since: float
    _db_retry_at: float
    _db_backoff: float
    _db_warned_at: float
    _hb_ok_at: float
    _db_killed: bool
    _next_heartbeat: float
    _stats_cache: list[Any]  # the last stats() the Load line read
    _stats_due: float
    _stats_read_at: float
    _next_maintenance: float
    _next_limit_check: float
    _next_log: float
    _periodic_due: dict[str, float]
    _last_waiting: list[int]
    _last_active: int
    _allowed: int
    _log_mark: dict[str, float]

    def _startup(self) -> None:
        """Connect, check for a live master with our host id, recover our predecessor, register."""
        deadline = time.monotonic() + min(self._lease, STARTUP_RETRY)
        delay = DB_RETRY_MIN
        while True:
            try:
                if self._backend is None:
                    from fastsched.backends import open_backend

                    self._backend = open_backend(self.settings.dsn)
                self._timed(self._backend.init_schema)
                now = self._clock()
                self._refuse_if_running(now)
                released = self._timed(self._backend.recover_host, self._host)
                if released:
                    log.warning(
                        "released %d jobs claimed by a previous master with host id %s (it died)", released, self._host
                    )
                self._timed(self._backend.register_master, self._host, self._pid, self.settings.workers, now)
                self._timed(self._backend.register_children, self._host, self._pid, sorted(self._children), now)
                break
            except DatabaseUnavailable as exc:
                left = deadline - time.monotonic()
                if left <= 0 or self._stop_requests:
                    raise
                delay = min(delay, left)
                log.warning("database unreachable at start-up (%s); retrying in %.1fs", exc, delay)
                self._sleep(delay)
                delay = min(delay * 2, DB_RETRY_MAX)
        self.metrics["db_up"] = True
        self._hb_ok_at = time.monotonic()
        self._next_heartbeat = self._hb_ok_at + self.settings.heartbeat_interval

    def _refuse_if_running(self, now: dt.datetime) -> None:
        alive_after = now - dt.timedelta(seconds=self._lease)
        for info in self._timed(self._backend.processes):
            if info.role != "master" or info.host != self._host or info.pid == self._pid:
                continue
            if info.heartbeat >= alive_after and pidfile.pid_alive(info.pid):
                raise PoolAlreadyRunning(
                    f"a pool with host id {self._host!r} is already running against this database "
                    f"(master pid {info.pid}, last heartbeat {info.heartbeat:%Y-%m-%d %H:%M:%S} UTC); "
                    f"stop it first, or give this pool another host id"
                )
            log.info(
                "the previous master with host id %s (pid %d) is dead: recovering its claims", self._host, info.pid
            )

    def _duties(self, mono: float) -> None:
        settings = self.settings
        if self._db_down:
            if mono >= self._db_retry_at:
                self._heartbeat(mono)
            if (
                self._db_down
                and not self._db_killed
                and mono - self._hb_ok_at > self._lease / 2
                and self._children
            ):
                self._db_killed = True
                busy = len(self._busy())
                log.error(
                    "database unreachable for %.1fs (more than half the lease of %gs): killing the children "
                    "(%d busy) before another master recovers their claims; their jobs will be released",
                    mono - self._hb_ok_at, self._lease, busy,
                )
                self._kill_children(KILL_DB)
                if not self._stopping:
                    self._replace(settings.workers - len(self._children))
            if self._db_down and mono - self._db_warned_at >= DB_ERROR_LOG_INTERVAL:
                self._db_warned_at = mono
                log.warning("database still unreachable after %.0fs; retrying", mono - self._db_down_since)
        elif mono >= self._next_heartbeat:
            self._heartbeat(mono)
        if self._stopping and mono >= self._stop_deadline and self._busy():
            log.warning(
                "shutdown grace of %gs is over: killing %d busy children and releasing their jobs",
                settings.shutdown_grace, len(self._busy()),
            )
            self._forced = True
            return
        if mono >= self._next_limit_check:
            self._next_limit_check = mono + LIMIT_CHECK_INTERVAL
            self._check_limits(mono)
        if not self._db_down and not self._stopping:
            if mono >= self._next_maintenance:
                self._next_maintenance = mono + settings.maintenance_interval
                self._maintenance()
            if self._periodic_due and not self._db_down:
                self._periodic(mono)
        if mono >= self._next_log:
            self._next_log = mono + LOG_INTERVAL
            self._log_lines(mono)

    def _heartbeat(self, mono: float) -> None:
        self._next_heartbeat = mono + self.settings.heartbeat_interval
        try:
            alive = self._timed(self._backend.heartbeat, self._host, self._pid, self.settings.workers, self._clock())
        except DatabaseError as exc:
            self._db_failed(exc)
            return
        if self._db_down:
            log.warning("database reachable again after %.1fs", mono - self._db_down_since)
        self._db_down = False
        self._db_killed = False
        self._db_backoff = DB_RETRY_MIN
        self.metrics["db_up"] = True
        self._hb_ok_at = mono
        if not alive:
            self._lost()
            return
        if self._children_dirty:
            self._register_children()

    def _lost(self) -> None:
        """Another master declared us dead and released our claims: start over, holding nothing."""
        log.error(
            "this master (host id %s, pid %d) was declared dead by another master (heartbeat older than the "
            "lease of %gs) and its claims were released: killing the children at once, discarding %d "
            "outcomes, registering again", self._host, self._pid, self._lease, len(self._outcomes),
        )
        self._kill_children(KILL_LOST)
        self._outcomes = Outcomes()
        self._finished_ranks.clear()
        if not self._stopping:
            for _ in range(self.settings.workers - len(self._children)):
                self._spawn()
        try:
            now = self._clock()
            released = self._timed(self._backend.recover_host, self._host)  # what we claimed meanwhile
            if released:
                log.warning("released %d jobs claimed after we were declared dead", released)
            self._timed(self._backend.register_master, self._host, self._pid, self.settings.workers, now)
            self._timed(self._backend.register_children, self._host, self._pid, sorted(self._children), now)
            self._children_dirty = False
            self._resync = False
        except DatabaseError as exc:
            self._resync = True
            self._db_failed(exc)

    def _maintenance(self) -> None:
        backend = self._backend
        now = self._clock()
        try:
            for host, released in self._timed(backend.recover_expired, now - dt.timedelta(seconds=self._lease)):
                log.warning(
                    "master %s missed its heartbeat for longer than the lease (%gs): released its %d claimed jobs",
                    host, self._lease, released,
                )
            malformed = self._timed(backend.fail_malformed, now)
            if malformed:
                log.warning("failed %d pending jobs with a priority that is not one of 10..50", malformed)
        except DatabaseError as exc:
            self._db_failed(exc)
            return
        self._purge()

    def _purge(self) -> None:
        """Delete the done jobs older than the retention, chunk by chunk, for up to PURGE_BUDGET."""
        cutoff = self._clock() - dt.timedelta(seconds=self.settings.retention)
        started = time.monotonic()
        purged = 0
        behind = False
        try:
            while True:
                count = self._timed(self._backend.purge, cutoff, limit=PURGE_CHUNK, max_scan=PURGE_SCAN)
                purged += count
                if count < PURGE_CHUNK:
                    break
                if time.monotonic() - started >= PURGE_BUDGET:
                    behind = True
                    self._next_maintenance = min(self._next_maintenance, time.monotonic() + PURGE_PAUSE)
                    break
        except DatabaseError as exc:
            self._db_failed(exc)
        if purged:
            log.info(
                "purged %d done jobs older than %gs%s", purged, self.settings.retention,
                f" (more left: going on in {PURGE_PAUSE:g}s)" if behind else "",
            )

    def _periodic(self, mono: float) -> None:
        from fastsched.queue import dedup_hash

        due = [name for name, at in self._periodic_due.items() if mono >= at]
        if not due:
            return
        entries = {entry.name: entry for entry in tasks.default_registry.periodic_tasks()}
        for name in due:
            entry = entries.get(name)
            if entry is None:
                del self._periodic_due[name]
                continue
            now = self._clock()
            try:
                taken = self._timed(self._backend.take_periodic, name, now, dt.timedelta(seconds=entry.seconds))
                if taken:
                    job = NewJob(name, "[]", int(entry.priority), now, now, dedup_hash(name, "[]"), False)
                    (job_id,) = self._timed(self._backend.add_many, [job])
                    log.info("periodic task %s enqueued as job %d (every %gs)", name, job_id, entry.seconds)
            except DatabaseError as exc:
                self._db_failed(exc)
                return
            # Whoever took it, the next period starts no earlier than one period from now.
            self._periodic_due[name] = mono + min(entry.seconds / PERIODIC_CHECKS, self.settings.maintenance_interval)

    def _log_lines(self, mono: float) -> None:
        """Friendica's "Load" and "Performance" lines, with the same numbers as structured fields
        (``extra={"fields": ...}``: keys of their own in ``--log-format json``)."""
        metrics = self.metrics
        busy = len(self._busy())
        metrics["workers"] = len(self._children)
        metrics["busy_workers"] = busy
        try:
            load = os.getloadavg()[0]
        except OSError:
            load = 0.0
        deferred_total = 0
        parts = [f"0:{len(self._children) - busy}"]
        per_priority: dict[str, dict[str, int]] = {}
        if not self._db_down and self._backend is not None and mono >= self._stats_due:
            try:
                asked = time.perf_counter()
                self._stats_cache = self._timed(self._backend.stats, self._clock())
                # stats counts every pending row: a second at a million on MariaDB. Read it at most
                # once per STATS_BUDGET_FACTOR times its cost (1% of the loop), else repeat the last.
                self._stats_due = mono + (time.perf_counter() - asked) * STATS_BUDGET_FACTOR
                self._stats_read_at = mono
            except DatabaseError as exc:
                self._db_failed(exc)
        if not self._db_down:
            for entry in self._stats_cache:
                deferred_total += entry.deferred
                per_priority[Priority(entry.priority).name] = {
                    "running": entry.running, "waiting": entry.waiting, "deferred": entry.deferred,
                }
                if entry.waiting or entry.running or entry.deferred:
                    parts.append(f"{entry.priority}:{entry.running}/{entry.waiting}/{entry.deferred}")
        log.info(
            "Load: %.2f/%s - processes: %d/%d/%d (idle, priority:running/waiting/deferred: %s) - maximum: %d/%d",
            load, f"{self.settings.max_load:g}" if self.settings.max_load > 0 else "off",
            deferred_total, self._last_active, sum(self._last_waiting), ", ".join(parts),
            self._allowed, self.settings.workers,
            extra={"fields": {
                "event": "load", "load": round(load, 2), "max_load": self.settings.max_load,
                "deferred": deferred_total, "active": self._last_active, "waiting": sum(self._last_waiting),
                "idle": len(self._children) - busy, "busy": busy, "priorities": per_priority,
                "allowed_workers": self._allowed, "max_workers": self.settings.workers,
                "counts_age_seconds": round(mono - self._stats_read_at, 3),
            }},
        )
        mark = self._log_mark
        elapsed = max(mono - mark.get("mono", mono - LOG_INTERVAL), 1e-9)
        done = metrics["jobs_done"] - mark.get("jobs_done", 0)
        if mark or done:

            def delta(key: str) -> float:
                return float(metrics[key] - mark.get(key, 0))

            db = {kind: round(delta(f"db_{kind}_seconds"), 6) for kind in DB_TIME_KINDS}
            db_total = delta("db_seconds")
            rest = max(delta("cycle_seconds") - db_total, 0.0)
            log.info(
                "Performance: %d jobs done (%.1f/s), %d failed, %d retried, %d deferred, %d crashed - "
                "db %.3fs (count %.3f, stat %.3f, claim %.3f, write %.3f, other %.3f), rest %.3fs, jobs %.3fs, "
                "%d claims, %d cycles (last %.2f ms)",
                done, done / elapsed,
                delta("jobs_failed"), delta("jobs_retried"), delta("jobs_deferred"), delta("jobs_crashed"),
                db_total, db["count"], db["stat"], db["claim"], db["write"], db["other"], rest,
                delta("job_seconds"), delta("claims"), delta("cycles"), metrics["last_cycle_seconds"] * 1000,
                extra={"fields": {
                    "event": "performance", "interval_seconds": round(elapsed, 3), "jobs_done": done,
                    "jobs_per_second": round(done / elapsed, 3), "jobs_failed": int(delta("jobs_failed")),
                    "jobs_retried": int(delta("jobs_retried")), "jobs_deferred": int(delta("jobs_deferred")),
                    "jobs_crashed": int(delta("jobs_crashed")), "db_seconds": round(db_total, 6),
                    **{f"db_{kind}_seconds": value for kind, value in db.items()},
                    "rest_seconds": round(rest, 6), "job_seconds": round(delta("job_seconds"), 6),
                    "claims": int(delta("claims")), "cycles": int(delta("cycles")),
                    "last_cycle_seconds": round(metrics["last_cycle_seconds"], 6),
                }},
            )
        self._log_mark = {key: value for key, value in metrics.items() if isinstance(value, (int, float))}
        self._log_mark["mono"] = mono

    def _timed(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            elapsed = time.perf_counter() - started
            self.metrics["db_seconds"] += elapsed
            self.metrics[_DB_KEY.get(getattr(function, "__name__", ""), "db_other_seconds")] += elapsed

    def _db_failed(self, exc: DatabaseError) -> None:
        mono = time.monotonic()
        self.metrics["db_errors"] += 1
        self.metrics["db_up"] = False
        if not self._db_down:
            self._db_down = True
            self._db_down_since = mono
            self._db_warned_at = mono
            self._db_backoff = DB_RETRY_MIN
            log.error(
                "database error: %s: no claims until it answers again (children keep running for up to half "
                "the lease, %gs)", exc, self._lease / 2,
            )
        else:
            self._db_backoff = min(self._db_backoff * 2, DB_RETRY_MAX, max(self._lease / 4, DB_RETRY_MIN))
        self._db_retry_at = mono + self._db_backoff
        if isinstance(exc, DatabaseUnavailable) and self._backend is not None:
            with contextlib.suppress(Exception):  # closing a broken connection may fail too
                self._backend.close()


class Watchdog(threading.Thread):
    """Kills the children when the master has gone half a lease without a successful heartbeat.

    The main loop does the same when it notices a database outage, but it may be stuck inside a
    database call (a server that stopped answering, a socket without a read timeout). After one
    lease another master recovers our claims and runs the jobs again: our children must be dead by
    then. This thread only reads a timestamp and sends SIGKILL; the main loop settles the deaths
    (the jobs are released, no crash is counted) when it gets going again.
    """

    def __init__(self, pool: DutiesMixin) -> None:
        super().__init__(name="fastsched-watchdog", daemon=True)
        self._pool = pool
        self._stopped = threading.Event()
        self._fired_for = -1.0  # the heartbeat time it fired for: once per outage

    def stop(self) -> None:
        self._stopped.set()
        self.join(1.0)

    def run(self) -> None:
        pool = self._pool
        limit = pool._lease / 2
        interval = max(min(pool.settings.heartbeat_interval, limit / 4), 0.01)
        while not self._stopped.wait(interval):
            last_ok = pool._hb_ok_at
            silent = time.monotonic() - last_ok
            if silent <= limit or last_ok == self._fired_for or not pool._children:
                continue
            self._fired_for = last_ok
            pids = list(pool._children)
            pool._watchdog_killed.update(pids)
            for pid in pids:
                signal_pid(pid, signal.SIGKILL)
            log.error(
                "watchdog: no successful heartbeat for %.1fs (half the lease is %gs) and the master is stuck: "
                "killed the children %s so that no job runs twice once another master recovers the claims",
                silent, limit, pids,
            )
