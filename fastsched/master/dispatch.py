"""The loop's claim step: plan, claim and hand out batches, once every cycle of the pool's loop.

Each cycle, :meth:`Dispatcher.run` decides for the children a claim could feed now: the idle ones
(fewer under the load governor, ``--max-load``) and the busy ones whose batch is about to end
(prefetch: their next batch waits in their pipe instead of behind a claim). From the
:class:`~fastsched.master.counts.CountsCache` (or a fresh ``plan_counts``) ``core.plan_sized`` says
how many jobs of each priority to claim; the :class:`~fastsched.master.claimer.Claimer` claims them
with the Completer's outcomes, and batch i goes to child i. It may instead wait a moment for a
batch about to end (:class:`~fastsched.master.coalesce.Coalescer`), write the outcomes alone when
nothing is wanted, or, after a claim whose answer was lost, release what the idle children would
hold. :meth:`Dispatcher.next_due` is when the step wants the loop back: the loop's wait deadline
is the least of it and the duties' ``next_due``.

It never claims on a lease older than half its length (another master may recover our claims
before our children could finish them), nor while the database is down or the pool is stopping.
"""
from __future__ import annotations

import datetime as dt
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from fastsched import core
from fastsched.batching import BatchSizing, RunTimes
from fastsched.clock import Clock
from fastsched.errors import DatabaseError
from fastsched.jobs import ClaimedJob
from fastsched.master.childset import Child, ChildSet
from fastsched.master.claimer import Claimer
from fastsched.master.coalesce import Coalescer
from fastsched.master.completer import Completer
from fastsched.master.counts import CountsCache, PlanInputs, claimed_by_rank
from fastsched.master.dblink import DbLink, Lease
from fastsched.master.metrics import DbKind, PoolMetrics
from fastsched.master.recorder import OutcomeRecorder
from fastsched.master.registration import Registration
from fastsched.priority import RANK, rank_or_medium

log = logging.getLogger("fastsched.pool")

# A busy child is given its next batch (prefetch) once its batch is expected to end within this
# many times a claim's duration (the claim is then hidden behind the batch's last jobs), and no
# sooner than PREFETCH_LEAD_MIN seconds before.
PREFETCH_LEAD_CLAIMS = 2.0
PREFETCH_LEAD_MIN = 0.001


def load_average() -> float:
    """The higher of the 1- and 5-minute load averages; 0.0 (no information) where there is none."""
    try:
        return max(os.getloadavg()[:2])
    except OSError:
        return 0.0


class Dispatcher:
    """The claim step. ``stopping``: the pool is stopping (no claim, no prefetch); ``known``: the
    registered commands (a job of another goes back, never to a child); ``loadavg``: the system
    load the governor reads; ``perf``: the clock a claim's duration is measured on."""

    def __init__(
        self,
        *,
        link: DbLink,
        lease: Lease,
        children: ChildSet,
        completer: Completer,
        claimer: Claimer,
        registration: Registration,
        recorder: OutcomeRecorder,
        counts: CountsCache,
        coalescer: Coalescer,
        run_times: RunTimes,
        metrics: PoolMetrics,
        clock: Clock,
        stopping: Callable[[], bool],
        known: Mapping[str, Any],
        fetch_limit: int,
        batch_budget: float,
        poll_interval: float,
        max_load: float,
        queues: tuple[str, ...] = (),
        loadavg: Callable[[], float] = load_average,
        perf: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._link = link
        self._lease = lease
        self._children = children
        self._completer = completer
        self._claimer = claimer
        self._registration = registration
        self._recorder = recorder
        self._counts = counts
        self._coalescer = coalescer
        self._run_times = run_times
        self._metrics = metrics
        self._clock = clock
        self._stopping = stopping
        self._known = known
        self._fetch_limit = fetch_limit
        self._budget = batch_budget  # seconds
        self._poll = poll_interval
        self._max_load = max_load
        self._queues = queues
        self._loadavg = loadavg
        self._perf = perf
        self._hold_until = -math.inf  # waiting for a batch about to end: claim at this monotonic time
        self._idle_left = False  # the last claim left idle children without work
        self._needs_resync = False  # a claim failed mid-way: our idle children may hold claims we do not know
        self._empty_seen = False  # the last plan, taken with no outcomes pending, found nothing waiting
        self.last_plan = PlanInputs([0] * len(RANK), [0] * len(RANK), 0, False)
        self.allowed = len(children)  # children the load governor lets run

    # --- what the loop asks -------------------------------------------------------------------------
    @property
    def needs_resync(self) -> bool:
        """A claim's answer was lost: the next claim step first releases what the idle children would hold."""
        return self._needs_resync

    def claims_unknown(self) -> None:
        """Our claims may differ from what we sent the children (a claim or a start-over failed)."""
        self._needs_resync = True

    def claims_known(self) -> None:
        """Our claims are what we sent the children again (a start-over released the rest)."""
        self._needs_resync = False

    def found_nothing(self) -> bool:
        """This cycle's plan, taken with nothing left to write, found nothing waiting nor running
        anywhere (``until_empty`` trusts only that: a crash retry is runnable at once)."""
        return self._empty_seen and not self._needs_resync

    def next_due(self) -> float:
        """When the claim step wants the loop back (monotonic): at once while outcomes wait to be
        written, when the batch it waits for should end, when a busy child's batch is about to
        end (prefetch), or a poll interval on while children are idle, the database is down or
        the pool is stopping (other hosts' jobs are seen by polling)."""
        if self._hold_until > -math.inf:
            return self._hold_until
        down = self._link.down
        if self._completer and not down:
            return -math.inf
        now = self._clock.mono()
        due = math.inf
        stopping = self._stopping()
        if not stopping and not down:
            due = self._children.next_prefetch(now, self._prefetch_lead())
        if self._idle_left or down or stopping:
            due = min(due, now + self._poll)
        return due

    def run(self, mono: float) -> None:
        """The claim step of one cycle."""
        self._hold_until = -math.inf
        self._idle_left = False
        self._empty_seen = False
        completer = self._completer
        if self._stopping() or self._link.down:
            if completer and not self._link.down:
                completer.write()
            return
        if not self._prefetchable(mono):
            children = self._children
            hold = self._coalescer.hold(mono, len(children.free()), children.sole_batches_sent_at())
            if hold > 0:
                # A busy child is about to finish: claim for it and the idle ones in one transaction.
                self._metrics.coalesce_waits += 1
                self._hold_until = mono + hold
                return
        if not self._lease.valid(mono):
            if completer:
                completer.write()
            return
        self._coalescer.stop_holding()
        self._idle_left = self._claim_and_dispatch()

    # --- prefetch -----------------------------------------------------------------------------------
    def _prefetch_lead(self) -> float:
        return max(self._coalescer.claim_seconds * PREFETCH_LEAD_CLAIMS, PREFETCH_LEAD_MIN)

    def _prefetchable(self, mono: float) -> list[Child]:
        """Busy children whose batch is about to end: a claim now gives them their next one, so that
        they find it in their pipe instead of waiting for a claim (``ChildSet.prefetchable``). About
        to end: within twice a claim's time; a batch overdue by more than a budget is left alone."""
        if self._stopping():
            return []
        lead = self._prefetch_lead()
        return self._children.prefetchable(mono, lead, max(self._budget, lead))

    # --- the claim ----------------------------------------------------------------------------------
    def _free_children(self) -> tuple[list[Child], int]:
        """The idle children a claim may feed (the load governor holds some back), and how many are idle."""
        free = self._children.free()
        idle = len(free)
        if idle and self._max_load > 0:
            total = len(self._children)
            busy = total - idle
            self.allowed = core.allowed_workers(total, self._loadavg(), self._max_load, True)
            free = free[: max(0, min(idle, self.allowed - busy))]
        return free, idle

    def _claim_and_dispatch(self) -> bool:
        """One claim (with the pending outcomes), for the idle children and those about to finish
        (prefetch). Returns True if idle children are left."""
        children = self._children
        completer, claimer = self._completer, self._claimer
        free, idle = self._free_children()
        n_free = len(free)
        if self._needs_resync:
            self._resync()
            return bool(free)
        # The load governor holds back idle children; it does not feed busy ones ahead either.
        ahead = self._prefetchable(self._clock.mono()) if n_free == idle else []
        targets = free + ahead
        wanted: list[int] | None = None
        started = self._perf()
        now = self._clock.wall()
        # until_empty trusts only counts taken with nothing left to write (a crash retry is runnable at once).
        clean = not completer
        sizes = self._run_times.batch_sizes(self._budget, self._fetch_limit)
        revocable = children.revocable() if not free else []
        if targets or revocable:
            try:
                inputs = self._plan_inputs(now, max(len(targets), 1), sizes)
            except DatabaseError:
                return True
            self.last_plan = inputs
            # Claims of other masters count too, a dead one's included: they come back after its lease.
            self._empty_seen = (
                bool(n_free) and inputs.fresh and clean and not any(inputs.waiting) and not any(inputs.running)
            )
            if inputs.waiting[0] > 0 and revocable:
                # CRITICAL work waits and no child is idle: it must not wait behind a batch sent
                # ahead of lower priority. Take those back; the children get CRITICAL work instead.
                for child in revocable:
                    children.revoke(child)
                    self._metrics.prefetch_revoked += 1
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
        self._metrics.claims += 1
        self._coalescer.claimed(self._perf() - started)
        idle_pids = {child.pid for child in free}
        self._metrics.batches_prefetched += sum(1 for batch in batches if batch.pid not in idle_pids)
        return len(batches) < n_free

    def _plan_inputs(self, now: dt.datetime, n_free: int, sizes: list[int]) -> PlanInputs:
        """The counts for core.plan: read from the database when the copy cannot be trusted (see
        ``CountsCache.needs_read``), else the copy."""
        mono = self._clock.mono()
        own = self._children.busy_by_rank()
        counts = self._counts
        if not counts.needs_read(mono, n_free, sizes):
            return counts.current(own)
        cap = counts.cap(n_free, sizes)
        backend = self._link.backend
        read = self._link.call(
            DbKind.COUNT, backend.plan_counts, now, cap, now - dt.timedelta(seconds=self._lease.seconds),
            self._queues,
        )
        return counts.update(mono, read.waiting, read.running, read.active, cap, own, self._completer.finished_ranks)

    def _dispatch(self, pid: int, jobs: list[ClaimedJob]) -> None:
        metrics = self._metrics
        metrics.jobs_claimed += len(jobs)
        known = self._known
        # Per job only what C does (a batch holds up to the fetch limit, 1,000 by default).
        commands = [job[1] for job in jobs]
        if not known.keys() >= set(commands):
            keep = []
            for job in jobs:
                if job.command in known:
                    keep.append(job)
                else:
                    self._recorder.unknown_command(job)
            jobs = keep
            if not jobs:
                return
            commands = [job[1] for job in jobs]
        metrics.batches += 1
        self._run_times.claimed(rank_or_medium(jobs[0].priority), commands[-1])
        self._children.send(pid, jobs, self._run_times.expected_seconds(commands))

    def _resync(self) -> None:
        """After a claim whose result was lost, in the next transaction that succeeds: release what
        our idle children would hold (they hold nothing by our account); the busy ones hold what we
        sent them, and keep it."""
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
