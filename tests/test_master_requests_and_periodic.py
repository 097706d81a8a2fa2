"""The operators' requests and the periodic tasks as duties (OperatorRequests, PeriodicTasks), and
the OutcomeRecorder's accounting, in-process with injected time and a database that records."""
from __future__ import annotations

import datetime as dt
import math
from typing import Any

from fastsched import tasks
from fastsched.errors import DatabaseUnavailable
from fastsched.jobs import ClaimedJob
from fastsched.master.childset import BatchEnded, Flight
from fastsched.master.completer import Completer
from fastsched.master.dblink import DbLink
from fastsched.master.duties import PeriodicTasks
from fastsched.master.metrics import PoolMetrics
from fastsched.master.recorder import OutcomeRecorder
from fastsched.master.requests import STALE_SWEEP_RUNS, OperatorRequests
from fastsched.master.settle import BatchReport, Ended, SettlePolicy
from fastsched.protocol import ERROR, Note
from tests.masterkit import FakeTime

NOW = dt.datetime(2030, 1, 2, 3, 4, 5)
INTERVAL = 0.25


class Database:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.cancels: list[tuple[int, str]] = []
        self.down = False
        self.periodic: list[str] = []

    def _call(self, name: str) -> None:
        if self.down:
            raise DatabaseUnavailable(f"{name}: the server has gone away")
        self.calls.append(name)

    def cancel_requests(self, owner: str) -> list[tuple[int, str]]:
        self._call("cancel_requests")
        return list(self.cancels)

    def park_added(self, after: int) -> tuple[int, int]:
        self._call("park_added")
        return after + 10, 0

    def drop_stale_cancel_requests(self) -> None:
        self._call("drop_stale_cancel_requests")

    def run_periodic(self, entry: Any, now: dt.datetime) -> int | None:
        self._call("run_periodic")
        self.periodic.append(entry.name)
        return len(self.periodic)

    def close(self) -> None:
        pass


class Children:
    def __init__(self) -> None:
        self.cancelled: list[tuple[int, str]] = []

    def cancel_job(self, job_id: int, by: str) -> bool:
        self.cancelled.append((job_id, by))
        return True


def link_to(db: Database, time: FakeTime) -> DbLink:
    return DbLink(lambda: db, PoolMetrics(), 8.0, time, perf=time)  # type: ignore[arg-type, return-value]


def test_cancel_requests_reach_the_children_every_interval_even_while_the_pool_stops() -> None:
    db, time, children = Database(), FakeTime(10.0), Children()
    stopping = [False]
    duty = OperatorRequests(link_to(db, time), children, "host#1", INTERVAL, lambda: stopping[0])  # type: ignore[arg-type]
    db.cancels = [(7, "alice")]
    assert duty.next_due() <= time.now
    duty.run(time.now)
    assert children.cancelled == [(7, "alice")] and db.calls == ["cancel_requests", "park_added"]
    assert duty.next_due() == time.now + INTERVAL
    stopping[0] = True  # a job that holds up the stop is what an operator cancels then
    time.now += INTERVAL
    duty.run(time.now)
    assert children.cancelled == [(7, "alice")] * 2
    assert db.calls[2:] == ["cancel_requests"]  # nothing is claimed any more: no sweep for the pauses


def test_the_stale_cancel_requests_are_dropped_now_and_then_and_an_outage_waits() -> None:
    db, time, children = Database(), FakeTime(10.0), Children()
    link = link_to(db, time)
    duty = OperatorRequests(link, children, "host#1", INTERVAL, lambda: False)  # type: ignore[arg-type]
    for _ in range(STALE_SWEEP_RUNS):
        time.now += INTERVAL
        duty.run(time.now)
    assert db.calls.count("drop_stale_cancel_requests") == 1
    db.down = True
    duty.run(time.now + INTERVAL)
    assert link.down and duty.next_due() == math.inf  # the heartbeat retries the database first


def test_a_periodic_task_is_tried_a_few_times_per_period_and_never_while_the_database_is_down() -> None:
    db, time = Database(), FakeTime(10.0)
    registry = tasks.Registry()

    @registry.periodic(60.0, name="Report")
    def report() -> None:
        pass

    link = link_to(db, time)
    duty = PeriodicTasks(link, registry, 300.0, lambda: NOW, lambda: False)
    assert duty.next_due() == 0.0
    duty.run(time.now)
    assert db.periodic == ["Report"]
    assert duty.next_due() == time.now + 15.0  # a quarter of the period
    db.down = True
    time.now += 15.0
    duty.run(time.now)
    assert link.down and duty.next_due() == math.inf


def test_the_recorder_counts_each_outcome_and_buffers_it_for_the_completer() -> None:
    db, time = Database(), FakeTime(10.0)
    metrics = PoolMetrics()
    completer = Completer(link_to(db, time), "host#1", lambda: NOW)
    policy = SettlePolicy(retry_limit=3, crash_limit=2, fixed_delay=60.0, max_duration_minutes={})
    recorder = OutcomeRecorder(policy, completer, metrics, lambda: NOW)
    jobs = [ClaimedJob(job_id, "work", "[]", 20, 0, 0) for job_id in (1, 2, 3, 4)]
    report = BatchReport(Ended.REPLIED, processed=3, notes=[Note(1, ERROR, "Traceback\nValueError: no")])
    recorder.batch_ended(BatchEnded(99, Flight(1, jobs, 1), report, 0.01))
    assert (metrics.jobs_done, metrics.jobs_retried, metrics.jobs_released) == (2, 1, 1)
    assert metrics.jobs_done_by_priority[20] == 2
    assert len(completer) == 4 and completer.finished_ranks == [1]
    crashed = BatchReport(Ended.CRASHED, position=0, how="killed by signal 9 (SIGKILL)")
    recorder.batch_ended(BatchEnded(99, Flight(2, [ClaimedJob(5, "work", "[]", 20, 0, 1)], 1), crashed, 0.0))
    assert metrics.jobs_crashed == 1 and metrics.jobs_failed == 1  # its second crash: the crash limit is 2
    lost = BatchReport(Ended.LOST)
    recorder.batch_ended(BatchEnded(99, Flight(3, [ClaimedJob(6, "work", "[]", 20, 0, 0)], 1), lost, 0.0))
    assert len(completer) == 5  # a batch taken over by another master has no outcome of ours
