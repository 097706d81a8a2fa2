"""The claim step (Dispatcher), in-process with injected time: which children a claim feeds (the
load governor, prefetch, taking a prefetched batch back for CRITICAL work), what happens to the
outcomes when a claim fails, when the step wants the loop back, and when "nothing is left" holds.

The children are a real ChildSet over a stand-in for multiprocessing (no process is started); the
database is a model that claims what it holds, as plan_counts and claim do.
"""
from __future__ import annotations

import datetime as dt
import itertools
import math
from collections.abc import Sequence
from typing import Any

import pytest

from fastsched import protocol
from fastsched.backends.base import Batch, PlanCounts
from fastsched.batching import BatchSizing, RunTimes
from fastsched.clock import Clock
from fastsched.errors import DatabaseUnavailable
from fastsched.jobs import ClaimedJob, Outcomes
from fastsched.master.childset import ChildSet
from fastsched.master.claimer import Claimer
from fastsched.master.coalesce import Coalescer
from fastsched.master.completer import Completer
from fastsched.master.counts import CountsCache
from fastsched.master.dblink import DbLink, Lease
from fastsched.master.dispatch import Dispatcher
from fastsched.master.metrics import PoolMetrics
from fastsched.master.recorder import OutcomeRecorder
from fastsched.master.settle import SettlePolicy
from fastsched.priority import RANK
from tests.masterkit import FakeContext, FakeTime

NOW = dt.datetime(2030, 1, 2, 3, 4, 5)
CRITICAL, HIGH, MEDIUM, LOW, NEGLIGIBLE = 10, 20, 30, 40, 50
POLL = 0.5
LEASE = 8.0


class Database:
    """Pending jobs by priority; claims take from them, outcomes are recorded."""

    concurrent_connections = 1

    def __init__(self, jobs: Sequence[tuple[int, str]] = ()) -> None:
        self.pending: list[ClaimedJob] = []
        self.ids = itertools.count(1)
        self.add(jobs)
        self.written: list[Outcomes] = []
        self.claims: list[tuple[list[int], list[int]]] = []
        self.fail_claim: Exception | None = None
        self.released: list[list[int] | None] = []
        self.others_running = [0] * 5

    def add(self, jobs: Sequence[tuple[int, str]]) -> None:
        for priority, command in jobs:
            self.pending.append(ClaimedJob(next(self.ids), command, "[]", priority, 0, 0))

    def plan_counts(self, now: dt.datetime, cap: int, alive_after: dt.datetime, queues: Any = ()) -> PlanCounts:
        waiting = [0] * 5
        for job in self.pending:
            waiting[RANK[job.priority]] += 1
        return PlanCounts([min(count, cap) for count in waiting], list(self.others_running), 4)

    def claim(
        self, wanted: list[int], children: list[int], host: str, sizing: BatchSizing, now: dt.datetime, queues: Any = ()
    ) -> list[Batch]:
        if self.fail_claim is not None:
            raise self.fail_claim
        self.claims.append((list(wanted), list(children)))
        left = list(wanted)
        batches = []
        for pid in children:
            rank = next((r for r, count in enumerate(left) if count), None)
            if rank is None:
                break
            take = [job for job in self.pending if RANK[job.priority] == rank][: min(left[rank], sizing.sizes[rank])]
            left[rank] -= len(take)
            self.pending = [job for job in self.pending if job not in take]
            batches.append(Batch(pid, take))
        return batches

    def write_outcomes_and_claim(
        self, outcomes: Outcomes, wanted: list[int], children: list[int], host: str, sizing: BatchSizing,
        now: dt.datetime, queues: Any = (),
    ) -> list[Batch]:
        batches = self.claim(wanted, children, host, sizing, now, queues)
        self.written.append(outcomes)
        return batches

    def write_outcomes(self, host: str, now: dt.datetime, outcomes: Outcomes) -> None:
        self.written.append(outcomes)


class FakeRegistration:
    def __init__(self, db: Database) -> None:
        self.db = db

    def release(self, keep: list[int] | None = None) -> int:
        self.db.released.append(keep)
        return 0


class Master:
    """The parts the claim step works with, wired as the pool wires them."""

    def __init__(
        self, db: Database, *, workers: int = 2, max_load: float = 0.0, load: float = 0.0, fetch_limit: int = 100,
    ) -> None:
        self.time = FakeTime(100.0)
        self.db = db
        self.metrics = PoolMetrics()
        self.load = load
        self.stopping = False
        clock = Clock(wall=lambda: NOW, mono=self.time.mono, sleep=lambda seconds: None)
        self.link = DbLink(lambda: db, self.metrics, LEASE, self.time.mono, perf=self.time.mono)
        self.lease = Lease(LEASE)
        self.lease.renew(self.time.now)
        self.children = ChildSet(
            FakeContext(), tasks={"known": print}, retry_limit=3, limits={}, max_duration_minutes={},
            kill_grace=1.0, mono=self.time.mono,
        )
        self.children.spawn(workers)
        self.completer = Completer(self.link, "host#1", clock.wall)
        self.run_times = RunTimes()
        self.coalescer = Coalescer()
        self.counts = CountsCache(POLL, fetch_limit)
        policy = SettlePolicy(retry_limit=3, crash_limit=2, fixed_delay=60.0, max_duration_minutes={})
        self.dispatcher = Dispatcher(
            link=self.link, lease=self.lease, children=self.children, completer=self.completer,
            claimer=Claimer(self.link, "host#1", 1), registration=FakeRegistration(db),  # type: ignore[arg-type]
            recorder=OutcomeRecorder(policy, self.completer, self.metrics, clock.wall), counts=self.counts,
            coalescer=self.coalescer, run_times=self.run_times, metrics=self.metrics, clock=clock,
            stopping=lambda: self.stopping, known={"known": print}, fetch_limit=fetch_limit, batch_budget=0.020,
            poll_interval=POLL, max_load=max_load, loadavg=lambda: self.load, perf=self.time.mono,
        )

    def step(self) -> None:
        self.dispatcher.run(self.time.now)

    def busy(self) -> int:
        return self.children.busy()


def test_each_idle_child_gets_a_batch_and_the_next_claim_waits_for_work() -> None:
    master = Master(Database([(HIGH, "known")] * 3), workers=2)
    master.step()
    assert master.busy() == 2
    assert master.metrics.claims == 1 and master.metrics.jobs_claimed == 2  # one job each: never seen yet
    assert master.db.claims[0][0][RANK[HIGH]] == 2


def test_the_load_governor_feeds_only_the_children_the_load_allows() -> None:
    master = Master(Database([(MEDIUM, "known")] * 10), workers=4, max_load=2.0, load=1.9)
    master.step()
    # allowed = ceil(((2.0 - 1.9) / 2.0) ** 3 * 4) = 1
    assert master.dispatcher.allowed == 1
    assert master.busy() == 1
    master.load = 0.0  # no reading: no throttling
    master.time.now += POLL  # the copy of the counts is read again
    master.step()
    assert master.busy() == 4


def test_a_job_of_a_command_not_registered_here_goes_back_and_never_to_a_child() -> None:
    master = Master(Database([(HIGH, "unknown"), (HIGH, "known")]), workers=2)
    master.step()
    assert master.busy() == 1
    assert len(master.completer) == 1 and master.metrics.jobs_retried == 1
    master.step()  # the next step writes it
    retried = [retry for outcomes in master.db.written for retry in outcomes.retry]
    assert [retry.id for retry in retried] == [1] and retried[0].retrial == 1


def test_a_failed_claim_keeps_its_outcomes_and_releases_what_the_idle_children_may_hold() -> None:
    db = Database([(HIGH, "known")] * 4)
    master = Master(db, workers=2)
    master.completer.add(Outcomes(done=[99]))
    db.fail_claim = DatabaseUnavailable("the server has gone away")
    master.step()
    assert master.busy() == 0
    assert master.dispatcher.needs_resync
    assert master.link.down
    assert len(master.completer) == 1  # kept to write again
    master.link.answered(master.time.now)  # the heartbeat got an answer
    db.fail_claim = None
    master.step()
    assert [outcomes.done for outcomes in db.written] == [[99]]  # written before the release
    assert db.released == [[]]  # no child is busy: everything the instance holds goes back
    assert not master.dispatcher.needs_resync
    master.step()
    assert master.busy() == 2


def test_no_claim_on_a_lease_past_half_its_length_but_the_outcomes_are_written() -> None:
    db = Database([(HIGH, "known")] * 4)
    master = Master(db, workers=2)
    master.completer.add(Outcomes(done=[7]))
    master.time.now += LEASE / 2
    master.step()
    assert master.busy() == 0 and not db.claims
    assert [outcomes.done for outcomes in db.written] == [[7]]


def test_nothing_is_claimed_while_stopping_and_the_step_polls() -> None:
    master = Master(Database([(HIGH, "known")]), workers=2)
    master.stopping = True
    master.step()
    assert master.busy() == 0
    assert master.dispatcher.next_due() == pytest.approx(master.time.now + POLL)


def test_the_step_is_due_at_once_while_outcomes_wait_and_a_poll_later_with_idle_children() -> None:
    db = Database([(HIGH, "known")])
    master = Master(db, workers=2)
    master.step()  # one job for two children: one is left idle
    assert master.busy() == 1
    assert master.dispatcher.next_due() == pytest.approx(master.time.now + POLL)
    master.completer.add(Outcomes(done=[1]))
    assert master.dispatcher.next_due() == -math.inf


def test_a_busy_child_about_to_finish_gets_its_next_batch_ahead() -> None:
    db = Database([(HIGH, "known")] * 10)
    master = Master(db, workers=1)
    master.run_times.observe("known", 1, 0.002)  # 2 ms a job: ten fit a 20 ms budget
    master.coalescer.claimed(0.0005)  # a claim takes 0.5 ms: prefetch 1 ms before a batch's end
    master.step()  # one job: nothing was claimed at HIGH yet, so no size is known for it
    assert master.busy() == 1 and master.metrics.batches_prefetched == 0
    due = master.dispatcher.next_due()
    assert due == pytest.approx(master.time.now + 0.002 - 0.001)  # the batch's expected end, less the lead
    master.time.now = due
    master.step()
    assert master.metrics.batches_prefetched == 1 and master.metrics.claims == 2
    ((_, ahead),) = master.children.prefetched()
    assert len(ahead.jobs) == 9  # the rest: ten jobs of 2 ms fit the 20 ms budget


def test_waiting_critical_work_takes_back_a_lower_batch_sent_ahead() -> None:
    db = Database([(LOW, "known")] * 2)
    master = Master(db, workers=1)
    master.run_times.observe("known", 1, 0.002)
    master.coalescer.claimed(0.0005)
    master.step()
    master.time.now = master.dispatcher.next_due()
    master.step()  # the second LOW job is sent ahead
    (child,) = master.children.revocable()
    child.progress[protocol.PROGRESS_SEQ] = float(child.inflight[0].seq)  # it runs the first one
    child.progress[protocol.PROGRESS_INDEX] = 0.0
    db.add([(CRITICAL, "known")])
    master.counts.mark_stale()  # a wake-up named no priority
    master.step()
    assert master.metrics.prefetch_revoked == 1
    assert int(child.progress[protocol.PROGRESS_REVOKE]) == child.inflight[1].seq
    assert [flight.rank for flight in child.inflight] == [RANK[LOW], RANK[LOW], RANK[CRITICAL]]


def test_nothing_left_is_found_only_from_fresh_counts_with_nothing_to_write() -> None:
    db = Database()
    master = Master(db, workers=2)
    master.completer.add(Outcomes(done=[5]))
    master.step()
    assert not master.dispatcher.found_nothing()  # counts taken before the outcomes were written
    master.step()
    assert master.dispatcher.found_nothing()
    db.others_running[RANK[HIGH]] = 1  # another master's claim: it may come back
    master.time.now += POLL
    master.step()
    assert not master.dispatcher.found_nothing()
