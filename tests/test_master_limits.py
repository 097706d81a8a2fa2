"""Run-time limits and cancelling a running job (ChildSet, the RunTimeLimits duty), in-process with
injected time: which job is over its limit, SIGTERM then SIGKILL a grace later, a task's own
timeout before its priority's, and when the duty is next due. No process is started and no signal
leaves the test (they are recorded)."""
from __future__ import annotations

import math
import signal

import pytest

from fastsched import protocol
from fastsched.jobs import ClaimedJob
from fastsched.master import childset
from fastsched.master.childset import KILL_CANCEL, KILL_TIMEOUT, LIMIT_CHECK_INTERVAL, Child, ChildSet
from fastsched.master.duties import RunTimeLimits
from tests.masterkit import FakeContext, FakeTime

HIGH, LOW = 20, 40
HIGH_LIMIT = 60.0  # seconds: HIGH's max_duration_minutes of 1
GRACE = 5.0


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    signals: list[tuple[int, int]] = []
    monkeypatch.setattr(childset, "signal_pid", lambda pid, signum: signals.append((pid, signum)))
    return signals


def make_children(time: FakeTime, timeouts: dict[str, float] | None = None) -> ChildSet:
    own = timeouts or {}
    kids = ChildSet(
        FakeContext(), tasks={}, retry_limit=3, limits={HIGH: HIGH_LIMIT, LOW: None},
        max_duration_minutes={HIGH: 1.0}, kill_grace=GRACE, mono=time, timeouts=own.get,
    )
    kids.spawn(1)
    return kids


def job(job_id: int, priority: int = HIGH, command: str = "work") -> ClaimedJob:
    return ClaimedJob(job_id, command, "[]", priority, 0, 0)


def running(kids: ChildSet, jobs: list[ClaimedJob], index: int, since: float) -> Child:
    """The one child runs job ``index`` of ``jobs`` since ``since`` (as its progress slot says)."""
    (pid,) = kids.pids()
    kids.send(pid, jobs)
    child = kids.child(pid)
    child.progress[protocol.PROGRESS_SEQ] = float(child.inflight[0].seq)
    child.progress[protocol.PROGRESS_INDEX] = float(index)
    child.progress[protocol.PROGRESS_START] = since
    return child


def test_a_job_past_its_priority_s_limit_gets_sigterm_then_sigkill_a_grace_later(sent: list[tuple[int, int]]) -> None:
    time = FakeTime()
    kids = make_children(time)
    duty = RunTimeLimits(kids)
    child = running(kids, [job(1), job(2)], index=1, since=time.now)
    assert duty.next_due() <= time.now  # a limited job runs: checked from now on
    time.now += HIGH_LIMIT  # exactly at the limit: not over it
    duty.run(time.now)
    assert sent == [] and duty.next_due() == time.now + LIMIT_CHECK_INTERVAL
    time.now += 0.5
    duty.run(time.now)
    assert sent == [(child.pid, signal.SIGTERM)]
    assert child.progress[protocol.PROGRESS_TERM] == 1.0  # the master's word: the child honours this SIGTERM
    assert child.kill_reason == KILL_TIMEOUT and child.term_job == (child.inflight[0].seq, 1)
    assert duty.next_due() == time.now + GRACE
    time.now += GRACE - 0.1
    duty.run(time.now)
    assert len(sent) == 1  # the grace is not over
    time.now += 0.1
    duty.run(time.now)
    assert sent[-1] == (child.pid, signal.SIGKILL) and duty.next_due() == math.inf


def test_a_priority_without_a_limit_runs_on_and_the_duty_is_never_due(sent: list[tuple[int, int]]) -> None:
    time = FakeTime()
    kids = make_children(time)
    running(kids, [job(1, LOW)], index=0, since=time.now - 10 * 3600)
    duty = RunTimeLimits(kids)
    assert duty.next_due() == math.inf
    duty.run(time.now)
    assert sent == []


def test_a_task_s_own_timeout_comes_before_its_priority_s(sent: list[tuple[int, int]]) -> None:
    time = FakeTime()
    kids = make_children(time, timeouts={"quick": 2.0})
    child = running(kids, [job(1, LOW, "quick")], index=0, since=time.now)
    duty = RunTimeLimits(kids)
    assert duty.next_due() <= time.now  # LOW has no limit, the task has one
    time.now += 2.5
    duty.run(time.now)
    assert sent == [(child.pid, signal.SIGTERM)]


def test_cancelling_a_running_job_stops_its_child_and_only_that_job(sent: list[tuple[int, int]]) -> None:
    time = FakeTime()
    kids = make_children(time)
    child = running(kids, [job(1), job(2), job(3)], index=1, since=time.now)
    assert not kids.cancel_job(3, "an operator")  # not begun: nothing to stop (the database cancels it)
    assert not kids.cancel_job(1, "an operator")  # over
    assert sent == []
    assert kids.cancel_job(2, "an operator")
    assert sent == [(child.pid, signal.SIGTERM)] and child.kill_reason == KILL_CANCEL
    assert kids.cancel_job(2, "an operator")  # already being stopped for it: no second signal
    assert len(sent) == 1
    time.now += GRACE
    RunTimeLimits(kids).run(time.now)
    assert sent[-1] == (child.pid, signal.SIGKILL)
