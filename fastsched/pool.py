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

import collections
import contextlib
import datetime as dt
import errno
import importlib
import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from fastsched import child as child_mod
from fastsched import core, scheduler, tasks
from fastsched.config import PoolSettings
from fastsched.errors import ConfigError, DatabaseError, DatabaseUnavailable, PoolAlreadyRunning
from fastsched.jobs import ClaimedJob, Failure, NewJob, Outcomes, Retry
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

# Exit codes of Pool.run() (the CLI maps them to its own).
EXIT_OK = 0  # stopped cleanly (or until_empty found nothing left)
EXIT_FAILURE = 1  # an unexpected error ended the pool
EXIT_CONFIG = 2  # the settings are invalid
EXIT_DB_UNREACHABLE = 3  # the final outcomes could not be written: the database stayed unreachable
EXIT_KILLED = 4  # force-stopped (second request, or the shutdown grace ran out): running jobs were killed

LOG_INTERVAL = 10.0  # seconds between the "Load" and "Performance" lines
LIMIT_CHECK_INTERVAL = 0.1  # seconds between run-time-limit checks while a limited job runs
DB_RETRY_MIN = 0.1  # seconds: first back-off after a database error
DB_RETRY_MAX = 5.0  # seconds: longest back-off between database attempts
DB_ERROR_LOG_INTERVAL = 30.0  # seconds between "still unreachable" warnings
PURGE_LIMIT = 10_000  # done rows deleted per maintenance run, so a purge never holds long locks
CHILD_EXIT_WAIT = 5.0  # seconds a child asked to exit may take before it is killed
COALESCE_SHARE = 0.5  # wait at most this share of a claim's duration for a batch about to end
COALESCE_MAX = 0.02  # seconds: the longest such wait
EWMA_WEIGHT = 0.2  # weight of the newest sample in the running averages of claim and batch times
PERIODIC_CHECKS = 4  # a periodic task's lease is tried this many times per period (at most every maintenance)
HEARTBEAT_WARN_FRACTION = 1 / 3  # warn when heartbeat_interval exceeds this share of the lease

_RANK = {int(p): rank for rank, p in enumerate(core.PRIORITIES)}
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
_UTC = dt.timezone.utc

# Why the master killed a child (None: it died on its own).
_KILL_TIMEOUT = "timeout"  # SIGTERM/SIGKILL for a run-time limit
_KILL_OPERATOR = "operator"  # second stop request or the shutdown grace ran out: release, no penalty
_KILL_DB = "db"  # the database was unreachable too long: release, no penalty
_KILL_LOST = "lost"  # another master declared us dead and took our claims: forget everything


def utcnow() -> dt.datetime:
    """The default clock: now, as a naive UTC datetime."""
    return dt.datetime.now(_UTC).replace(tzinfo=None)


class _Child:
    """A child process, its pipe, its progress slot and the batches sent to it, oldest first."""

    __slots__ = (
        "conn",
        "dispatched",
        "exiting",
        "inflight",
        "kill_at",
        "kill_reason",
        "notes",
        "pid",
        "process",
        "progress",
        "term_job",
    )

    def __init__(self, process: Any, conn: Any, progress: Any) -> None:
        self.process = process
        self.pid: int = process.pid
        self.conn = conn
        self.progress = progress
        # (seq, jobs, rank) per batch sent and not yet answered
        self.inflight: collections.deque[tuple[int, list[ClaimedJob], int]] = collections.deque()
        self.notes: list[tuple[int, int, Any]] = []  # (index, kind, payload) for the oldest batch
        self.kill_reason: str | None = None
        self.term_job: tuple[int, int] | None = None  # (seq, index) of the job over its time limit
        self.kill_at = 0.0  # monotonic time of the SIGKILL that follows the SIGTERM
        self.exiting = False  # asked to exit (None sent)
        self.dispatched = 0.0  # monotonic time the newest batch was sent


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "exit status unknown"
    if code < 0:
        try:
            return f"killed by signal {-code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"killed by signal {-code}"
    if code == child_mod.EXIT_TERMINATED:
        return "terminated by the master"
    return f"exit code {code}"


def _summary(text: str | None) -> str:
    """The last line of a traceback (the exception and its message), short enough for a log line."""
    if not text:
        return ""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip()[:300] if lines else ""


class Pool:
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
        self._fixed_delay = _validate(settings)
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

        self._children: dict[int, _Child] = {}
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
        self._watchdog: _Watchdog | None = None
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
        self._log_mark: dict[str, float] = {}
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
        when a module of ``settings.imports`` cannot be imported, DatabaseUnavailable when the database cannot be reached at start-up
        (after retrying for one lease), and other DatabaseErrors (e.g. SchemaError) as they come.
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
        if settings.heartbeat_interval > self._lease * HEARTBEAT_WARN_FRACTION:
            log.warning(
                "heartbeat_interval %gs is more than a third of the lease %gs: a slow heartbeat may get "
                "this master declared dead", settings.heartbeat_interval, self._lease,
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
        self._watchdog = _Watchdog(self)
        self._watchdog.start()
        try:
            return self._loop()
        except Exception:
            # A bug, not an outage (those are handled in the loop): stop cleanly rather than leave
            # claims for the lease to expire.
            log.exception("the pool master failed: killing its children, releasing their jobs, unregistering")
            try:
                self._stopping = True
                self._kill_children(_KILL_OPERATOR)
                self._finish(EXIT_FAILURE)
            except Exception:  # the original error is what matters; run() still cleans up
                log.exception("and the clean-up failed too")
            return EXIT_FAILURE

    def _startup(self) -> None:
        """Connect, check for a live master with our host id, recover our predecessor, register."""
        deadline = time.monotonic() + self._lease
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
                if time.monotonic() >= deadline or self._stop_requests:
                    raise
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
            if info.heartbeat >= alive_after and _pid_alive(info.pid):
                raise PoolAlreadyRunning(
                    f"a pool with host id {self._host!r} is already running against this database "
                    f"(master pid {info.pid}, last heartbeat {info.heartbeat:%Y-%m-%d %H:%M:%S} UTC); "
                    f"stop it first, or give this pool another host id"
                )
            log.info(
                "the previous master with host id %s (pid %d) is dead: recovering its claims", self._host, info.pid
            )

    # ----------------------------------------------------------------------------- children
    def _spawn(self) -> _Child:
        parent_conn, child_conn = self._mp.Pipe(duplex=True)
        progress = self._mp.RawArray("d", 3)
        progress[child_mod.PROGRESS_SEQ] = -1.0
        progress[child_mod.PROGRESS_INDEX] = -1.0
        process = self._mp.Process(
            target=child_mod.child_main,
            args=(child_conn, progress, self._stop_flag, os.getpid(), self.settings.retry_limit, self._tasks),
            name="fastsched-child",
        )
        process.start()
        child_conn.close()
        child = _Child(process, parent_conn, progress)
        self._children[child.pid] = child
        self._children_dirty = True
        self.metrics["children_started"] += 1
        return child

    def _replace(self, count: int) -> None:
        for _ in range(count):
            self._spawn()
        log.info("children now: %s", sorted(self._children))
        self._register_children()

    def _register_children(self) -> None:
        if self._db_down or self._backend is None:
            return
        try:
            self._timed(self._backend.register_children, self._host, self._pid, sorted(self._children), self._clock())
            self._children_dirty = False
        except DatabaseError as exc:
            self._db_failed(exc)

    def _busy(self) -> list[_Child]:
        return [c for c in self._children.values() if c.inflight]

    def _send(self, child: _Child, message: Any) -> bool:
        try:
            child.conn.send(message)
            return True
        except (OSError, ValueError):
            return False  # it died: its sentinel will tell

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
            mono = time.monotonic()
            self._duties(mono)
            if self._forced:
                continue

            idle_left = False
            if self._busy():
                self._wait(wait, 0.0)  # collect replies that arrived while we were busy
            hold = 0.0 if self._stopping or self._db_down else self._coalesce_hold(time.monotonic())
            if hold > 0:
                # A busy child is about to finish: claim for it and the idle ones in one transaction.
                metrics["coalesce_waits"] += 1
                self._wait(wait, hold)
                continue
            if not self._stopping and not self._db_down:
                idle_left = self._claim_and_dispatch()
                if settings.until_empty and self._is_empty():
                    log.info("until_empty: nothing is runnable or running: stopping")
                    return self._finish(EXIT_OK)
            elif self._outcomes and not self._db_down:
                self._write_outcomes()
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
        batch's expected end (an average batch time) nor longer than COALESCE_MAX.
        """
        claim_time = self._claim_ewma
        if claim_time <= 0 or self._batch_ewma <= 0:
            return 0.0
        free = busy_soon = 0
        hold = 0.0
        limit = min(claim_time * COALESCE_SHARE, COALESCE_MAX)
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
        return hold if free and busy_soon else 0.0

    def _death_reason(self, child: _Child) -> str | None:
        if child.kill_reason is not None:
            return child.kill_reason
        if self._forced:
            return _KILL_OPERATOR
        if child.pid in self._watchdog_killed:
            return _KILL_DB
        return None

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
            if child.kill_reason == _KILL_TIMEOUT:
                if child.kill_at > 0:
                    deadlines.append(child.kill_at)
            elif child.inflight and self._limits.get(child.inflight[0][1][0].priority) is not None:
                deadlines.append(self._next_limit_check)
        return min(deadlines) - mono

    def _wait(self, wait: Callable[..., Any], timeout: float) -> None:
        objects: list[Any] = [self._wake_r]
        if self._listener is not None:
            objects.append(self._listener)
        by_conn: dict[Any, _Child] = {}
        by_sentinel: dict[int, _Child] = {}
        for child in self._children.values():
            if child.inflight:
                by_conn[child.conn] = child
                objects.append(child.conn)
            by_sentinel[child.process.sentinel] = child
            objects.append(child.process.sentinel)
        ready = wait(objects, timeout)
        if not ready:
            return
        died: list[_Child] = []
        for obj in ready:
            if obj is self._wake_r:
                try:
                    while os.read(self._wake_r, 512):
                        pass
                except OSError:
                    pass
            elif obj is self._listener:
                self._listener.drain()
            elif obj in by_conn:
                self._receive(by_conn[obj])
            elif isinstance(obj, int) and obj in by_sentinel:
                died.append(by_sentinel[obj])
        for child in died:
            if child.pid in self._children:
                self._on_death(child, self._death_reason(child))
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
                counts = self._timed(
                    self._backend.plan_counts,
                    now,
                    n_free * settings.fetch_limit,
                    now - dt.timedelta(seconds=self._lease),
                )
            except DatabaseError as exc:
                self._db_failed(exc)
                return True
            running = list(counts.running)
            for rank in self._finished_ranks:  # their rows still read as running until our next write
                if running[rank] > 0:
                    running[rank] -= 1
            self._last_waiting = list(counts.waiting)
            self._last_running = running
            self._last_active = counts.active
            self._empty_seen = clean and not any(counts.waiting)
            wanted = core.plan(counts.waiting, running, counts.active, n_free, settings.fetch_limit)
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
        self.metrics["claims"] += 1
        took = time.perf_counter() - started
        self._claim_ewma = took if self._claim_ewma <= 0 else self._claim_ewma * (1 - EWMA_WEIGHT) + took * EWMA_WEIGHT
        for batch in batches:
            self._dispatch(children[batch.pid], batch.jobs)
        return len(batches) < n_free

    def _dispatch(self, child: _Child, jobs: list[ClaimedJob]) -> None:
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

    def _add_failure(self, failure: Failure, job: ClaimedJob) -> None:
        self._outcomes.failed.append(failure)
        self.metrics["jobs_failed"] += 1
        log.warning(
            "job %d %s (priority %d) failed: %s", job.id, job.command, job.priority, _summary(failure.error)
        )

    def _add_retry(self, retry: Retry, job: ClaimedJob, what: str) -> None:
        self._outcomes.retry.append(retry)
        delay = (retry.next_try - self._clock()).total_seconds()
        log.info(
            "job %d %s %s: retrial %d at priority %d in %.1fs%s",
            job.id, job.command, what, retry.retrial, retry.priority, max(delay, 0.0),
            f": {_summary(retry.error)}" if retry.error else "",
        )

    def _resolve(self, job: ClaimedJob, outcome: Retry | Failure, what: str) -> None:
        if isinstance(outcome, Failure):
            self._add_failure(outcome, job)
        else:
            self._add_retry(outcome, job, what)

    def _receive(self, child: _Child) -> None:
        """Read every message waiting in the child's pipe."""
        conn = child.conn
        while True:
            try:
                if not conn.poll(0):
                    return
                message = conn.recv()
            except (EOFError, OSError):
                return  # the child died, maybe mid-message: its sentinel will tell
            except Exception as exc:  # noqa: BLE001 - a garbled message: the child is broken
                log.error("child %d sent an unreadable message (%s): killing it", child.pid, exc)
                _signal(child.pid, signal.SIGKILL)
                return
            if not child.inflight or child.inflight[0][0] != message[1]:
                log.error("child %d sent a message for batch %s it was not running: ignored", child.pid, message[1])
            elif message[0] == child_mod.DONE:
                self._on_reply(child, message[2], message[3])
            else:
                child.notes.append(message[2:])

    def _on_reply(self, child: _Child, processed: int, seconds: float) -> None:
        """The child finished its oldest batch: ``processed`` jobs started, the notes say which did not succeed."""
        _, jobs, rank = child.inflight.popleft()
        self.metrics["job_seconds"] += seconds
        # The child's own timing: the master may read the reply late (it was busy in the database).
        ewma = self._batch_ewma
        self._batch_ewma = seconds if ewma <= 0 else ewma * (1 - EWMA_WEIGHT) + seconds * EWMA_WEIGHT
        notes = child.notes
        if not notes and processed == len(jobs):
            self._outcomes.done.extend([job[0] for job in jobs])
            self.metrics["jobs_done"] += processed
            self.metrics["jobs_done_by_priority"][jobs[0].priority] += processed
        else:
            child.notes = []
            self._settle(jobs, processed, notes)
        self._finished_ranks.append(rank)
        if self._stopping and not child.inflight and not child.exiting:
            child.exiting = True
            self._send(child, None)

    def _settle(self, jobs: list[ClaimedJob], ended: int, notes: list[tuple[int, int, Any]]) -> None:
        """``jobs[:ended]`` ended: each with a note as the note says, the others succeeded."""
        settings = self.settings
        metrics = self.metrics
        now = self._clock()
        noted = set()
        for index, kind, payload in notes:
            if not 0 <= index < len(jobs) or index in noted:
                continue
            job = jobs[index]
            noted.add(index)
            if kind == child_mod.DEFER:
                outcome = scheduler.after_defer(
                    job, payload, now, retry_limit=settings.retry_limit, fixed_delay=self._fixed_delay, rng=self._rng
                )
                if isinstance(outcome, Retry):
                    metrics["jobs_deferred"] += 1
                self._resolve(job, outcome, "deferred itself")
            elif kind == child_mod.FATAL:
                self._add_failure(scheduler.bad_arguments(job, str(payload)), job)
            else:
                outcome = scheduler.after_error(
                    job, str(payload), now,
                    retry_limit=settings.retry_limit, fixed_delay=self._fixed_delay, rng=self._rng,
                )
                if isinstance(outcome, Retry):
                    metrics["jobs_retried"] += 1
                self._resolve(job, outcome, "raised")
        done = [jobs[i][0] for i in range(ended) if i not in noted]
        self._outcomes.done.extend(done)
        metrics["jobs_done"] += len(done)
        if done:
            metrics["jobs_done_by_priority"][jobs[0].priority] += len(done)
        if ended < len(jobs):
            self._outcomes.released.extend([job[0] for job in jobs[ended:]])
            metrics["jobs_released"] += len(jobs) - ended

    def _on_death(self, child: _Child, reason: str | None) -> None:
        """A child is gone: settle its batches at once (nothing waits for a dead child)."""
        if reason != _KILL_LOST:
            self._receive(child)  # its last messages may be in the pipe: they count
        child.process.join(CHILD_EXIT_WAIT)
        how = _describe_exit(child.process.exitcode)
        self._children.pop(child.pid, None)
        self._children_dirty = True
        self.metrics["children_died"] += 1
        try:
            child.conn.close()
        except OSError:
            pass
        flights = list(child.inflight)
        child.inflight.clear()
        notes, child.notes = child.notes, []
        self._watchdog_killed.discard(child.pid)
        if not flights:
            if not child.exiting and reason is None:
                log.warning("child %d died while idle (%s)", child.pid, how)
            return
        if reason == _KILL_LOST:
            return  # our claims were taken over: nothing of ours to write
        seq, jobs, rank = flights[0]
        self._finished_ranks.append(rank)
        index = -1
        if int(child.progress[child_mod.PROGRESS_SEQ]) == seq:
            index = min(int(child.progress[child_mod.PROGRESS_INDEX]), len(jobs) - 1)
        released: list[int] = []
        for _, later, _ in flights[1:]:
            released.extend(job[0] for job in later)
        if index >= 0 and any(note[0] == index for note in notes):
            # The job it was on had ended (its note arrived): it died between two jobs.
            self._settle(jobs, index + 1, notes)
        else:
            self._settle(jobs, max(index, 0), notes)
            if index >= 0:
                self._running_died(child, reason, how, seq, index, jobs[index], released)
        if released:
            self._outcomes.released.extend(released)
            self.metrics["jobs_released"] += len(released)
        if reason is None and index < 0:
            log.warning("child %d died (%s) before starting its batch: its %d jobs are released", child.pid, how, len(jobs))

    def _running_died(
        self, child: _Child, reason: str | None, how: str, seq: int, index: int, job: ClaimedJob, released: list[int]
    ) -> None:
        """The job ``job`` (batch ``seq``, position ``index``) was running when its child died."""
        settings = self.settings
        now = self._clock()
        # _settle released jobs[index:]; take the running one back to decide it here.
        self._outcomes.released.remove(job[0])
        self.metrics["jobs_released"] -= 1
        if reason is None and child.term_job is None:
            self.metrics["jobs_crashed"] += 1
            log.error(
                "child %d died (%s) running job %d %s (priority %d): crash %d of %d allowed",
                child.pid, how, job.id, job.command, job.priority, job.crashes + 1, settings.crash_limit,
            )
            self._resolve(job, scheduler.after_crash(job, how, now, crash_limit=settings.crash_limit), "crashed")
        elif reason == _KILL_TIMEOUT and child.term_job == (seq, index):
            self.metrics["jobs_timed_out"] += 1
            minutes = settings.max_duration_minutes.get(job.priority, 0)
            outcome = scheduler.after_timeout(
                job, float(minutes), now, retry_limit=settings.retry_limit, fixed_delay=self._fixed_delay, rng=self._rng
            )
            self._resolve(job, outcome, "ran too long")
        else:
            released.append(job[0])  # killed by us for another reason: no penalty

    def _kill_children(self, reason: str) -> None:
        """SIGKILL every child and settle what they held, for ``reason``."""
        children = list(self._children.values())
        for child in children:
            child.kill_reason = reason
            try:
                os.kill(child.pid, signal.SIGKILL)
            except OSError:
                pass
        for child in children:
            self._on_death(child, reason)

    # ----------------------------------------------------------------------------- duties
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
                self._kill_children(_KILL_DB)
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
        self._kill_children(_KILL_LOST)
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

    def _check_limits(self, mono: float) -> None:
        for child in list(self._children.values()):
            if child.kill_reason == _KILL_TIMEOUT:
                if mono >= child.kill_at and child.kill_at > 0:
                    child.kill_at = 0.0
                    log.warning("child %d ignored SIGTERM for %gs: SIGKILL", child.pid, self.settings.kill_grace)
                    _signal(child.pid, signal.SIGKILL)
                continue
            if not child.inflight or child.kill_reason is not None:
                continue
            seq, jobs, _ = child.inflight[0]
            limit = self._limits.get(jobs[0].priority)
            if limit is None:
                continue
            progress = child.progress
            if int(progress[child_mod.PROGRESS_SEQ]) != seq:
                continue
            index = int(progress[child_mod.PROGRESS_INDEX])
            if not 0 <= index < len(jobs):
                continue
            elapsed = mono - progress[child_mod.PROGRESS_START]
            if elapsed <= limit:
                continue
            job = jobs[index]
            child.kill_reason = _KILL_TIMEOUT
            child.term_job = (seq, index)
            child.kill_at = mono + self.settings.kill_grace
            log.warning(
                "job %d %s has run %.1fs, over the %g-minute limit of priority %s: SIGTERM to child %d",
                job.id, job.command, elapsed, self.settings.max_duration_minutes.get(job.priority, 0),
                scheduler.describe_priority(job.priority), child.pid,
            )
            _signal(child.pid, signal.SIGTERM)
            if self.settings.kill_grace <= 0:
                child.kill_at = 0.0
                _signal(child.pid, signal.SIGKILL)

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
            purged = self._timed(
                backend.purge, now - dt.timedelta(seconds=self.settings.retention), limit=PURGE_LIMIT
            )
            if purged:
                log.info("purged %d done jobs older than %gs", purged, self.settings.retention)
        except DatabaseError as exc:
            self._db_failed(exc)

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
        if not self._db_down and self._backend is not None:
            try:
                for entry in self._timed(self._backend.stats, self._clock()):
                    deferred_total += entry.deferred
                    per_priority[Priority(entry.priority).name] = {
                        "running": entry.running, "waiting": entry.waiting, "deferred": entry.deferred,
                    }
                    if entry.waiting or entry.running or entry.deferred:
                        parts.append(f"{entry.priority}:{entry.running}/{entry.waiting}/{entry.deferred}")
            except DatabaseError as exc:
                self._db_failed(exc)
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

    # ----------------------------------------------------------------------------- database health
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
        self._kill_children(_KILL_OPERATOR)
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
                child.kill_reason = _KILL_OPERATOR
                _signal(child.pid, signal.SIGKILL)
            self._on_death(child, child.kill_reason or _KILL_OPERATOR)
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
            _signal(child.pid, signal.SIGKILL)
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


# --------------------------------------------------------------------------------- helpers


class _Watchdog(threading.Thread):
    """Kills the children when the master has gone half a lease without a successful heartbeat.

    The main loop does the same when it notices a database outage, but it may be stuck inside a
    database call (a server that stopped answering, a socket without a read timeout). After one
    lease another master recovers our claims and runs the jobs again: our children must be dead by
    then. This thread only reads a timestamp and sends SIGKILL; the main loop settles the deaths
    (the jobs are released, no crash is counted) when it gets going again.
    """

    def __init__(self, pool: Pool) -> None:
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
                _signal(pid, signal.SIGKILL)
            log.error(
                "watchdog: no successful heartbeat for %.1fs (half the lease is %gs) and the master is stuck: "
                "killed the children %s so that no job runs twice once another master recovers the claims",
                silent, limit, pids,
            )



def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except OSError:
        pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError as exc:
        return exc.errno != errno.ESRCH
    return True


def _validate(settings: PoolSettings) -> float | None:
    """ConfigError for settings the pool cannot run with; returns the fixed retry delay (or None)."""

    def number(name: str, minimum: float, *, strict: bool = False, integer: bool = False) -> None:
        value = getattr(settings, name)
        if isinstance(value, bool) or not isinstance(value, (int,) if integer else (int, float)):
            raise ConfigError(f"{name} must be {'an int' if integer else 'a number'}, got {value!r}")
        if math.isnan(value) or (value <= minimum if strict else value < minimum):
            raise ConfigError(f"{name} must be {'>' if strict else '>='} {minimum:g}, got {value!r}")

    number("workers", 1, integer=True)
    number("fetch_limit", 1, integer=True)
    number("retry_limit", 0, integer=True)
    number("crash_limit", 1, integer=True)
    for name in ("poll_interval", "lease", "heartbeat_interval", "maintenance_interval"):
        number(name, 0, strict=True)
    for name in ("shutdown_grace", "kill_grace", "retention", "max_load"):
        number(name, 0)
    if settings.heartbeat_interval >= settings.lease:
        raise ConfigError(
            f"heartbeat_interval ({settings.heartbeat_interval:g}s) must be shorter than the lease "
            f"({settings.lease:g}s), or the master is declared dead between two heartbeats"
        )
    for priority, minutes in dict(settings.max_duration_minutes).items():
        if priority not in _RANK:
            raise ConfigError(f"max_duration_minutes: {priority!r} is not one of the priorities 10..50")
        if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or math.isnan(minutes) or minutes < 0:
            raise ConfigError(f"max_duration_minutes[{priority}] must be a number of minutes >= 0, got {minutes!r}")
    if not isinstance(settings.host_id, str) or not settings.host_id or len(settings.host_id) > 255:
        raise ConfigError(f"host_id must be 1 to 255 characters, got {settings.host_id!r}")
    return scheduler.parse_retry_delay(settings.retry_delay)


