"""Issue 13 in real pools (subprocesses) on SQLite and MariaDB: unknown commands handed back,
per-task retry and time limits, --queues, children replaced after N jobs, and cron tasks run at
their slots by pools whose clock the test moves."""
from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import fastsched
import tests.taskjobs  # noqa: F401 - registers the tasks: an add of mail_record goes to its queue
from fastsched.jobs import JobState
from tests.test_pool import PoolProcess, all_done, pools, wait_for  # noqa: F401 - pools is a fixture


@pytest.fixture
def q(dsn: str) -> Any:
    queue = fastsched.connect(dsn)
    yield queue
    queue.close()


def lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_a_pool_one_release_behind_hands_unknown_commands_back(dsn, q, tmp_path, pools):  # noqa: F811
    out = tmp_path / "out.jsonl"
    newer = q.add(30, "async_record", str(out), 1)  # registered by tests.taskjobs only
    doomed = q.add(30, "NeverRegisteredAnywhere")
    older = pools(dsn, imports=["tests.pooljobs"], retry_limit=50, retry_delay="0.1")
    try:
        wait_for(lambda: q.get(newer).retrial >= 1, what="the unknown command to be handed back")
    finally:
        older.stop()
    job = q.get(newer)
    assert job.state in (JobState.DEFERRED, JobState.WAITING), job
    assert (job.last_error or "").startswith("unknown command: async_record (")
    assert lines(out) == [], "an unregistered command is never run"
    from fastsched import explain, status

    shown = status.collect(q.backend)
    assert [(e["command"], e["jobs"]) for e in shown["handed_back"]] == [
        ("NeverRegisteredAnywhere", 1), ("async_record", 1)
    ]
    assert shown["handed_back"][1]["last_error"] == job.last_error  # the reason, as status --json shows it
    assert f"async_record: 1 pending job, last error: {job.last_error}" in status.render_text(shown)
    # Deferred, or waiting again once its retry delay is past: either way explain gives the reason.
    for when, state in ((job.next_try - dt.timedelta(seconds=0.05), "deferred"), (job.next_try, "waiting")):
        facts = explain.explain(q.backend, newer, when)
        assert facts["state"] == state
        assert "its last error: unknown command: async_record" in " ".join(facts["lines"]), facts["lines"]
    upgraded = pools(dsn, imports=["tests.taskjobs"], retry_limit=2, retry_delay="0.05")
    try:
        wait_for(lambda: all_done(q, [newer, doomed]), what="the upgraded pool to run it")
    finally:
        upgraded.stop()
    assert q.get(newer).state == JobState.DONE and [r["n"] for r in lines(out)] == [1]
    failed = q.get(doomed)
    assert failed.state == JobState.FAILED and failed.retrial == 2
    assert "unknown command: NeverRegisteredAnywhere" in (failed.last_error or "")


def test_a_task_s_retry_limit_delay_and_timeout_override_the_pool_s(dsn, q, tmp_path, pools):  # noqa: F811
    out = tmp_path / "out.jsonl"
    twice = q.add(30, "retry_twice", str(out))  # retry_limit=2, raises Retry(delay=0)
    flaky = q.add(30, "flaky", str(out))  # retry_limit=3, retry_delay=0.01 * retrial
    slow = q.add(30, "too_slow", str(out))  # timeout=0.5, retry_limit=0
    slow_async = q.add(30, "async_too_slow", str(out))  # the same, awaiting
    pool = pools(dsn, imports=["tests.taskjobs"], retry_limit=10, retry_delay="3600")
    try:
        wait_for(lambda: all_done(q, [twice, flaky, slow, slow_async]), timeout=30, what="every job to end")
    finally:
        pool.stop()
    events = [r["event"] for r in lines(out)]
    assert events.count("retry") == 3, "retry_limit=2: three attempts, not the pool's 11"
    assert events.count("flaky") == 4, "retry_limit=3, and its own delays, not the pool's hour"
    assert events.count("too_slow") == 1
    assert q.get(twice).state == JobState.FAILED and q.get(twice).retrial == 2
    assert q.get(flaky).state == JobState.FAILED and "still flaky" in (q.get(flaky).last_error or "")
    for job_id in (slow, slow_async):
        stopped = q.get(job_id)
        assert stopped.state == JobState.FAILED and "0.5 s timeout" in (stopped.last_error or ""), stopped
    assert events.count("async_too_slow") == 1 and "async_too_slow_end" not in events


def test_a_pool_with_queues_claims_only_from_them(dsn, q, tmp_path, pools):  # noqa: F811
    out = tmp_path / "out.jsonl"
    mail = [q.add(30, "mail_record", str(out), n) for n in range(3)]  # the task's queue="mail"
    assert {q.get(i).queue for i in mail} == {"mail"}
    other = [q.add({"priority": fastsched.PRIORITY_CRITICAL}, "record_pid", str(out), n) for n in range(3)]
    mail_pool = pools(dsn, imports=["tests.taskjobs"], queues=["mail"])
    try:
        wait_for(lambda: all_done(q, mail), what="the mail jobs")
        assert all(q.get(i).state == JobState.WAITING for i in other), "not mail's: left waiting"
        shown = fastsched.connect(dsn).backend.processes()
        assert [p.queues for p in shown if p.role == "master"] == [("mail",)]
    finally:
        mail_pool.stop()
    every = pools(dsn, imports=["tests.taskjobs"])
    try:
        wait_for(lambda: all_done(q, other), what="a pool of every queue to run the rest")
    finally:
        every.stop()
    assert sorted(r["n"] for r in lines(out) if r["event"] == "mail") == [0, 1, 2]


def test_a_child_is_replaced_after_max_jobs_per_child_without_a_crash(dsn, q, tmp_path, pools):  # noqa: F811
    out = tmp_path / "out.jsonl"
    ids = [q.add(30, "record_pid", str(out), n) for n in range(8)]
    pool = pools(dsn, imports=["tests.taskjobs"], workers=1, fetch_limit=1, max_jobs_per_child=2)
    try:
        wait_for(lambda: all_done(q, ids), what="every job")
    finally:
        pool.stop()
    pids = [r["pid"] for r in lines(out)]
    assert len(pids) == 8 and len(set(pids)) == 4, pids  # two jobs per child
    assert all(q.get(i).state == JobState.DONE and q.get(i).crashes == 0 for i in ids)
    log = pool.log()
    assert log.count("it was given 2 jobs (--max-jobs-per-child 2)") >= 3, log
    assert " died " not in log and "0 crashed" in log, log


def test_a_child_over_max_memory_per_child_is_replaced_after_its_batch(dsn, q, tmp_path, pools):  # noqa: F811
    out = tmp_path / "out.jsonl"
    ids = [q.add(30, "record_pid", str(out), n) for n in range(3)]
    # 1 MB: any Python child is past it after its first batch.
    pool = pools(dsn, imports=["tests.taskjobs"], workers=1, fetch_limit=1, max_memory_per_child=1)
    try:
        wait_for(lambda: all_done(q, ids), what="every job")
    finally:
        pool.stop()
    pids = [r["pid"] for r in lines(out)]
    # Memory is read when a batch ends: a batch already sent ahead to the child (prefetched) still
    # runs there, so a child runs at most two of these one-job batches.
    assert len(pids) == 3 and len(set(pids)) >= 2 and max(pids.count(pid) for pid in pids) <= 2, pids
    assert all(q.get(i).state == JobState.DONE and q.get(i).crashes == 0 for i in ids)
    assert "(--max-memory-per-child 1)" in pool.log()


def test_the_start_flags_and_their_variables(monkeypatch):
    import argparse

    from fastsched.cli.options import START_OPTIONS, build_settings
    from fastsched.errors import ConfigError

    names = {option.flag: option.env for option in START_OPTIONS}
    assert names["--queues"] == "FASTSCHED_QUEUES"
    assert names["--max-jobs-per-child"] == "FASTSCHED_MAX_JOBS_PER_CHILD"
    assert names["--max-memory-per-child"] == "FASTSCHED_MAX_MEMORY_PER_CHILD"
    from fastsched.cli import main as _  # noqa: F401 - the parser of start
    from fastsched.cli.common import add_start_options

    parser = argparse.ArgumentParser()
    add_start_options(parser, "queues", "max_jobs_per_child", "max_memory_per_child")
    args = parser.parse_args(["--queues", "mail,default", "--max-jobs-per-child", "100"])
    settings, _sources = build_settings(args, {"FASTSCHED_MAX_MEMORY_PER_CHILD": "200"})
    assert (settings.queues, settings.max_jobs_per_child, settings.max_memory_per_child) == (
        ("mail", "default"), 100, 200.0)
    settings, _sources = build_settings(parser.parse_args([]), {"FASTSCHED_QUEUES": "reports"})
    assert settings.queues == ("reports",)
    with pytest.raises(ConfigError, match="queue 'bad name' contains ' '"):
        build_settings(parser.parse_args(["--queues", "bad name"]), {})
    with pytest.raises(ConfigError, match="--max-jobs-per-child"):
        build_settings(parser.parse_args(["--max-jobs-per-child", "-1"]), {})


# --- cron tasks in real pools, on a clock the test moves ------------------------------------------


class ClockedPoolProcess(PoolProcess):
    launcher = ("-m", "tests.clocked_pool")  # the wall clock is the time in $FASTSCHED_TEST_CLOCK


@pytest.fixture
def clocked_pools(tmp_path: Path) -> Iterator[Callable[..., PoolProcess]]:
    started: list[PoolProcess] = []

    def start(dsn: str, **settings: Any) -> PoolProcess:
        pool = ClockedPoolProcess(dsn, tmp_path / f"clocked{len(started)}.log", **settings)
        started.append(pool)
        return pool

    yield start
    for pool in started:
        pool.close()
        print(f"--- log of pool pid {pool.pid} ---\n{pool.log_path.read_text()}")


def set_clock(path: Path, at: dt.datetime) -> None:
    staged = path.with_name(path.name + ".new")
    staged.write_text(at.isoformat())
    os.replace(staged, path)  # a master never reads half a time


def test_a_cron_task_runs_at_its_slot_once_across_two_masters_and_missed_slots_once(
    dsn, q, tmp_path, clocked_pools
):
    from tests.poolcron import CRON, TZ

    clock, runs, calls = tmp_path / "clock", tmp_path / "runs.jsonl", tmp_path / "calls.jsonl"
    env = {"FASTSCHED_TEST_CLOCK": str(clock), "POOLCRON_RUNS": str(runs), "FASTSCHED_TEST_PERIODIC_CALLS": str(calls)}
    assert (CRON, TZ) == ("5 4 * * *", "Europe/Berlin")  # 03:05 UTC in January

    def start_two() -> list[PoolProcess]:
        return [
            clocked_pools(dsn, host_id=f"cron{n}", workers=1, imports=["tests.pooljobs", "tests.poolcron"], env=env,
                          retention=30 * 86400.0)  # the clock jumps days: keep the done jobs to check
            for n in (1, 2)
        ]

    def looked(pool_pids: list[int], at: dt.datetime) -> list[dict[str, Any]]:
        """The masters' run_periodic calls at ``at``, once each of them has made one."""
        seen = [c for c in lines(calls) if c["task"] == "berlin_morning" and c["now"] == at.isoformat()]
        return seen if {c["pid"] for c in seen} >= set(pool_pids) else []

    def one_slot(pool_pids: list[int], at: dt.datetime, runs_before: int) -> int:
        """Both masters look at the clock's time ``at``, a slot: exactly one queues the job, which runs once."""
        set_clock(clock, at)
        seen = wait_for(lambda: looked(pool_pids, at), timeout=60, what=f"both masters at {at}")
        ran = wait_for(lambda: lines(runs)[runs_before:], timeout=60, what=f"the run of {at}")
        queued = [c["job"] for c in lines(calls) if c["job"] is not None and c["now"] == at.isoformat()]
        assert len(queued) == 1, queued  # one master queued it; the other found the lease moved on
        assert [r["id"] for r in ran] == queued
        job = q.get(queued[0])
        assert (job.command, job.created, job.priority) == ("berlin_morning", at, fastsched.PRIORITY_HIGH)
        assert len(seen) >= 2
        return queued[0]

    set_clock(clock, dt.datetime(2030, 1, 2, 3, 4, 30))
    first_pools = start_two()
    pids = [p.pid for p in first_pools]
    before = wait_for(lambda: looked(pids, dt.datetime(2030, 1, 2, 3, 4, 30)), timeout=60, what="both masters")
    assert all(c["job"] is None for c in before), "a cron task first runs at its next slot, not at once"

    first = one_slot(pids, dt.datetime(2030, 1, 2, 3, 5), 0)
    # Later the same day: no slot, nothing queued, by either master.
    later = dt.datetime(2030, 1, 2, 3, 30)
    set_clock(clock, later)
    assert all(c["job"] is None for c in wait_for(lambda: looked(pids, later), timeout=60, what="both at 03:30"))
    assert all(p.stop() == 0 for p in first_pools)

    # No pool on Jan 3, 4 and 5: the three missed slots come to one job, then Jan 6 is next.
    missed = dt.datetime(2030, 1, 5, 9, 0)
    set_clock(clock, missed)
    second_pools = start_two()
    pids = [p.pid for p in second_pools]
    catch_up = [c for c in wait_for(lambda: looked(pids, missed), timeout=60, what="the restarted masters")]
    queued = [c["job"] for c in catch_up if c["job"] is not None]
    assert len(queued) == 1 and queued[0] != first, catch_up
    wait_for(lambda: len(lines(runs)) == 2, timeout=60, what="the catch-up run")
    after_catch_up = dt.datetime(2030, 1, 6, 3, 4, 59)
    set_clock(clock, after_catch_up)
    assert all(c["job"] is None for c in wait_for(lambda: looked(pids, after_catch_up), timeout=60, what="both"))
    third = one_slot(pids, dt.datetime(2030, 1, 6, 3, 5), 2)
    assert all(p.stop() == 0 for p in second_pools)

    assert [r["id"] for r in lines(runs)] == [first, queued[0], third]  # each queued job ran once
    assert all(q.get(i).state is JobState.DONE for i in (first, queued[0], third))


def test_a_failing_on_child_start_hook_runs_no_job_and_its_children_are_replaced_slowly(
    dsn, q, tmp_path, pools  # noqa: F811
):
    from fastsched.child_process import CHILD_START_FAILURE_PAUSE

    hooks, ran = tmp_path / "hooks.jsonl", tmp_path / "ran.jsonl"
    job_id = q.add(30, "needs_the_service", str(ran))
    started = time.monotonic()
    pool = pools(dsn, workers=2, imports=["tests.pooljobs", "tests.failinghook"], env={"FAILINGHOOK_FILE": str(hooks)})
    try:
        # Four hook runs on two workers: the second generation, started only once the first exited.
        wait_for(lambda: len(lines(hooks)) >= 4, timeout=60, what="the replaced children's hooks")
        elapsed = time.monotonic() - started
    finally:
        assert pool.stop() == 0
    assert elapsed >= CHILD_START_FAILURE_PAUSE, "a child whose hook failed waits before it exits"
    assert lines(ran) == [], "no job runs in a child whose on_child_start hook failed"
    job = q.get(job_id)
    assert (job.state, job.retrial, job.crashes) == (JobState.WAITING, 0, 0), job  # released, never charged
    assert "on_child_start hook tests.failinghook.connect_to_a_service_that_is_down failed" in pool.log()
