"""The pool master: claim batches from the database and run them in child processes keyed by pid.

One master per host id per database. It owns the database connection; its children (forked with
``multiprocessing.get_context("fork")``, each with its own pipe) never touch the database. Every
cycle costs a few statements, never one per job:

1. the duties that are due run (``fastsched.master.duties``: a heartbeat, the outage policy,
   maintenance, periodic tasks, run-time limits, the operators' requests, the log lines);
2. what the children reported (``ChildSet`` events) is settled into outcomes by the
   ``OutcomeRecorder`` and buffered by the ``Completer``;
3. the claim step (``Dispatcher``): the free children (fewer under the load governor) and the busy
   ones about to finish, the ``CountsCache`` -> ``core.plan_sized``, one claim by the ``Claimer``
   with the Completer's outcomes in the same transaction or beside it; batch i goes to child i;
4. wait on the children's pipes, their sentinels (death), the wake-up socket and the earliest
   ``next_due`` of the duties and the claim step.

A job added on this host (its wake-up datagram) is claimed before the due duties run. A master
whose heartbeat is older than the lease is dead, and any master recovers its claims: the children
are killed before anyone could (the outage policy and the ``Watchdog`` thread, reading the one
published ``Lease``). Stopping is two-stage. This module only wires the parts of
``fastsched.master`` together and runs the loop.

Signals: the pool installs no handler unless ``run(install_signal_handlers=True)``; the CLI
installs its own SIGTERM/SIGINT handlers that call :meth:`Pool.request_stop` (first call: stop
claiming and let running jobs finish; second: kill them). ``request_stop`` is safe to call from a
signal handler.

Time: ``clock`` (a callable returning now as a naive UTC datetime) stamps everything written to
the database; intervals, run-time limits and the lease are measured on ``monotonic`` (the host's
monotonic clock in a real pool: the children stamp their progress with it). ``sleep`` is used for
the database retry back-off when the pool has nothing else to wait for (start-up, final writes).
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import importlib
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from typing import Any

from fastsched import retry_policy, tasks
from fastsched.backends import one_host
from fastsched.backends.contracts import MasterStore
from fastsched.batching import RunTimes
from fastsched.clock import Clock, DatabaseWall, utcnow
from fastsched.config import PoolSettings, validate
from fastsched.errors import ConfigError, DatabaseError
from fastsched.exitcodes import EXIT_CONFIG, EXIT_DB_UNREACHABLE, EXIT_FAILURE, EXIT_KILLED, EXIT_OK
from fastsched.master.childset import (
    KILL_DB,
    KILL_LOST,
    KILL_OPERATOR,
    BatchEnded,
    ChildGone,
    ChildSet,
    Event,
)
from fastsched.master.claimer import Claimer
from fastsched.master.coalesce import Coalescer
from fastsched.master.completer import Completer
from fastsched.master.counts import CountsCache
from fastsched.master.dblink import DB_RETRY_MIN, DbLink, Lease
from fastsched.master.dispatch import Dispatcher
from fastsched.master.duties import (
    Duty,
    Heartbeat,
    LoadView,
    LogLines,
    Maintenance,
    OutagePolicy,
    PeriodicTasks,
    RunTimeLimits,
    ShutdownGrace,
    Watchdog,
    next_deadline,
    run_due,
)
from fastsched.master.metrics import DbKind, PoolMetrics
from fastsched.master.recorder import OutcomeRecorder
from fastsched.master.registration import Registration
from fastsched.master.requests import OperatorRequests
from fastsched.master.settle import Ended, SettlePolicy
from fastsched.master.waiting import Wakeups
from fastsched.priority import Priority
from fastsched.validation import queue_set

log = logging.getLogger(__name__)

__all__ = [
    "EXIT_CONFIG",
    "EXIT_DB_UNREACHABLE",
    "EXIT_FAILURE",
    "EXIT_KILLED",
    "EXIT_OK",
    "Pool",
    "utcnow",
]


@dataclasses.dataclass(frozen=True)
class _Started:
    """The parts made at start-up, once the database has answered and this instance is registered."""

    registration: Registration
    completer: Completer
    claimer: Claimer
    recorder: OutcomeRecorder
    dispatcher: Dispatcher


class Pool:
    """The master process of a pool: ``Pool(settings).run()`` returns an exit code (EXIT_*).

    ``metrics`` (a :class:`~fastsched.master.metrics.PoolMetrics`) holds counters and gauges,
    updated as the pool runs.

    ``on_cycle``: None, or a callable ``(cycle_seconds, db_seconds)`` called after every cycle of
    the loop with its duration and the database time spent in it (the HTTP server's histograms). It
    runs in the loop: it must be quick and must not raise.
    """

    def __init__(
        self,
        settings: PoolSettings,
        *,
        backend: MasterStore | None = None,
        clock: Callable[[], dt.datetime] | None = None,
        sleep: Callable[[float], None] | None = None,
        monotonic: Callable[[], float] | None = None,
    ) -> None:
        self.settings = settings
        validate(settings)
        fixed_delay = retry_policy.parse_retry_delay(settings.retry_delay)
        self._one_host = one_host(settings.dsn)
        # Every time the master writes or compares with next_try is the database's (DatabaseWall).
        self._db_wall = DatabaseWall(clock or utcnow, enabled=not self._one_host)
        self._clock = Clock(wall=self._db_wall, mono=monotonic or time.monotonic, sleep=sleep or time.sleep)
        self._host = settings.host_id
        self._lease_seconds = float(settings.lease)
        self._tasks = tasks.default_registry.as_dict()
        # The queues this pool claims from, each once and sorted, as the process table lists them
        # and plan_counts matches masters of the same set; () = every queue.
        self._queues = queue_set(settings.queues)
        self.metrics = PoolMetrics()
        self.on_cycle: Callable[[float, float], None] | None = None
        self._policy = SettlePolicy(
            retry_limit=settings.retry_limit,
            crash_limit=settings.crash_limit,
            fixed_delay=fixed_delay,
            max_duration_minutes=dict(settings.max_duration_minutes),
            tasks=tasks.default_registry.policies(),
        )
        context = multiprocessing.get_context("fork")
        fence = context.RawArray("d", 1)  # 0.0: no job may start before the first registration
        self._children = ChildSet(
            context,
            tasks=self._tasks,
            retry_limit=settings.retry_limit,
            limits={
                int(p): retry_policy.run_limit_seconds(settings.max_duration_minutes, int(p)) for p in Priority
            },
            max_duration_minutes=dict(settings.max_duration_minutes),
            timeouts=self._policy.timeout,
            max_jobs=settings.max_jobs_per_child,
            max_memory_mb=settings.max_memory_per_child,
            kill_grace=settings.kill_grace,
            mono=self._clock.mono,
            # A cancelled job gets no longer to stop than a stop of the pool would give it.
            cancel_grace=min(settings.kill_grace, settings.shutdown_grace),
            # The children's clock is the host's; one machine (SQLite) needs no fence (see _lease_expired).
            fence=fence if monotonic is None and not self._one_host else None,
        )
        self._own_backend = backend is None
        self._link = DbLink(
            (lambda: backend) if backend is not None else self._open_backend,
            self.metrics, self._lease_seconds, self._clock.mono,
        )
        self._lease = Lease(self._lease_seconds, fence)
        self._counts = CountsCache(settings.poll_interval, settings.fetch_limit)
        self._coalescer = Coalescer()
        # Batches sized by time: each command's run time, from the children's replies.
        self._run_times = RunTimes()
        self._started: _Started | None = None  # made at start-up (see _start)
        self._duties: list[Duty] = []
        self._grace = ShutdownGrace(self._children.busy, settings.shutdown_grace, self._grace_over)
        self._watchdog: Watchdog | None = None
        self._stop_requests = 0
        self._stopping = False
        self._forced = False
        self._woken = False  # a wake-up arrived since the last cycle: a job was added on this host
        self._wakeups = Wakeups()

    def _open_backend(self) -> MasterStore:
        from fastsched.backends import open_backend

        return open_backend(self.settings.dsn)

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
            self._children.kill_now()
        self._children.raise_stop_flag()
        self._wakeups.poke()

    def run(self, install_signal_handlers: bool = False) -> int:
        """Run until stopped (or, with ``settings.until_empty``, until nothing is left to run).

        Returns EXIT_OK, EXIT_KILLED, EXIT_DB_UNREACHABLE, or EXIT_FAILURE after an unexpected error in
        the loop (logged with its traceback; the children are killed and their jobs released).
        Raises PoolAlreadyRunning when a live master with this host id is registered, ConfigError
        when a module of ``settings.imports`` cannot be imported, DatabaseUnavailable when the database
        cannot be reached at start-up (after retrying for ``registration.STARTUP_RETRY`` seconds, or
        the lease if shorter), and other DatabaseErrors (e.g. SchemaError) as they come.
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
        clock = self._clock
        self.metrics.started = time.time()
        log.info(
            "pool config: dsn=%s host_id=%s workers=%d fetch_limit=%d batch_budget=%gms lease=%gs heartbeat=%gs "
            "poll=%gs "
            "max_load=%g retry_limit=%d retry_delay=%s crash_limit=%d max_duration_minutes=%s until_empty=%s "
            "imports=%s queues=%s max_jobs_per_child=%d max_memory_per_child=%gMB",
            settings.dsn, self._host, settings.workers, settings.fetch_limit, settings.batch_budget_ms, settings.lease,
            settings.heartbeat_interval, settings.poll_interval, settings.max_load, settings.retry_limit,
            settings.retry_delay, settings.crash_limit, dict(settings.max_duration_minutes),
            settings.until_empty, ",".join(settings.imports) or "-", ",".join(self._queues) or "all",
            settings.max_jobs_per_child, settings.max_memory_per_child,
        )
        for name in settings.imports:
            try:
                importlib.import_module(name)
            except Exception as exc:
                raise ConfigError(f"cannot import task module {name!r}: {type(exc).__name__}: {exc}") from exc
        if not self._tasks:
            log.warning("no task is registered: every job claimed is handed back as 'unknown command' (give --import)")

        # Children first: forked before the database connection exists, they inherit no socket of it.
        self._children.spawn(settings.workers)
        registration = self._start()
        heartbeat = Heartbeat(self._link, self._lease, registration, settings.heartbeat_interval, self._lost)
        heartbeat.started(clock.mono())
        stopping = self._is_stopping
        self._duties = [
            heartbeat,
            OutagePolicy(self._link, self._lease, self._children, self._lease_expired),
            self._grace,
            RunTimeLimits(self._children),
            OperatorRequests(self._link, self._children, registration.owner, settings.heartbeat_interval, stopping),
            Maintenance(self._link, settings, clock.wall, clock.mono, stopping, synced=self._db_wall),
            PeriodicTasks(self._link, tasks.default_registry, settings.maintenance_interval, clock.wall, stopping),
            LogLines(self._link, self.metrics, settings, self._load_view, clock.wall),
        ]
        self._wakeups.open(settings.dsn.identity, self._host, settings.poll_interval)
        log.info(
            "pool started: master pid %d, children %s, %d commands registered",
            registration.pid, self._children.pids(), len(self._tasks),
        )
        interval = max(min(settings.heartbeat_interval, self._lease_seconds / 8), 0.01)
        if not self._one_host:  # see _lease_expired
            self._watchdog = Watchdog(self._lease, self._children, interval, clock.mono)
            self._watchdog.start()
        try:
            return self._loop()
        except Exception:
            # A bug, not an outage (those are handled in the loop): stop cleanly rather than leave
            # claims for the lease to expire.
            log.exception("the pool master failed: killing its children, releasing their jobs, unregistering")
            try:
                self._stopping = True
                self._on_events(self._children.kill_all(KILL_OPERATOR))
                self._finish(EXIT_FAILURE)
            except Exception:  # the original error is what matters; run() still cleans up
                log.exception("and the clean-up failed too")
            return EXIT_FAILURE

    def _start(self) -> Registration:
        """Register this instance (retrying an unreachable database for a while) and make the parts
        that need it: claims and outcomes are this instance's (``registration.owner``), not the host
        id's, and the backend says how many connections it may use at once."""
        settings, clock = self.settings, self._clock
        registration = Registration(
            self._link, self._children, host=self._host, pid=os.getpid(), workers=settings.workers,
            lease=self._lease_seconds, wall=clock.wall, mono=clock.mono, sleep=clock.sleep,
            queues=self._queues,
        )
        registration.start(give_up=lambda: bool(self._stop_requests))
        self.metrics.db_up = True
        self._sync_wall()
        backend = self._link.backend
        lanes = int(getattr(backend, "concurrent_connections", 1))
        completer = Completer(
            self._link, registration.owner, clock.wall, backend.open_sibling() if lanes > 1 else None
        )
        claimer = Claimer(self._link, registration.owner, lanes, self._queues)
        recorder = OutcomeRecorder(self._policy, completer, self.metrics, clock.wall)
        dispatcher = Dispatcher(
            link=self._link, lease=self._lease, children=self._children, completer=completer, claimer=claimer,
            registration=registration, recorder=recorder, counts=self._counts, coalescer=self._coalescer,
            run_times=self._run_times, metrics=self.metrics, clock=clock, stopping=self._is_stopping,
            known=self._tasks, fetch_limit=settings.fetch_limit, batch_budget=settings.batch_budget_ms / 1000.0,
            poll_interval=settings.poll_interval, max_load=settings.max_load, queues=self._queues,
        )
        self._started = _Started(registration, completer, claimer, recorder, dispatcher)
        return registration

    def _sync_wall(self) -> None:
        """Read the server's clock once before the first claim (maintenance reads it again later)."""
        wall = self._db_wall
        if not wall.enabled:
            return
        before = wall.host()
        try:
            server_now = self._link.call(DbKind.OTHER, self._link.backend.server_now)
        except DatabaseError:
            return  # the next maintenance run reads it
        wall.sync(server_now, before, wall.host())
        if wall.offset:
            log.warning(
                "this host's clock is %.3f s %s the database server's: the master uses the server's",
                abs(wall.offset.total_seconds()), "behind" if wall.offset > dt.timedelta(0) else "ahead of",
            )

    @property
    def _parts(self) -> _Started:
        assert self._started is not None, "the pool has not started"
        return self._started

    def _is_stopping(self) -> bool:
        return self._stopping

    # ----------------------------------------------------------------------------- the loop
    def _loop(self) -> int:
        metrics = self.metrics
        mono = self._clock.mono
        perf = time.perf_counter
        duties = self._duties
        dispatcher = self._parts.dispatcher
        # The claim step runs every cycle; it is due again when it says, as each duty is.
        deadlines: list[Duty] = [*duties, dispatcher]
        until_empty = self.settings.until_empty
        while True:
            started = perf()
            db_before = metrics.db_seconds
            metrics.cycles += 1
            if self._forced:
                return self._force_stop()
            if self._stop_requests and not self._stopping:
                self._begin_stop()
            # A producer on this host just added a job: claim before the duties that are due (a
            # heartbeat, maintenance, the log lines' stats: each a few ms of database time that would
            # sit between the add and the job's start), and do them right after. Only while the
            # database answers: after an outage the heartbeat must say so before anything is claimed.
            claim_first = self._woken and not self._stopping and not self._link.down
            self._woken = False
            if not claim_first:
                run_due(duties, mono())
                if self._forced:
                    continue
            if self._children.busy():
                self._wait(0.0)  # collect replies that arrived while we were busy
            dispatcher.run(mono())
            if until_empty and self._is_empty():
                log.info("until_empty: nothing is runnable or running: stopping")
                return self._finish(EXIT_OK)
            if claim_first:
                run_due(duties, mono())
                if self._forced:
                    continue
            if self._stopping and not self._children.busy():
                return self._finish(EXIT_OK)
            metrics.last_cycle_seconds = cycle = perf() - started
            metrics.cycle_seconds += cycle
            if self.on_cycle is not None:
                self.on_cycle(cycle, metrics.db_seconds - db_before)
            # Wait for a reply, a death, a wake-up, a stop request, the next duty or claim.
            self._wait(max(next_deadline(deadlines) - mono(), 0.0))

    def _wait(self, timeout: float) -> None:
        woken = self._wakeups.wait(self._children.wait_objects(), timeout)
        if woken.added:
            self._woken = True
            if self._queues:
                # A wake-up names the job's priority, not its queue: the copy cannot tell whether it
                # is one of ours, so the counts are read again (for the jobs of our queues only).
                self._counts.mark_stale()
            else:
                self._counts.added(woken.priorities)
        if woken.ready:
            self._on_events(self._children.handle(woken.ready))

    # ----------------------------------------------------------------------------- what the children report
    def _on_events(self, events: list[Event]) -> None:
        gone = False
        for event in events:
            if isinstance(event, BatchEnded):
                if event.report.ended is Ended.REPLIED:
                    self.metrics.job_seconds += event.seconds
                    self._coalescer.batch_ran(event.seconds)
                    self._run_times.observe_all(event.timings)
                self._parts.recorder.batch_ended(event)
            elif isinstance(event, ChildGone):
                gone = True
                if not event.retired:  # a child replaced for a per-child limit did not die
                    self.metrics.children_died += 1
                self._counts.mark_stale()  # its unstarted jobs go back to waiting
        if gone and not self._stopping and not self._forced:
            self._replace()

    def _replace(self) -> None:
        """Spawn children up to the configured number and list them in the process table."""
        missing = self.settings.workers - len(self._children)
        if missing <= 0:
            return
        self._children.spawn(missing)
        log.info("children now: %s", self._children.pids())
        if not self._link.down and self._started is not None:
            with contextlib.suppress(DatabaseError):  # listed again at the next heartbeat
                self._started.registration.sync_children()

    def _load_view(self) -> LoadView:
        plan = self._parts.dispatcher.last_plan
        return LoadView(
            children=len(self._children), busy=self._children.busy(), active=plan.active,
            waiting=sum(plan.waiting), allowed=self._parts.dispatcher.allowed,
        )

    def _is_empty(self) -> bool:
        return (
            self._parts.dispatcher.found_nothing()
            and not self._parts.completer
            and not self._children.busy()
            and not self._link.down
            and self._children.usable() > 0
        )

    # ----------------------------------------------------------------------------- the database's verdicts
    def _lease_expired(self, mono: float) -> None:
        """Half a lease without a heartbeat: kill the children before another master recovers their claims.

        Not on one machine (SQLite): a database that does not answer there is a file another
        connection holds locked (or cannot be written at all); no other master can recover our
        claims meanwhile, and one that could later sees our pid alive and leaves them to us."""
        if self._one_host:
            log.warning(
                "the database has not answered for %.1fs (more than half the lease of %gs): busy or locked; "
                "the children keep running (no other master takes the claims of a live master on SQLite)",
                mono - self._lease.renewed_at, self._lease_seconds,
            )
            return
        log.error(
            "database unreachable for %.1fs (more than half the lease of %gs): killing the children "
            "(%d busy) before another master recovers their claims; their jobs will be released",
            mono - self._lease.renewed_at, self._lease_seconds, self._children.busy(),
        )
        self._on_events(self._children.kill_all(KILL_DB))

    def _lost(self) -> None:
        """Another master declared us dead and released our claims: start over, holding nothing.
        The batches that ended before we learned it count: their replies are read first, and their
        outcomes written to the jobs no master has claimed since (a completed job is not run again
        for a completion that was late); the rest is forgotten."""
        parts = self._parts
        self._on_events(self._children.collect())
        late = parts.completer.take()
        log.error(
            "this master (host id %s, pid %d) was declared dead by another master (heartbeat older than the "
            "lease of %gs) and its claims were released: killing the children at once, registering again; "
            "%d outcomes not written yet", self._host, parts.registration.pid, self._lease_seconds, len(late),
        )
        self._on_events(self._children.kill_all(KILL_LOST))
        parts.completer.take()  # what the killed children held is released already
        try:
            if late:
                written = parts.completer.write_late(late)
                log.warning(
                    "wrote %d of those %d outcomes (the other jobs were claimed again since, or have no outcome "
                    "to write)", written, len(late),
                )
            released = parts.registration.start_over()  # what we claimed meanwhile
        except DatabaseError:
            parts.dispatcher.claims_unknown()
            return
        parts.dispatcher.claims_known()
        if released:
            log.warning("released %d jobs claimed after we were declared dead", released)

    def _grace_over(self) -> None:
        self._forced = True

    # ----------------------------------------------------------------------------- stopping
    def _begin_stop(self) -> None:
        self._stopping = True
        self._grace.begin(self._clock.mono())
        busy = self._children.busy()
        self._children.exit_when_idle()
        log.info(
            "stopping: no new claims; %d busy children finish their current job (up to %gs), unstarted jobs are "
            "released", busy, self.settings.shutdown_grace,
        )

    def _force_stop(self) -> int:
        log.warning("force stop: killing %d children; their jobs are released", len(self._children))
        self._stopping = True
        self._on_events(self._children.kill_all(KILL_OPERATOR))
        return self._finish(EXIT_KILLED)

    def _finish(self, code: int) -> int:
        """Let the children go, write what is pending, unregister. Returns the exit code."""
        self._stopping = True
        self._on_events(self._children.finish())
        completer = self._parts.completer
        if not self._parts.registration.leave(completer.write, max(self._lease_seconds / 2, DB_RETRY_MIN)):
            log.error(
                "could not write the last %d outcomes or unregister: %s; other masters will release "
                "this master's claims after the lease", len(completer), self._link.last_error,
            )
            return EXIT_DB_UNREACHABLE
        m = self.metrics
        log.info(
            "pool stopped: %d jobs done, %d failed, %d retried, %d deferred, %d released, %d crashed",
            m.jobs_done, m.jobs_failed, m.jobs_retried, m.jobs_deferred, m.jobs_released, m.jobs_crashed,
        )
        return code

    def _cleanup(self) -> None:
        """Whatever happened, leave no child behind (a live child would hold claims nobody tracks)."""
        if self._watchdog is not None:
            self._watchdog.stop()
            self._watchdog = None
        self._children.close()
        self._wakeups.close()
        if self._started is not None:
            for part in (self._started.completer, self._started.claimer):
                with contextlib.suppress(Exception):
                    part.close()
        if self._own_backend:
            self._link.close()


