"""settle: what a child reported about one batch -> the outcome of each job. In-process, no I/O."""
from __future__ import annotations

import datetime as dt
import random

from fastsched.jobs import ClaimedJob, Failure, Retry
from fastsched.master.settle import BatchReport, Ended, JobEvent, SettlePolicy, settle
from fastsched.protocol import DEFER, ERROR, FATAL, Note

NOW = dt.datetime(2030, 1, 2, 3, 4, 5)
POLICY = SettlePolicy(
    retry_limit=3, crash_limit=3, fixed_delay=10.0, max_duration_minutes={20: 2}, rng=random.Random(1)
)


def batch(count: int, *, retrial: int = 0, crashes: int = 0) -> list[ClaimedJob]:
    return [ClaimedJob(100 + i, "cmd", "[]", 20, retrial, crashes) for i in range(count)]


def test_a_reply_without_notes_is_every_started_job_done_and_the_rest_released() -> None:
    jobs = batch(5)
    result = settle(jobs, BatchReport(Ended.REPLIED, processed=3), POLICY, NOW)
    assert result.outcomes.done == [100, 101, 102]
    assert result.outcomes.released == [103, 104]
    assert not result.outcomes.retry and not result.outcomes.failed and not result.decided


def test_notes_decide_their_jobs_and_the_others_are_done() -> None:
    jobs = batch(4)
    notes = [Note(0, ERROR, "Traceback: boom"), Note(1, DEFER, 30.0), Note(2, FATAL, "not a JSON list")]
    result = settle(jobs, BatchReport(Ended.REPLIED, processed=4, notes=notes), POLICY, NOW)
    assert result.outcomes.done == [103]
    raised, deferred = result.outcomes.retry
    assert (raised.id, raised.retrial, raised.next_try, raised.error) == (100, 1, NOW + dt.timedelta(seconds=10), "Traceback: boom")
    assert (deferred.id, deferred.next_try, deferred.error) == (101, NOW + dt.timedelta(seconds=30), None)
    (fatal,) = result.outcomes.failed
    assert (fatal.id, fatal.error) == (102, "not a JSON list")
    assert [(job.id, event) for job, event, _ in result.decided] == [
        (100, JobEvent.RAISED), (101, JobEvent.DEFERRED), (102, JobEvent.BAD_ARGUMENTS)
    ]


def test_only_the_first_note_of_a_job_counts_and_garbled_indexes_are_ignored() -> None:
    jobs = batch(2)
    notes = [Note(0, DEFER, None), Note(0, ERROR, "second"), Note(7, ERROR, "no such job")]
    result = settle(jobs, BatchReport(Ended.REPLIED, processed=2, notes=notes), POLICY, NOW)
    assert [r.id for r in result.outcomes.retry] == [100] and result.outcomes.retry[0].error is None
    assert result.outcomes.done == [101]


def test_a_job_past_the_retry_limit_is_failed_not_retried() -> None:
    jobs = batch(1, retrial=3)
    result = settle(jobs, BatchReport(Ended.REPLIED, processed=1, notes=[Note(0, ERROR, "again")]), POLICY, NOW)
    (failure,) = result.outcomes.failed
    assert failure.id == 100 and "retry limit 3" in failure.error and not result.outcomes.retry


def test_a_child_that_never_began_the_batch_releases_all_of_it() -> None:
    for ended in (Ended.CRASHED, Ended.KILLED, Ended.TIMED_OUT):
        result = settle(batch(3), BatchReport(ended, position=-1, how="killed by signal 9"), POLICY, NOW)
        assert result.outcomes.released == [100, 101, 102] and not result.decided


def test_a_crash_mid_batch_counts_a_crash_for_the_running_job_only() -> None:
    jobs = batch(4)
    report = BatchReport(Ended.CRASHED, position=2, notes=[Note(0, ERROR, "boom")], how="killed by signal 9")
    result = settle(jobs, report, POLICY, NOW)
    assert result.outcomes.done == [101]
    assert result.outcomes.released == [103]
    retried, crashed = result.outcomes.retry
    assert retried.id == 100 and retried.retrial == 1
    assert (crashed.id, crashed.crashes, crashed.retrial, crashed.next_try) == (102, 1, 0, NOW)
    assert "killed by signal 9" in (crashed.error or "")
    assert result.count(JobEvent.CRASHED) == 1


def test_the_crash_limit_fails_a_poison_pill() -> None:
    result = settle(batch(1, crashes=2), BatchReport(Ended.CRASHED, position=0, how="exit code 3"), POLICY, NOW)
    (failure,) = result.outcomes.failed
    assert failure.crashes == 3 and "poison pill" in failure.error and not result.outcomes.retry


def test_a_child_that_died_between_two_jobs_penalises_neither() -> None:
    """Its note for the job the progress slot shows arrived: that job had ended."""
    jobs = batch(3)
    report = BatchReport(Ended.CRASHED, position=1, notes=[Note(1, DEFER, None)], how="killed by signal 9")
    result = settle(jobs, report, POLICY, NOW)
    assert result.outcomes.done == [100]
    assert [r.id for r in result.outcomes.retry] == [101] and result.decided[0][1] is JobEvent.DEFERRED
    assert result.outcomes.released == [102]
    assert result.count(JobEvent.CRASHED) == 0


def test_a_job_stopped_for_its_run_time_limit_is_a_failed_attempt() -> None:
    jobs = batch(3)
    result = settle(jobs, BatchReport(Ended.TIMED_OUT, position=1, stopped=1), POLICY, NOW)
    assert result.outcomes.done == [100] and result.outcomes.released == [102]
    (retry,) = result.outcomes.retry
    assert retry.id == 101 and retry.retrial == 1 and "2-minute run-time limit" in (retry.error or "")
    assert result.count(JobEvent.TIMED_OUT) == 1


def test_a_timeout_meant_for_another_job_releases_the_running_one() -> None:
    result = settle(batch(3), BatchReport(Ended.TIMED_OUT, position=2, stopped=1), POLICY, NOW)
    assert result.outcomes.done == [100, 101] and result.outcomes.released == [102] and not result.decided


def test_a_child_killed_by_us_for_another_reason_releases_the_running_job_without_penalty() -> None:
    result = settle(batch(3), BatchReport(Ended.KILLED, position=1), POLICY, NOW)
    assert result.outcomes.done == [100] and result.outcomes.released == [101, 102] and not result.decided


def test_a_batch_taken_over_by_another_master_has_no_outcome_of_ours() -> None:
    result = settle(batch(3), BatchReport(Ended.LOST, position=1), POLICY, NOW)
    assert not result.outcomes and not result.decided


def test_every_job_gets_exactly_one_outcome_whatever_the_report() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        jobs = batch(rng.randint(1, 6), retrial=rng.randint(0, 4), crashes=rng.randint(0, 3))
        notes = []
        for _ in range(rng.randint(0, 4)):
            kind = rng.choice((ERROR, DEFER, FATAL))
            notes.append(Note(rng.randint(-1, 7), kind, rng.choice((None, 5.0)) if kind == DEFER else "x"))
        ended = rng.choice([e for e in Ended if e is not Ended.LOST])
        report = BatchReport(
            ended, processed=rng.randint(0, len(jobs)), position=rng.randint(-1, len(jobs)), notes=notes,
            stopped=rng.randint(-1, len(jobs)),
        )
        o = settle(jobs, report, POLICY, NOW).outcomes
        ids = o.done + o.released + o.cancelled + [r.id for r in o.retry] + [f.id for f in o.failed]
        assert sorted(ids) == [job.id for job in jobs], (report, o)
        assert all(isinstance(r, Retry) for r in o.retry) and all(isinstance(f, Failure) for f in o.failed)
