"""The pool master: claim batches from the database and run them in child processes keyed by pid.

One master per host id per database. It owns the database connection; its children (forked with
``multiprocessing.get_context("fork")``, each with its own pipe) never touch the database. Every
cycle costs a few statements, never one per job:

1. collect what the children reported (replies and deaths, see ``fastsched.child`` for the protocol);
2. free children = the idle ones, fewer under the load governor (``settings.max_load``);
3. ``backend.plan_counts`` -> ``core.plan``: how many jobs of each priority to claim (Friendica's
   quadratic shares, with running workers and active workers counted cluster-wide);
4. ``backend.claim(wanted, free_child_pids, ...)`` writes the pending outcomes and claims, in ONE
   transaction (or ``write_outcomes`` when nothing is wanted); the rows of batch i get pid=child i;
5. each batch goes to its child, one message;
6. wait on the children's pipes, their sentinels (death), the wake-up socket and a timeout.

Around that: a heartbeat (a master whose heartbeat is older than the lease is dead, and any
master recovers its claims), maintenance (recovery of dead masters, malformed rows, purge,
periodic tasks), run-time limits per priority, two-stage shutdown and a database outage policy
(the children are killed before anyone could recover their claims, so no job runs twice at once).

This module holds the loop, claiming and stopping. ``fastsched.children`` spawns the children and
decides what their replies, deaths and run-time limits mean; ``fastsched.pool_duties`` keeps the
master registered (start-up, heartbeat, outage policy) and does maintenance, periodic tasks and the
log lines. Pool is assembled from their mixins rather than delegating to helper objects: every cycle
reads and writes the same state, and one object keeps the hot path free of indirection.

Signals: the pool installs no handler unless ``run(install_signal_handlers=True)``; the CLI
installs its own SIGTERM/SIGINT handlers that call :meth:`Pool.request_stop` (first call: stop
claiming and let running jobs finish; second: kill them). ``request_stop`` is safe to call from a
signal handler.

Time: ``clock`` (a callable returning now as a naive UTC datetime) stamps everything written to
the database; intervals and run-time limits are measured on the host's monotonic clock, which is
what the children see too. ``sleep`` is used for the database retry back-off when the pool has
nothing else to wait for (start-up, final writes).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import random
import signal
import time
from collections.abc import Callable
from typing import Any

from fastsched import core, scheduler, tasks
from fastsched.children import CHILD_EXIT_WAIT, EWMA_WEIGHT, KILL_OPERATOR, KILL_TIMEOUT, Child, signal_pid
from fastsched.config import PoolSettings, validate
from fastsched.errors import ConfigError, DatabaseError
from fastsched.exitcodes import EXIT_CONFIG, EXIT_DB_UNREACHABLE, EXIT_FAILURE, EXIT_KILLED, EXIT_OK
from fastsched.jobs import ClaimedJob, Outcomes
from fastsched.pool_duties import DB_RETRY_MAX, DB_RETRY_MIN, DB_TIME_KINDS, DutiesMixin, Watchdog
from fastsched.priority import Priority

log = logging.getLogger(__name__)

__all__ = [
    "EXIT_CONFIG",
    "EXIT_DB_UNREACHABLE",
    "EXIT_FAILURE",
    "EXIT_KILLED",
    "EXIT_OK",
    "Pool",
]


COALESCE_SHARE = 0.5  # wait at most this share of a claim's duration for a batch about to end
COALESCE_MAX = 0.02  # seconds: the longest such wait

_RANK = {int(p): rank for rank, p in enumerate(core.PRIORITIES)}
_UTC = dt.timezone.utc


def utcnow() -> dt.datetime:
    """The default clock: now, as a naive UTC datetime."""
    return dt.datetime.now(_UTC).replace(tzinfo=None)


class Pool(DutiesMixin):
    """The master process of a pool: ``Pool(settings).run()`` returns an exit code (EXIT_*).

    ``metrics`` is a dict of counters and gauges, updated as the pool runs: jobs_done, jobs_failed,
    jobs_retried, jobs_deferred, jobs_released, jobs_crashed, jobs_timed_out, jobs_claimed, batches,
    cycles, claims, db_seconds, db_errors, job_seconds, last_cycle_seconds, children_started,
    children_died, workers, busy_workers, db_up, started (epoch seconds); db_<kind>_seconds per
    kind of DB_TIME_KINDS (they sum to db_seconds), cycle_seconds (the cycles' total, waits excluded),
    and jobs_done_by_priority ({priority: jobs done}).

    ``on_cycle``: None, or a callable ``(cycle_seconds, db_seconds)`` called after every cycle of
    the loop with its duration and the database time spent in it (the HTTP server's histograms). It
    runs in the loop: it must be quick and must not raise.
    """

    def __init__(
        self,
        settings: PoolSettings,
        *,
        backend: Any = None,
        clock: Callable[[], dt.datetime] | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.settings = settings
        validate(settings)
        self._fixed_delay = scheduler.parse_retry_delay(settings.retry_delay)
        self._backend = backend
        self._own_backend = backend is None
        self._clock: Callable[[], dt.datetime] = clock or utcnow
        self._sleep: Callable[[float], None] = sleep or time.sleep
        self._host = settings.host_id
        self._lease = float(settings.lease)
        self._rng = random.Random()
        self._mp = multiprocessing.get_context("fork")
        self._limits: dict[int, float | None] = {
            int(p): scheduler.run_limit_seconds(settings.max_duration_minutes, int(p)) for p in Priority
        }
        self._tasks = tasks.default_registry.as_dict()

        self._children: dict[int, Child] = {}
        self._outcomes = Outcomes()
        self._finished_ranks: list[int] = []  # ranks of batches finished since the last write
        self._seq = 0
        self._pid = 0
        self._stop_requests = 0
        self._stopping = False
        self._stop_deadline = 0.0
        self._forced = False
        self._wake_r = -1
        self._wake_w = -1
        self._stop_flag: Any = None
        self._listener: Any = None
        self._woken = False  # a wake-up arrived since the last cycle: a job was added on this host
        # plan_counts, kept between reads: a busy master reads it again only after a poll interval,
        # when a wake-up names no priority, or when its copy says nothing is left to claim (see
        # _plan_inputs). Waiting counts go down by what we claim and up by the jobs added on this
        # host (the wake-ups name their priority); running = other masters' (as last read) + ours.
        self._counts_at = -math.inf  # monotonic time of the last read
        self._counts_stale = True
        self._cached_waiting = [0] * len(core.PRIORITIES)
        self._others_running = [0] * len(core.PRIORITIES)
        self._cached_active = 0
        self._children_dirty = False  # the process table does not list our children yet
        self._resync = False  # a claim failed mid-way: our idle children may hold claims we do not know
        # database health
        self._db_down = False
        self._db_down_since = 0.0
        self._db_retry_at = 0.0
        self._db_backoff = DB_RETRY_MIN
        self._db_warned_at = 0.0
        self._hb_ok_at = 0.0  # monotonic time of the last successful heartbeat
        self._db_killed = False  # children were killed for this outage already
        self._watchdog: Watchdog | None = None
        self._watchdog_killed: set[int] = set()  # children the watchdog thread killed
        # schedules (monotonic)
        self._next_heartbeat = 0.0
        self._next_maintenance = 0.0
        self._next_limit_check = 0.0
        self._next_log = 0.0
        self._periodic_due: dict[str, float] = {}
        self._empty_seen = False  # the last plan, taken with no outcomes pending, found nothing waiting
        self._last_waiting: list[int] = [0] * len(core.PRIORITIES)
        self._last_running: list[int] = [0] * len(core.PRIORITIES)
        self._last_active = 0
        self._allowed = settings.workers
        self._claim_ewma = 0.0  # seconds a claim transaction takes, on average
        self._batch_ewma = 0.0  # seconds a child takes to run a batch, on average
        self._holding_since = 0.0  # monotonic start of the coalescing waits before the next claim
        self._log_mark: dict[str, float] = {}
        self._stats_cache: list[Any] = []
        self._stats_due = 0.0
        self._stats_read_at = 0.0
        self.metrics: dict[str, Any] = {
            "jobs_done": 0,
            "jobs_failed": 0,
            "jobs_retried": 0,
            "jobs_deferred": 0,
            "jobs_released": 0,
            "jobs_crashed": 0,
            "jobs_timed_out": 0,
            "jobs_claimed": 0,
            "batches": 0,
            "cycles": 0,
            "claims": 0,
            "coalesce_waits": 0,
            "db_seconds": 0.0,
            "db_errors": 0,
            "job_seconds": 0.0,
            "last_cycle_seconds": 0.0,
            "children_started": 0,
            "children_died": 0,
            "workers": 0,
            "busy_workers": 0,
            "db_up": False,
            "started": 0.0,
            "cycle_seconds": 0.0,
            **{f"db_{kind}_seconds": 0.0 for kind in DB_TIME_KINDS},
            "jobs_done_by_priority": {int(p): 0 for p in Priority},
        }
        self.on_cycle: Callable[[float, float], None] | None = None

    # ----------------------------------------------------------------------------- public API
    def request_stop(self) -> None:
        """Ask the pool to stop. Safe in a signal handler.

        First call: stop claiming, let running batches finish (up to ``shutdown_grace``), release
        what was claimed but not started, unregister, and ``run()`` returns EXIT_OK. Second call:
        SIGKILL the children at once, release their jobs (no crash is counted), return EXIT_KILLED.
        """
        self._stop_requests += 1
        if self._stop_requests >= 2:
            self._forced = True
            for pid in list(self._children):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        if self._stop_flag is not None:
            self._stop_flag[0] = 1
        if self._wake_w >= 0:
            try:
                os.write(self._wake_w, b"s")
            except OSError:
                pass

    def run(self, install_signal_handlers: bool = False) -> int:
        """Run until stopped (or, with ``settings.until_empty``, until nothing is left to run).

        Returns EXIT_OK, EXIT_KILLED, EXIT_DB_UNREACHABLE, or EXIT_FAILURE after an unexpected error in
        the loop (logged with its traceback; the children are killed and their jobs released).
        Raises PoolAlreadyRunning when a live master with this host id is registered, ConfigError
        when a module of ``settings.imports`` cannot be imported, DatabaseUnavailable when the database
        cannot be reached at start-up (after retrying for ``pool_duties.STARTUP_RETRY`` seconds, or the
        lease if shorter), and other DatabaseErrors (e.g. SchemaError) as they come.
        ``install_signal_handlers``: make SIGTERM and SIGINT call :meth:`request_stop` while it runs
        (the CLI installs its own and leaves this False).
        """
        previous: dict[int, Any] = {}
        if install_signal_handlers:

            def handler(signum: int, frame: Any) -> None:
                self.request_stop()

            for stop_signal in (signal.SIGTERM, signal.SIGINT):
                previous[stop_signal] = signal.signal(stop_signal, handler)
        try:
            return self._run()
        finally:
            try:
                self._cleanup()
            finally:
                for number, old in previous.items():
                    signal.signal(number, old)

    # ----------------------------------------------------------------------------- start-up
    def _run(self) -> int:
        settings = self.settings
        self._pid = os.getpid()
        self.metrics["started"] = time.time()
        log.info(
            "pool config: dsn=%s host_id=%s workers=%d fetch_limit=%d lease=%gs heartbeat=%gs poll=%gs "
            "max_load=%g retry_limit=%d retry_delay=%s crash_limit=%d max_duration_minutes=%s until_empty=%s "
            "imports=%s",
            settings.dsn, self._host, settings.workers, settings.fetch_limit, settings.lease,
            settings.heartbeat_interval, settings.poll_interval, settings.max_load, settings.retry_limit,
            settings.retry_delay, settings.crash_limit, dict(settings.max_duration_minutes),
            settings.until_empty, ",".join(settings.imports) or "-",
        )
        for name in settings.imports:
            try:
                importlib.import_module(name)
            except Exception as exc:
                raise ConfigError(f"cannot import task module {name!r}: {type(exc).__name__}: {exc}") from exc
        if not self._tasks:
            log.warning("no task is registered: every job will fail as 'unknown command' (see settings.imports)")
        for entry in tasks.default_registry.periodic_tasks():
            self._periodic_due[entry.name] = 0.0

        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._stop_flag = self._mp.RawArray("i", 1)
        if self._stop_requests:
            self._stop_flag[0] = 1
        # Children first: forked before the database connection exists, they inherit no socket of it.
        for _ in range(settings.workers):
            self._spawn()
        self._startup()
        from fastsched import wakeup

        try:
            self._listener = wakeup.Listener(settings.dsn.identity, self._host)
        except OSError as exc:
            log.warning("no wake-up socket (%s): new jobs are found by polling every %gs", exc, settings.poll_interval)
        log.info(
            "pool started: master pid %d, children %s, %d commands registered",
            self._pid, sorted(self._children), len(self._tasks),
        )
        self._watchdog = Watchdog(self)
        self._watchdog.start()
        try:
            return self._loop()
        except Exception:
            # A bug, not an outage (those are handled in the loop): stop cleanly rather than leave
            # claims for the lease to expire.
            log.exception("the pool master failed: killing its children, releasing their jobs, unregistering")
            try:
                self._stopping = True
                self._kill_children(KILL_OPERATOR)
                self._finish(EXIT_FAILURE)
            except Exception:  # the original error is what matters; run() still cleans up
                log.exception("and the clean-up failed too")
            return EXIT_FAILURE

    # ----------------------------------------------------------------------------- the loop
    def _loop(self) -> int:
        settings = self.settings
        metrics = self.metrics
        poll = settings.poll_interval
        wait = multiprocessing.connection.wait
        perf = time.perf_counter
        while True:
            started = perf()
            db_before = metrics["db_seconds"]
            metrics["cycles"] += 1
            if self._forced:
                return self._force_stop()
            if self._stop_requests and not self._stopping:
                self._begin_stop()
            # A producer on this host just added a job: claim before the duties that are due (a
            # heartbeat, maintenance, the log lines' stats: each a few ms of database time that would
            # sit between the add and the job's start), and do them right after. Only while the
            # database answers: after an outage the heartbeat must say so before anything is claimed.
            claim_first = self._woken and not self._stopping and not self._db_down
            self._woken = False
            if not claim_first:
                self._duties(time.monotonic())
                if self._forced:
                    continue

            idle_left = False
            if self._busy():
                self._wait(wait, 0.0)  # collect replies that arrived while we were busy
            hold = 0.0 if self._stopping or self._db_down else self._coalesce_hold(time.monotonic())
            if hold > 0:
                if claim_first:  # a stream of wake-ups and holds must not starve the heartbeat
                    self._duties(time.monotonic())
                # A busy child is about to finish: claim for it and the idle ones in one transaction.
                metrics["coalesce_waits"] += 1
                self._wait(wait, hold)
                continue
            if not self._stopping and not self._db_down:
                self._holding_since = 0.0
                idle_left = self._claim_and_dispatch()
                if settings.until_empty and self._is_empty():
                    log.info("until_empty: nothing is runnable or running: stopping")
                    return self._finish(EXIT_OK)
            elif self._outcomes and not self._db_down:
                self._write_outcomes()
            if claim_first:
                self._duties(time.monotonic())
                if self._forced:
                    continue
            if self._stopping and not self._busy():
                return self._finish(EXIT_OK)
            metrics["last_cycle_seconds"] = cycle = perf() - started
            metrics["cycle_seconds"] += cycle
            if self.on_cycle is not None:
                self.on_cycle(cycle, metrics["db_seconds"] - db_before)

            # Wait for a reply, a death, a wake-up, a stop request or the next duty.
            timeout = self._next_deadline(time.monotonic())
            if self._outcomes and not self._db_down:
                timeout = 0.0
            elif idle_left or self._db_down or self._stopping:
                timeout = min(timeout, poll)
            self._wait(wait, max(timeout, 0.0))

    def _coalesce_hold(self, mono: float) -> float:
        """How long to wait for a nearly finished batch before claiming (0: claim now).

        Every claim transaction costs a commit and a plan_counts whatever its size, so when a busy
        child's batch should end well within the time a claim takes (fast jobs in big batches),
        the master waits for it and claims for both children at once. It never waits past a
        batch's expected end (an average batch time) nor longer than COALESCE_MAX, and the waits
        before one claim add up to no more than that either: with many children on short jobs one
        is always about to finish, and a chain of waits could keep the free ones idle.
        """
        claim_time = self._claim_ewma
        if claim_time <= 0 or self._batch_ewma <= 0:
            return 0.0
        free = busy_soon = 0
        hold = 0.0
        limit = min(claim_time * COALESCE_SHARE, COALESCE_MAX)
        if self._holding_since and mono - self._holding_since >= limit:
            return 0.0
        for child in self._children.values():
            if not child.inflight:
                if not child.exiting and child.kill_reason is None:
                    free += 1
                continue
            if len(child.inflight) == 1:
                remaining = child.dispatched + self._batch_ewma - mono
                if 0 < remaining <= limit:
                    busy_soon += 1
                    hold = max(hold, remaining)
        if not (free and busy_soon):
            self._holding_since = 0.0
            return 0.0
        if not self._holding_since:
            self._holding_since = mono
        return hold


    def _next_deadline(self, mono: float) -> float:
        # Only the duties that _duties would run now: a stale one would make the wait spin.
        deadlines = [self._next_log]
        if self._db_down:
            deadlines.append(self._db_retry_at)
        else:
            deadlines.append(self._next_heartbeat)
            if not self._stopping:
                deadlines.append(self._next_maintenance)
                if self._periodic_due:
                    deadlines.append(min(self._periodic_due.values()))
        if self._stopping:
            deadlines.append(self._stop_deadline)
        for child in self._children.values():
            if child.kill_reason == KILL_TIMEOUT:
                if child.kill_at > 0:
                    deadlines.append(child.kill_at)
            elif child.inflight and self._limits.get(child.inflight[0][1][0].priority) is not None:
                deadlines.append(self._next_limit_check)
        return min(deadlines) - mono

    def _wait(self, wait: Callable[..., Any], timeout: float) -> None:
        objects: list[Any] = [self._wake_r]
        if self._listener is not None:
            objects.append(self._listener)
        by_conn: dict[Any, Child] = {}
        by_sentinel: dict[int, Child] = {}
        for child in self._children.values():
            if child.inflight:
                by_conn[child.conn] = child
                objects.append(child.conn)
            by_sentinel[child.process.sentinel] = child
            objects.append(child.process.sentinel)
        ready = wait(objects, timeout)
        if not ready:
            return
        died: list[Child] = []
        for obj in ready:
            if obj is self._wake_r:
                try:
                    while os.read(self._wake_r, 512):
                        pass
                except OSError:
                    pass
            elif obj is self._listener:
                self._listener.drain()
                self._woken = True
                self._count_added(self._listener.take_added())
            elif obj in by_conn:
                self._receive(by_conn[obj])
            elif isinstance(obj, int) and obj in by_sentinel:
                died.append(by_sentinel[obj])
        for child in died:
            if child.pid in self._children:
                self._on_death(child, self._death_reason(child))
                self._counts_stale = True  # its unstarted jobs go back to waiting
        if died and not self._stopping and not self._forced:
            self._replace(self.settings.workers - len(self._children))

    # ----------------------------------------------------------------------------- claiming
    def _claim_and_dispatch(self) -> bool:
        """One claim (with the pending outcomes). Returns True if idle children are left."""
        settings = self.settings
        children = self._children
        free = [c for c in children.values() if not c.inflight and not c.exiting and c.kill_reason is None]
        n_free = len(free)
        if n_free and settings.max_load > 0:
            busy = len(children) - n_free
            try:
                load = max(os.getloadavg()[:2])
            except OSError:
                load = 0.0
            self._allowed = core.allowed_workers(len(children), load, settings.max_load, True)
            n_free = max(0, min(n_free, self._allowed - busy))
            free = free[:n_free]
        if self._resync and not self._busy():
            self._do_resync()
            return bool(free)
        wanted: list[int] | None = None
        started = time.perf_counter()
        now = self._clock()
        # until_empty trusts only counts taken with nothing left to write (a crash retry is runnable at once).
        clean = not self._outcomes
        self._empty_seen = False
        if n_free:
            try:
                waiting, running, active, fresh = self._plan_inputs(now, n_free)
            except DatabaseError as exc:
                self._db_failed(exc)
                return True
            self._last_waiting = list(waiting)
            self._last_running = running
            self._last_active = active
            # Claims of other masters count too, a dead one's included: they come back after its lease.
            self._empty_seen = fresh and clean and not any(waiting) and not any(running)
            wanted = core.plan(waiting, running, active, n_free, settings.fetch_limit)
            if not any(wanted):
                wanted = None
        if wanted is None:
            if self._outcomes:
                self._write_outcomes(now)
            return bool(n_free)
        outcomes = self._outcomes
        self._outcomes = Outcomes()
        try:
            batches = self._timed(
                self._backend.claim,
                wanted,
                [c.pid for c in free],
                self._host,
                settings.fetch_limit,
                now,
                outcomes if outcomes else None,
            )
        except DatabaseError as exc:
            self._merge_outcomes(outcomes)
            self._resync = True  # the claim may have committed before the error reached us
            self._db_failed(exc)
            return True
        self._finished_ranks.clear()
        self._count_claimed(wanted, batches)
        self.metrics["claims"] += 1
        took = time.perf_counter() - started
        self._claim_ewma = took if self._claim_ewma <= 0 else self._claim_ewma * (1 - EWMA_WEIGHT) + took * EWMA_WEIGHT
        for batch in batches:
            self._dispatch(children[batch.pid], batch.jobs)
        return len(batches) < n_free

    def _plan_inputs(self, now: dt.datetime, n_free: int) -> tuple[list[int], list[int], int, bool]:
        """(waiting, running, active, read now) for core.plan: read from the database when the
        copy is older than a poll interval, was made stale, or has nothing left to claim (the
        queue may have filled meanwhile: only the database knows); else the copy. Other hosts'
        adds are seen within a poll interval, as an idle master sees them; this host's at once."""
        mono = time.monotonic()
        own = self._own_running()
        if (
            self._counts_stale
            or mono - self._counts_at >= self.settings.poll_interval
            or not any(self._cached_waiting)
        ):
            counts = self._timed(
                self._backend.plan_counts,
                now,
                n_free * self.settings.fetch_limit,
                now - dt.timedelta(seconds=self._lease),
            )
            running = list(counts.running)
            for rank in self._finished_ranks:  # their rows still read as running until our next write
                if running[rank] > 0:
                    running[rank] -= 1
            self._counts_at, self._counts_stale = mono, False
            self._cached_waiting = list(counts.waiting)
            self._others_running = [max(0, total - ours) for total, ours in zip(running, own)]
            self._cached_active = counts.active
            return list(counts.waiting), running, counts.active, True
        running = [others + ours for others, ours in zip(self._others_running, own)]
        return list(self._cached_waiting), running, self._cached_active, False

    def _own_running(self) -> list[int]:
        """Our busy children per rank: one each, as plan_counts counts distinct (host, pid)."""
        own = [0] * len(core.PRIORITIES)
        for child in self._children.values():
            if child.inflight:
                own[child.inflight[0][2]] += 1
        return own

    def _count_added(self, priorities: list[int] | None) -> None:
        if priorities is None:
            self._counts_stale = True
            return
        for priority in priorities:
            rank = _RANK.get(priority)
            if rank is None:
                self._counts_stale = True
            else:
                self._cached_waiting[rank] += 1

    def _count_claimed(self, wanted: list[int], batches: list[Any]) -> None:
        claimed = [0] * len(core.PRIORITIES)
        for batch in batches:
            for job in batch.jobs:
                rank = _RANK.get(job.priority)
                if rank is not None:
                    claimed[rank] += 1
        cached = self._cached_waiting
        for rank, (want, got) in enumerate(zip(wanted, claimed)):
            # Fewer than planned: the copy was high (other masters took them, a duplicate add was
            # counted): nothing is known to be left.
            cached[rank] = 0 if got < want else max(0, cached[rank] - got)

    def _dispatch(self, child: Child, jobs: list[ClaimedJob]) -> None:
        metrics = self.metrics
        metrics["jobs_claimed"] += len(jobs)
        known = self._tasks
        if len(jobs) == 1:
            unknown = jobs[0].command not in known
        else:
            unknown = any(command not in known for command in {job[1] for job in jobs})
        if unknown:
            keep = []
            for job in jobs:
                if job.command in known:
                    keep.append(job)
                else:
                    self._add_failure(scheduler.unknown_command(job), job)
            jobs = keep
            if not jobs:
                return
        self._seq += 1
        seq = self._seq
        child.dispatched = time.monotonic()
        child.inflight.append((seq, jobs, _RANK.get(jobs[0].priority, 2)))
        metrics["batches"] += 1
        self._send(child, (seq, [job[:5] for job in jobs]))

    def _is_empty(self) -> bool:
        return (
            self._empty_seen
            and not self._outcomes
            and not self._busy()
            and not self._resync
            and not self._db_down
            and len([c for c in self._children.values() if c.kill_reason is None]) > 0
        )

    def _do_resync(self) -> None:
        """After a claim whose result was lost: no child is busy, so every claim of our host is void."""
        if self._outcomes and not self._write_outcomes():
            return
        try:
            released = self._timed(self._backend.recover_host, self._host)
            now = self._clock()
            self._timed(self._backend.register_master, self._host, self._pid, self.settings.workers, now)
            self._timed(self._backend.register_children, self._host, self._pid, sorted(self._children), now)
        except DatabaseError as exc:
            self._db_failed(exc)
            return
        self._resync = False
        self._counts_stale = True
        self._children_dirty = False
        if released:
            log.warning("released %d jobs claimed by a claim whose answer was lost to a database error", released)

    # ----------------------------------------------------------------------------- outcomes
    def _write_outcomes(self, now: dt.datetime | None = None) -> bool:
        outcomes = self._outcomes
        if not outcomes:
            return True
        self._outcomes = Outcomes()
        try:
            self._timed(self._backend.write_outcomes, self._host, now or self._clock(), outcomes)
        except DatabaseError as exc:
            self._merge_outcomes(outcomes)
            self._db_failed(exc)
            return False
        self._finished_ranks.clear()
        return True

    def _merge_outcomes(self, older: Outcomes) -> None:
        """Put outcomes that could not be written back in front of any gathered since."""
        newer = self._outcomes
        older.done.extend(newer.done)
        older.retry.extend(newer.retry)
        older.failed.extend(newer.failed)
        older.released.extend(newer.released)
        self._outcomes = older

    # ----------------------------------------------------------------------------- stopping
    def _begin_stop(self) -> None:
        self._stopping = True
        self._stop_deadline = time.monotonic() + self.settings.shutdown_grace
        if self._stop_flag is not None:
            self._stop_flag[0] = 1
        busy = 0
        for child in self._children.values():
            if child.inflight:
                busy += 1
            elif not child.exiting:
                child.exiting = True
                self._send(child, None)
        log.info(
            "stopping: no new claims; %d busy children finish their current job (up to %gs), unstarted jobs are "
            "released", busy, self.settings.shutdown_grace,
        )

    def _force_stop(self) -> int:
        log.warning("force stop: killing %d children; their jobs are released", len(self._children))
        self._stopping = True
        self._kill_children(KILL_OPERATOR)
        return self._finish(EXIT_KILLED)

    def _finish(self, code: int) -> int:
        """Let the children go, write what is pending, unregister. Returns the exit code."""
        self._stopping = True
        for child in self._children.values():
            if not child.inflight and not child.exiting:
                child.exiting = True
                self._send(child, None)
        deadline = time.monotonic() + CHILD_EXIT_WAIT
        for child in list(self._children.values()):
            child.process.join(max(deadline - time.monotonic(), 0.0))
            if child.process.exitcode is None:
                child.kill_reason = KILL_OPERATOR
                signal_pid(child.pid, signal.SIGKILL)
            self._on_death(child, child.kill_reason or KILL_OPERATOR)
        # The last outcomes (done, released) must reach the database, or the jobs re-run after the lease.
        deadline = time.monotonic() + max(self._lease / 2, DB_RETRY_MIN)
        delay = DB_RETRY_MIN
        while True:
            try:
                if self._outcomes:
                    outcomes, self._outcomes = self._outcomes, Outcomes()
                    try:
                        self._timed(self._backend.write_outcomes, self._host, self._clock(), outcomes)
                    except DatabaseError:
                        self._merge_outcomes(outcomes)
                        raise
                self._timed(self._backend.unregister, self._host, self._pid)
                break
            except DatabaseError as exc:
                if time.monotonic() >= deadline:
                    log.error(
                        "could not write the last %d outcomes or unregister: %s; other masters will release "
                        "this master's claims after the lease", len(self._outcomes), exc,
                    )
                    return EXIT_DB_UNREACHABLE
                self._sleep(delay)
                delay = min(delay * 2, DB_RETRY_MAX)
        m = self.metrics
        log.info(
            "pool stopped: %d jobs done, %d failed, %d retried, %d deferred, %d released, %d crashed",
            m["jobs_done"], m["jobs_failed"], m["jobs_retried"], m["jobs_deferred"], m["jobs_released"],
            m["jobs_crashed"],
        )
        return code

    def _cleanup(self) -> None:
        """Whatever happened, leave no child behind (a live child would hold claims nobody tracks)."""
        if self._watchdog is not None:
            self._watchdog.stop()
            self._watchdog = None
        for child in list(self._children.values()):
            signal_pid(child.pid, signal.SIGKILL)
            child.process.join(CHILD_EXIT_WAIT)
            try:
                child.conn.close()
            except OSError:
                pass
        self._children.clear()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._wake_r = self._wake_w = -1
        if self._own_backend and self._backend is not None:
            with contextlib.suppress(Exception):
                self._backend.close()


