"""Issue 13 in real pools (subprocesses) on SQLite and MariaDB: unknown commands handed back,
per-task retry and time limits, --queues, and children replaced after N jobs."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import fastsched
import tests.taskjobs  # noqa: F401 - registers the tasks: an add of mail_record goes to its queue
from fastsched.jobs import JobState
from tests.test_pool import all_done, pools, wait_for  # noqa: F401 - pools is a fixture


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
    assert shown["handed_back"] == [{"command": "NeverRegisteredAnywhere", "jobs": 1}, {"command": "async_record", "jobs": 1}]
    assert "async_record: 1 pending job" in status.render_text(shown)
    assert "unknown command: async_record" in " ".join(explain.explain(q.backend, newer)["lines"])
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
