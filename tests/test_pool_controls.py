"""Operators' controls against running pools, on both backends: two masters claim no paused work
(a whole priority, a command at one priority; jobs added before and after the pause), running work
is never touched by a pause, and resumed work runs once."""
from __future__ import annotations

import time
from collections import Counter

from test_pool import events, pools, q, rec, wait_for  # noqa: F401 - fixtures

import fastsched
from fastsched.jobs import JobState
from fastsched.priority import Priority

QUIET_SECONDS = 1.5  # how long the paused work is watched not being claimed, once all else is done


def test_two_masters_claim_no_paused_work_until_it_is_resumed(dsn, q, rec, pools):  # noqa: F811
    q.pause(priority="LOW", by="test")
    q.pause(priority="HIGH", command="record", by="test")
    paused = q.add_many([(Priority.LOW, "record", rec, f"low-{i}") for i in range(6)])
    paused += q.add_many([(Priority.HIGH, "record", rec, f"high-{i}") for i in range(6)])
    free = q.add_many([(Priority.MEDIUM, "record", rec, f"medium-{i}") for i in range(6)])
    free += q.add_many([(Priority.HIGH, "touch", rec + f".touch{i}") for i in range(3)])
    pools(dsn, host_id="m1", fetch_limit=2)
    pools(dsn, host_id="m2", fetch_limit=2)
    # Added while the masters run, after the pause: they are not set aside, the claims check them.
    paused += [q.add(Priority.HIGH, "record", rec, "high-late"), q.add(Priority.LOW, "record", rec, "low-late")]
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
