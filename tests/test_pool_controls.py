"""Operators' controls against running pools, on both backends: two masters claim no paused work
(a whole priority, a command at one priority; jobs added before and after the pause), running work
is never touched by a pause, and resumed work runs once; a cancel reaches the master (of two) that
runs the job, whose child is stopped (SIGTERM, or SIGKILL after the grace), the job ends
cancelled and the rest of its batch runs once."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
from test_http import cli_env
from test_pool import events, pools, q, rec, wait_for  # noqa: F401 - fixtures

import fastsched
from fastsched.errors import InvalidState
from fastsched.jobs import JobState
from fastsched.priority import Priority

QUIET_SECONDS = 1.5  # how long the paused work is watched not being claimed, once all else is done


# Masters started with --queues claim through queries of their own (one range per queue).
@pytest.mark.parametrize("queues", [(), ("default", "mail")], ids=["every-queue", "with-queues"])
def test_two_masters_claim_no_paused_work_until_it_is_resumed(dsn, q, rec, pools, queues):  # noqa: F811
    q.pause(priority="LOW", by="test")
    q.pause(priority="HIGH", command="record", by="test")
    paused = q.add_many([(Priority.LOW, "record", rec, f"low-{i}") for i in range(6)])
    paused += q.add_many([(Priority.HIGH, "record", rec, f"high-{i}") for i in range(6)])
    free = q.add_many([(Priority.MEDIUM, "record", rec, f"medium-{i}") for i in range(6)])
    free += q.add_many([(Priority.HIGH, "touch", rec + f".touch{i}") for i in range(3)])
    pools(dsn, host_id="m1", fetch_limit=2, queues=queues)
    pools(dsn, host_id="m2", fetch_limit=2, queues=queues)
    # Added while the masters run, after the pause: they are not set aside, the claims check them.
    paused += [q.add(Priority.HIGH, "record", rec, "high-late"), q.add(Priority.LOW, "record", rec, "low-late")]
    paused.append(q.add({"priority": Priority.LOW, "queue": "mail"}, "record", rec, "low-mail"))
    free.append(q.add(Priority.NEGLIGIBLE, "record", rec, "negligible"))

    wait_for(lambda: all(q.get(i).state is JobState.DONE for i in free), 30, "the work nothing pauses")
    time.sleep(QUIET_SECONDS)  # more claim cycles of both masters, with the paused work waiting
    started = {r["n"] for r in events(rec, "start")}
    assert not {n for n in started if str(n).startswith(("low", "high"))}, started
    assert {q.get(i).state for i in paused} == {JobState.WAITING}

    assert q.resume(priority="LOW", by="test") == 1
    assert q.resume(priority="HIGH", command="record", by="test") == 1
    wait_for(lambda: all(q.get(i).state is JobState.DONE for i in paused), 30, "the resumed work")
    runs = Counter(r["n"] for r in events(rec, "start"))
    assert all(count == 1 for count in runs.values()), runs
    assert len(runs) == len(paused) + len(free) - 3  # the touch jobs record no start
    assert {q.get(i).host for i in paused} <= {"m1", "m2"}


def test_a_pause_never_touches_what_already_runs(dsn, q, rec, pools):  # noqa: F811
    job = q.add(Priority.LOW, "record", rec, "running", 1.5)
    pools(dsn, host_id="m1")
    wait_for(lambda: events(rec, "start"), 30, "the job to start")
    q.pause(priority="LOW")
    q.pause(command="record")
    wait_for(lambda: q.get(job).state is JobState.DONE, 30, "the running job to finish")
    assert [r["n"] for r in events(rec, "end")] == ["running"]
    with fastsched.connect(dsn) as other:
        assert len(other.paused()) == 2


def _cancel_when_started(queue: fastsched.Queue, records: str, n: str, job_id: int) -> None:
    wait_for(lambda: any(r["n"] == n for r in events(records, "start")), 30, f"job {n} to start")
    assert queue.cancel(job_id, by="ops@test").state is JobState.RUNNING  # a request: its master stops it


def test_cancel_reaches_the_master_running_the_job_and_loses_nothing_else_of_its_batch(
    dsn, q, rec, pools  # noqa: F811
):
    # One MEDIUM batch of four for one child: the long job first, three short ones queued behind it.
    ids = q.add_many([(Priority.MEDIUM, "record", rec, "long", 60)] +
                     [(Priority.MEDIUM, "record", rec, f"short-{i}") for i in range(3)])
    a = pools(dsn, host_id="m1", fetch_limit=4, workers=1)
    b = pools(dsn, host_id="m2", fetch_limit=4, workers=1)
    _cancel_when_started(q, rec, "long", ids[0])
    wait_for(lambda: q.get(ids[0]).state is JobState.CANCELLED, 30, "the job to end cancelled")
    wait_for(lambda: all(q.get(i).state is JobState.DONE for i in ids[1:]), 30, "the rest of its batch")
    job = q.get(ids[0])
    assert job.last_error == "cancelled by ops@test" and job.finished is not None and job.retrial == 0
    assert q.backend.cancel_request(ids[0]) is None
    runs = Counter(r["n"] for r in events(rec, "start"))
    assert runs == {"long": 1, "short-0": 1, "short-1": 1, "short-2": 1}, runs  # released, run once, nothing lost
    assert not [r for r in events(rec, "end") if r["n"] == "long"]
    assert {s.priority: s for s in q.stats()}[30].cancelled == 1
    with pytest.raises(InvalidState, match="cancelled"):
        q.retry(ids[0])
    a.stop()
    b.stop()
    assert q.get(ids[0]).state is JobState.CANCELLED  # never retried
    assert f"job {ids[0]} record cancelled by ops@test while running" in a.log() + b.log()


def test_a_job_that_ignores_sigterm_is_killed_after_the_grace_and_ends_cancelled(dsn, q, rec, pools):  # noqa: F811
    job_id = q.add(Priority.LOW, "stubborn", rec, "stubborn", 60)
    pool = pools(dsn, host_id="m1", kill_grace=0.5)
    _cancel_when_started(q, rec, "stubborn", job_id)
    wait_for(lambda: q.get(job_id).state is JobState.CANCELLED, 30, "the job to end cancelled")
    assert "SIGKILL" in pool.log()
    assert q.get(job_id).last_error == "cancelled by ops@test"


@pytest.mark.parametrize("shutdown_grace", [0.5, 0.0])
def test_a_cancelled_job_gets_no_longer_to_stop_than_a_stop_of_the_pool_would_give_it(
    dsn, q, rec, pools, shutdown_grace  # noqa: F811
):
    job_id = q.add(Priority.LOW, "stubborn", rec, "stubborn", 120)
    pool = pools(dsn, host_id="m1", kill_grace=60, shutdown_grace=shutdown_grace)
    _cancel_when_started(q, rec, "stubborn", job_id)
    wait_for(lambda: q.get(job_id).state is JobState.CANCELLED, 20, "the job to end cancelled")  # not 60 s
    assert f"(SIGKILL after {shutdown_grace:g}s)" in pool.log()


def test_a_cancel_reaches_a_pool_that_is_stopping(dsn, q, rec, pools):  # noqa: F811
    job_id = q.add(Priority.HIGH, "record", rec, "holds up the stop", 120)
    pool = pools(dsn, host_id="m1", shutdown_grace=120)
    wait_for(lambda: events(rec, "start"), 30, "the job to start")
    pool.signal(signal.SIGTERM)  # a graceful stop: it waits for the running job, up to the grace
    wait_for(lambda: "stopping: no new claims" in pool.log(), 30, "the pool to begin its stop")
    q.cancel(job_id, by="ops@test")
    assert pool.wait(30) == 0  # not 120 s: the cancelled job no longer holds the stop up
    assert q.get(job_id).state is JobState.CANCELLED and q.get(job_id).last_error == "cancelled by ops@test"


def test_cancel_from_the_command_line_of_another_process(dsn, q, rec, pools):  # noqa: F811
    job_id = q.add(Priority.HIGH, "record", rec, "long", 60)
    pools(dsn, host_id="m2")
    wait_for(lambda: events(rec, "start"), 30, "the job to start")
    result = subprocess.run([sys.executable, "-m", "fastsched", "cancel", str(job_id)], env=cli_env(FASTSCHED_DSN=dsn),
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert f"asked the master of host 'm2' to stop job #{job_id} record" in result.stdout
    wait_for(lambda: q.get(job_id).state is JobState.CANCELLED, 30, "the job to end cancelled")
    assert (q.get(job_id).last_error or "").startswith("cancelled by ")
    action = q.actions()[0]
    assert (action.action, action.jobs) == ("cancel", 1) and "asked its master to stop it" in action.target
