"""The pool master: claim batches from the database and run them in child processes keyed by pid.

One master per host id per database. It owns the database connection; its children (forked with
``multiprocessing.get_context("fork")``, each with its own pipe) never touch the database. Every
cycle costs a few statements, never one per job:

1. collect what the children reported (``ChildSet`` events) and ``settle`` each ended batch into
   outcomes, buffered by the ``Completer``;
2. free children = the idle ones, fewer under the load governor (``settings.max_load``);
3. the ``CountsCache`` (or ``plan_counts``) -> ``core.plan``: how many jobs of each priority to
   claim (Friendica's quadratic shares, with running and active workers counted cluster-wide);
4. the ``Claimer`` claims, with the Completer's outcomes in the same transaction or beside it
   (or the Completer writes them alone when nothing is wanted); batch i goes to free child i;
5. wait on the children's pipes, their sentinels (death), the wake-up socket and the earliest duty.

Around that, the duties (``fastsched.master.duties``): a heartbeat (a master whose heartbeat is
older than the lease is dead, and any master recovers its claims), the outage policy (the children
are killed before anyone could recover their claims, so no job runs twice at once), maintenance,
periodic tasks, run-time limits and the log lines; and a two-stage shutdown. This module only
wires the parts of ``fastsched.master`` together and runs the loop.

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
import datetime as dt
import importlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from fastsched import core, retry_policy, tasks
from fastsched.backends import one_host
from fastsched.backends.contracts import MasterStore
from fastsched.batching import BatchSizing, RunTimes
from fastsched.clock import Clock, utcnow
from fastsched.config import PoolSettings, validate
from fastsched.errors import ConfigError, DatabaseError
from fastsched.exitcodes import EXIT_CONFIG, EXIT_DB_UNREACHABLE, EXIT_FAILURE, EXIT_KILLED, EXIT_OK
from fastsched.jobs import ClaimedJob, Failure, Outcomes, Retry
from fastsched.master.childset import (
    KILL_DB,
    KILL_LOST,
    KILL_OPERATOR,
    BatchEnded,
    Child,
    ChildGone,
    ChildSet,
    Event,
)
from fastsched.master.claimer import Claimer
from fastsched.master.coalesce import Coalescer
from fastsched.master.completer import Completer
from fastsched.master.counts import CountsCache, PlanInputs, claimed_by_rank
from fastsched.master.dblink import DB_RETRY_MAX, DB_RETRY_MIN, DbLink, Lease
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
from fastsched.master.registration import Registration
from fastsched.master.requests import OperatorRequests
from fastsched.master.settle import Ended, JobEvent, SettlePolicy, settle
from fastsched.priority import RANK, Priority
from fastsched.validation import queue_set

if TYPE_CHECKING:
    from fastsched.wakeup import Listener

log = logging.getLogger(__name__)

# A busy child is given its next batch (prefetch) once its batch is expected to end within this
# many times a claim's duration (the claim is then hidden behind the batch's last jobs), and no
# sooner than PREFETCH_LEAD_MIN seconds before.
PREFETCH_LEAD_CLAIMS = 2.0
PREFETCH_LEAD_MIN = 0.001

__all__ = [
    "EXIT_CONFIG",
    "EXIT_DB_UNREACHABLE",
    "EXIT_FAILURE",
    "EXIT_KILLED",
    "EXIT_OK",
    "Pool",
    "utcnow",
]




def _summary(text: str | None) -> str:
    """The last line of a traceback (the exception and its message), short enough for a log line."""
    if not text:
        return ""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip()[:300] if lines else ""


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
        self._clock = Clock(wall=clock or utcnow, mono=monotonic or time.monotonic, sleep=sleep or time.sleep)
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
        self._one_host = one_host(settings.dsn)
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
        self._budget = settings.batch_budget_ms / 1000.0
        # Made at start-up, when the backend says how many connections it may use at once.
        self._completer: Completer | None = None
        self._claimer: Claimer | None = None
        self._registration: Registration | None = None
        self._duties: list[Duty] = []
        self._grace = ShutdownGrace(self._children.busy, settings.shutdown_grace, self._grace_over)
        self._watchdog: Watchdog | None = None
        self._stop_requests = 0
        self._stopping = False
        self._forced = False
        self._woken = False  # a wake-up arrived since the last cycle: a job was added on this host
        self._needs_resync = False  # a claim failed mid-way: our idle children may hold claims we do not know
        self._empty_seen = False  # the last plan, taken with no outcomes pending, found nothing waiting
        self._last_plan = PlanInputs([0] * len(RANK), [0] * len(RANK), 0, False)
        self._allowed = settings.workers
        self._wake_r = -1
        self._wake_w = -1
        self._listener: Listener | None = None

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

        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        # Children first: forked before the database connection exists, they inherit no socket of it.
        self._children.spawn(settings.workers)
        registration = self._registration = Registration(
            self._link, self._children, host=self._host, pid=os.getpid(), workers=settings.workers,
            lease=self._lease_seconds, wall=clock.wall, mono=clock.mono, sleep=clock.sleep,
            queues=self._queues,
        )
        registration.start(give_up=lambda: bool(self._stop_requests))
        self.metrics.db_up = True
        backend = self._link.backend
        lanes = backend.concurrent_connections
        # Claims and outcomes are this instance's (registration.owner), not the host id's.
        self._completer = Completer(
            self._link, registration.owner, clock.wall, backend.open_sibling() if lanes > 1 else None
        )
        self._claimer = Claimer(self._link, registration.owner, lanes, self._queues)
        heartbeat = Heartbeat(self._link, self._lease, registration, settings.heartbeat_interval, self._lost)
        heartbeat.started(clock.mono())
        stopping = self._is_stopping
        self._duties = [
            heartbeat,
            OutagePolicy(self._link, self._lease, self._children, self._lease_expired),
            self._grace,
            RunTimeLimits(self._children),
            OperatorRequests(self._link, self._children, registration.owner, settings.heartbeat_interval, stopping),
            Maintenance(self._link, settings, clock.wall, clock.mono, stopping),
            PeriodicTasks(self._link, tasks.default_registry, settings.maintenance_interval, clock.wall, stopping),
            LogLines(self._link, self.metrics, settings, self._load_view, clock.wall),
        ]
        from fastsched import wakeup

        try:
            self._listener = wakeup.Listener(settings.dsn.identity, self._host)
        except OSError as exc:
            log.warning("no wake-up socket (%s): new jobs are found by polling every %gs", exc, settings.poll_interval)
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

    def _is_stopping(self) -> bool:
        return self._stopping

    # ----------------------------------------------------------------------------- the loop
    def _loop(self) -> int:
        settings = self.settings
        metrics = self.metrics
        poll = settings.poll_interval
        mono = self._clock.mono
        perf = time.perf_counter
        duties = self._duties
        completer = self._completer
        assert completer is not None
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

            idle_left = False
            if self._children.busy():
                self._wait(0.0)  # collect replies that arrived while we were busy
            hold = 0.0
            if not self._stopping and not self._link.down and not self._prefetchable(mono()):
                hold = self._coalescer.hold(
                    mono(), len(self._children.free()), self._children.sole_batches_sent_at()
                )
            if hold > 0:
                if claim_first:  # a stream of wake-ups and holds must not starve the heartbeat
                    run_due(duties, mono())
                # A busy child is about to finish: claim for it and the idle ones in one transaction.
                metrics.coalesce_waits += 1
                self._wait(hold)
                continue
            # Never claim (so never dispatch) on a lease older than half its length: after a stall
            # another master may recover our claims before our children could finish them.
            if not self._stopping and not self._link.down and self._lease.valid(mono()):
                self._coalescer.stop_holding()
                idle_left = self._claim_and_dispatch()
                if settings.until_empty and self._is_empty():
                    log.info("until_empty: nothing is runnable or running: stopping")
                    return self._finish(EXIT_OK)
            elif completer and not self._link.down:
                completer.write()
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

            # Wait for a reply, a death, a wake-up, a stop request or the next duty.
            timeout = next_deadline(duties) - mono()
            if not self._stopping and not self._link.down:  # a busy child about to finish gets its next batch
                now_mono = mono()
                timeout = min(timeout, self._children.next_prefetch(now_mono, self._prefetch_lead()) - now_mono)
            if completer and not self._link.down:
                timeout = 0.0
            elif idle_left or self._link.down or self._stopping:
                timeout = min(timeout, poll)
            self._wait(max(timeout, 0.0))

    def _wait(self, timeout: float) -> None:
        objects: list[Any] = [self._wake_r]
        if self._listener is not None:
            objects.append(self._listener)
        objects.extend(self._children.wait_objects())
        ready = multiprocessing.connection.wait(objects, timeout)
        if not ready:
            return
        if self._wake_r in ready:
            try:
                while os.read(self._wake_r, 512):
                    pass
            except OSError:
                pass
        listener = self._listener
        if listener is not None and any(obj is cast(Any, listener) for obj in ready):
            listener.drain()
            self._woken = True
            added = listener.take_added()
            if self._queues:
                # A wake-up names the job's priority, not its queue: the copy cannot tell whether it
                # is one of ours, so the counts are read again (for the jobs of our queues only).
                self._counts.mark_stale()
            else:
                self._counts.added(added)
        self._on_events(self._children.handle(ready))

    # ----------------------------------------------------------------------------- what the children report
    def _on_events(self, events: list[Event]) -> None:
        gone = False
        for event in events:
            if isinstance(event, BatchEnded):
                self._on_batch_ended(event)
            elif isinstance(event, ChildGone):
                gone = True
                if not event.retired:  # a child replaced for a per-child limit did not die
                    self.metrics.children_died += 1
                self._counts.mark_stale()  # its unstarted jobs go back to waiting
        if gone and not self._stopping and not self._forced:
            self._replace()

    def _on_batch_ended(self, event: BatchEnded) -> None:
        report = event.report
        if report.ended is Ended.LOST:
            return  # our claims were taken over: nothing of ours to write
        metrics = self.metrics
        jobs = event.flight.jobs
        if report.ended is Ended.REPLIED:
            metrics.job_seconds += event.seconds
            self._coalescer.batch_ran(event.seconds)
            self._run_times.observe_all(event.timings)
        now = self._clock.wall()
        settlement = settle(jobs, report, self._policy, now)
        outcomes = settlement.outcomes
        for job, what, outcome in settlement.decided:
            if what is JobEvent.CRASHED:
                metrics.jobs_crashed += 1
                log.error(
                    "child %d died (%s) running job %d %s (priority %d): crash %d of %d allowed",
                    event.pid, report.how, job.id, job.command, job.priority, job.crashes + 1,
                    self.settings.crash_limit,
                )
            elif what is JobEvent.TIMED_OUT:
                metrics.jobs_timed_out += 1
            if isinstance(outcome, Failure):
                self._count_failure(job, outcome)
            else:
                if what is JobEvent.DEFERRED:
                    metrics.jobs_deferred += 1
                elif what is JobEvent.RAISED:
                    metrics.jobs_retried += 1
                self._log_retry(job, outcome, what.value, now)
        if outcomes.done:
            metrics.jobs_done += len(outcomes.done)
            metrics.jobs_done_by_priority[jobs[0].priority] += len(outcomes.done)
        metrics.jobs_released += len(outcomes.released)
        metrics.jobs_cancelled += len(outcomes.cancelled)
        for job_id in outcomes.cancelled:
            log.warning("job %d cancelled while running (child %d %s): kept as cancelled, never retried",
                        job_id, event.pid, report.how)
        assert self._completer is not None
        self._completer.add(outcomes, event.flight.rank if event.counted_running else None)

    def _count_failure(self, job: ClaimedJob, failure: Failure) -> None:
        self.metrics.jobs_failed += 1
        log.warning("job %d %s (priority %d) failed: %s", job.id, job.command, job.priority, _summary(failure.error))

    def _log_retry(self, job: ClaimedJob, retry: Retry, what: str, now: dt.datetime) -> None:
        delay = (retry.next_try - now).total_seconds()
        log.info(
            "job %d %s %s: retrial %d at priority %d in %.1fs%s",
            job.id, job.command, what, retry.retrial, retry.priority, max(delay, 0.0),
            f": {_summary(retry.error)}" if retry.error else "",
        )

    def _replace(self) -> None:
        """Spawn children up to the configured number and list them in the process table."""
        missing = self.settings.workers - len(self._children)
        if missing <= 0:
            return
        self._children.spawn(missing)
        log.info("children now: %s", self._children.pids())
        if not self._link.down and self._registration is not None:
            with contextlib.suppress(DatabaseError):  # listed again at the next heartbeat
                self._registration.sync_children()

    def _load_view(self) -> LoadView:
        return LoadView(
            children=len(self._children), busy=self._children.busy(), active=self._last_plan.active,
            waiting=sum(self._last_plan.waiting), allowed=self._allowed,
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
        assert self._completer is not None and self._registration is not None
        ready = multiprocessing.connection.wait(self._children.wait_objects(), 0)
        self._on_events(self._children.handle(ready))
        late = self._completer.take()
        log.error(
            "this master (host id %s, pid %d) was declared dead by another master (heartbeat older than the "
            "lease of %gs) and its claims were released: killing the children at once, registering again; "
            "%d outcomes not written yet", self._host, self._registration.pid, self._lease_seconds, len(late),
        )
        self._on_events(self._children.kill_all(KILL_LOST))
        self._completer.take()  # what the killed children held is released already
        try:
            if late:
                written = self._link.call(
                    DbKind.WRITE, self._link.backend.write_released_outcomes, self._clock.wall(), late
                )
                log.warning(
                    "wrote %d of those %d outcomes (the other jobs were claimed again since, or have no outcome "
                    "to write)", written, len(late),
                )
            released = self._registration.start_over()  # what we claimed meanwhile
        except DatabaseError:
            self._needs_resync = True
            return
        self._needs_resync = False
        if released:
            log.warning("released %d jobs claimed after we were declared dead", released)

    def _grace_over(self) -> None:
        self._forced = True

    # ----------------------------------------------------------------------------- claiming
    def _prefetch_lead(self) -> float:
        return max(self._coalescer.claim_seconds * PREFETCH_LEAD_CLAIMS, PREFETCH_LEAD_MIN)

    def _prefetchable(self, mono: float) -> list[Child]:
        """Busy children whose batch is about to end: a claim now gives them their next one, so that
        they find it in their pipe instead of waiting for a claim (``ChildSet.prefetchable``). About
        to end: within twice a claim's time; a batch overdue by more than a budget is left alone."""
        if self._stopping:
            return []
        lead = self._prefetch_lead()
        return self._children.prefetchable(mono, lead, max(self._budget, lead))

    def _claim_and_dispatch(self) -> bool:
        """One claim (with the pending outcomes), for the idle children and those about to finish
        (prefetch). Returns True if idle children are left."""
        settings = self.settings
        children = self._children
        completer, claimer = self._completer, self._claimer
        assert completer is not None and claimer is not None
        free = children.free()
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
        if self._needs_resync:
            self._resync()
            return bool(free)
        # The load governor holds back idle children; it does not feed busy ones ahead either.
        ahead = self._prefetchable(self._clock.mono()) if n_free == len(children.free()) else []
        targets = free + ahead
        wanted: list[int] | None = None
        started = time.perf_counter()
        now = self._clock.wall()
        # until_empty trusts only counts taken with nothing left to write (a crash retry is runnable at once).
        clean = not completer
        self._empty_seen = False
        sizes = self._run_times.batch_sizes(self._budget, settings.fetch_limit)
        revocable = children.revocable() if not free else []
        if targets or revocable:
            try:
                inputs = self._plan_inputs(now, max(len(targets), 1), sizes)
            except DatabaseError:
                return True
            self._last_plan = inputs
            # Claims of other masters count too, a dead one's included: they come back after its lease.
            self._empty_seen = (
                bool(n_free) and inputs.fresh and clean and not any(inputs.waiting) and not any(inputs.running)
            )
            if inputs.waiting[0] > 0 and revocable:
                # CRITICAL work waits and no child is idle: it must not wait behind a batch sent
                # ahead of lower priority. Take those back; the children get CRITICAL work instead.
                for child in revocable:
                    children.revoke(child)
                    self.metrics.prefetch_revoked += 1
                    if child not in targets:
                        targets.append(child)
            running = list(inputs.running)
            for child in ahead:  # about to finish: their slot is the one being filled
                rank = child.inflight[0].rank
                running[rank] = max(0, running[rank] - 1)
            wanted = core.plan_sized(inputs.waiting, running, inputs.active, len(targets), sizes) if targets else None
            if wanted is not None and not any(wanted):
                wanted = None
        if wanted is None:
            if completer:
                completer.write(now)
            return bool(n_free)
        writes = completer.for_claim(now)
        sizing = BatchSizing(sizes, self._run_times.per_job, self._budget)
        try:
            batches = claimer.claim(wanted, [child.pid for child in targets], sizing, now, writes)
        except DatabaseError:
            completer.after_claim(writes, ok=False)
            self._needs_resync = True  # the claim may have committed before the error reached us
            return True
        except Exception:
            # Not the database's (a thread that cannot start, MemoryError, a bug): the outcomes are
            # kept to write again and the claim is as unknown as after a lost COMMIT answer.
            log.exception("a claim failed: its outcomes are kept, its jobs are released")
            completer.after_claim(writes, ok=False)
            self._needs_resync = True
            return True
        # The batches first: the bookkeeping after them is not on the path to a job's start.
        for batch in batches:
            self._dispatch(batch.pid, batch.jobs)
        completer.after_claim(writes, ok=True)
        self._counts.claimed(wanted, claimed_by_rank(batches))
        self.metrics.claims += 1
        self._coalescer.claimed(time.perf_counter() - started)
        idle = {child.pid for child in free}
        self.metrics.batches_prefetched += sum(1 for batch in batches if batch.pid not in idle)
        return len(batches) < n_free

    def _plan_inputs(self, now: dt.datetime, n_free: int, sizes: list[int]) -> PlanInputs:
        """The counts for core.plan: read from the database when the copy cannot be trusted (see
        ``CountsCache.needs_read``), else the copy."""
        assert self._completer is not None
        mono = self._clock.mono()
        own = self._children.busy_by_rank()
        counts = self._counts
        if not counts.needs_read(mono, n_free, sizes):
            return counts.current(own)
        cap = counts.cap(n_free, sizes)
        read = self._link.call(
            DbKind.COUNT, self._link.backend.plan_counts, now, cap, now - dt.timedelta(seconds=self._lease_seconds),
            self._queues,
        )
        return counts.update(mono, read.waiting, read.running, read.active, cap, own, self._completer.finished_ranks)

    def _dispatch(self, pid: int, jobs: list[ClaimedJob]) -> None:
        metrics = self.metrics
        metrics.jobs_claimed += len(jobs)
        known = self._tasks
        # Per job only what C does (a batch holds up to the fetch limit, 1,000 by default).
        commands = [job[1] for job in jobs]
        if not known.keys() >= set(commands):
            assert self._completer is not None
            keep = []
            for job in jobs:
                if job.command in known:
                    keep.append(job)
                else:
                    self._hand_back(job)
            jobs = keep
            if not jobs:
                return
            commands = [job[1] for job in jobs]
        metrics.batches += 1
        self._run_times.claimed(RANK.get(jobs[0].priority, 2), commands[-1])
        self._children.send(pid, jobs, self._run_times.expected_seconds(commands))

    def _hand_back(self, job: ClaimedJob) -> None:
        """A job of a command this pool has not registered: deferred with the retry delay and its
        retrial counted (a newer pool may have it), failed past the retry limit; never run."""
        assert self._completer is not None
        policy = self._policy
        now = self._clock.wall()
        outcome = retry_policy.unknown_command(
            job, now, retry_limit=policy.retry_limit, fixed_delay=policy.fixed_delay, rng=policy.rng
        )
        if isinstance(outcome, Failure):
            self._completer.add_failure(outcome)
            self._count_failure(job, outcome)
        else:
            self._completer.add(Outcomes(retry=[outcome]))
            self.metrics.jobs_retried += 1
            self._log_retry(job, outcome, "is not registered here", now)

    def _is_empty(self) -> bool:
        return (
            self._empty_seen
            and not self._completer
            and not self._children.busy()
            and not self._needs_resync
            and not self._link.down
            and self._children.usable() > 0
        )

    def _resync(self) -> None:
        """After a claim whose result was lost, in the next transaction that succeeds: release what
        our idle children would hold (they hold nothing by our account); the busy ones hold what we
        sent them, and keep it."""
        assert self._completer is not None and self._registration is not None
        if self._completer and not self._completer.write():
            return
        try:
            released = self._registration.release(keep=self._children.busy_pids())
        except DatabaseError:
            return
        self._needs_resync = False
        self._counts.mark_stale()
        if released:
            log.warning("released %d jobs claimed by a claim whose answer was lost to a database error", released)

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
        completer, registration = self._completer, self._registration
        assert completer is not None and registration is not None
        # The last outcomes (done, released) must reach the database, or the jobs re-run after the lease.
        mono = self._clock.mono
        deadline = mono() + max(self._lease_seconds / 2, DB_RETRY_MIN)
        delay = DB_RETRY_MIN
        while True:
            if completer.write():
                try:
                    registration.unregister()
                    break
                except DatabaseError:
                    pass
            if mono() >= deadline:
                log.error(
                    "could not write the last %d outcomes or unregister: %s; other masters will release "
                    "this master's claims after the lease", len(completer), self._link.last_error,
                )
                return EXIT_DB_UNREACHABLE
            self._clock.sleep(delay)
            delay = min(delay * 2, DB_RETRY_MAX)
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
        for part in (self._completer, self._claimer):
            if part is not None:
                with contextlib.suppress(Exception):
                    part.close()
        if self._own_backend:
            self._link.close()


