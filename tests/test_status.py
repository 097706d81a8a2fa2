"""``fastsched-pool status`` and ``explain`` on SQLite and MariaDB.

The queue is put in known states through the storage contract (claims by a registered master,
outcomes, failures), so every number the commands print can be checked exactly. Most runs call
``fastsched.cli.main`` in-process (a subprocess costs a second of imports on a busy machine); a
few run ``python -m fastsched`` to cover the console path, exit codes and --watch.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import fastsched
from fastsched import cli as cli_mod
from fastsched import core, status, tasks
from fastsched.backends import open_backend
from fastsched.jobs import Outcomes
from tests.conftest import fail_jobs

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 60  # seconds any one command may take
HOST = "status-host"
MASTER = 4242
CHILDREN = [4243, 4244, 4245]


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTSCHED_") or k == "FASTSCHED_IMPL"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return env


def fastsched_pool(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fastsched", *args], env=env or cli_env(), capture_output=True, text=True,
        timeout=TIMEOUT, check=False,
    )


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Any:
    """``cli(*args)`` runs ``fastsched-pool args`` in-process: a CompletedProcess-like result."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        capsys.readouterr()
        code = cli_mod.main(list(args))
        captured = capsys.readouterr()
        return subprocess.CompletedProcess(list(args), code, captured.out, captured.err)

    return run


@pytest.fixture
def rundir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="fsst", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def backend(dsn: str) -> Iterator[Any]:
    b = open_backend(dsn)
    b.init_schema()
    yield b
    b.close()


def now() -> dt.datetime:
    return status.utcnow()


def register(backend: Any, *, at: dt.datetime | None = None, workers: int = 3) -> None:
    at = at or now()
    backend.register_master(HOST, MASTER, workers, at)
    backend.register_children(HOST, MASTER, CHILDREN, at)


def claim(backend: Any, rank: int, count: int, pids: list[int]) -> list[int]:
    """Claim ``count`` jobs of priority rank ``rank`` for ``pids`` (one job per child)."""
    wanted = [0] * 5
    wanted[rank] = count
    batches = backend.claim(wanted, pids, HOST, 1, now())
    return [job.id for batch in batches for job in batch.jobs]


def build_queue(dsn: str, backend: Any) -> dict[str, Any]:
    """HIGH: 4 waiting, 1 running; MEDIUM: 2 waiting, 1 deferred, 1 failed; LOW: 2 done, 1 running."""
    q = fastsched.connect(dsn)
    try:
        high = q.add_many([(fastsched.Priority.HIGH, "Notifier", i) for i in range(5)])
        medium = q.add_many([(fastsched.Priority.MEDIUM, "Delivery", i) for i in range(3)])
        deferred = q.add({"priority": fastsched.Priority.MEDIUM, "delay": 600}, "Delivery", "later")
        low = q.add_many([(fastsched.Priority.LOW, "Cleanup", i) for i in range(3)])
    finally:
        q.close()
    register(backend)
    running_high = claim(backend, 1, 1, CHILDREN[:1])
    done_low = claim(backend, 3, 2, CHILDREN[1:3])
    backend.write_outcomes(HOST, now(), Outcomes(done=done_low))
    running_low = claim(backend, 3, 1, CHILDREN[1:2])
    fail_jobs(backend, [medium[2]], "Traceback (most recent call last):\n  ...\nRuntimeError: mailbox full", now())
    return {"high": high, "medium": medium, "deferred": deferred, "low": low, "running_high": running_high,
            "running_low": running_low, "done_low": done_low}


def by_name(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in document["priorities"]}


# --- status -------------------------------------------------------------------------------------


def test_status_json_counts_every_state_and_the_scheduler_view(dsn, backend):
    build_queue(dsn, backend)
    result = fastsched_pool("status", "--json", "--dsn", dsn)  # the console command, for real
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["format"] == status.FORMAT
    p = by_name(document)
    assert (p["HIGH"]["waiting"], p["HIGH"]["running"], p["HIGH"]["workers"]) == (4, 1, 1)
    assert (p["MEDIUM"]["waiting"], p["MEDIUM"]["deferred"], p["MEDIUM"]["failed"]) == (2, 1, 1)
    assert (p["LOW"]["waiting"], p["LOW"]["running"], p["LOW"]["done_last_hour"]) == (0, 1, 2)
    assert p["CRITICAL"] == {**p["CRITICAL"], "waiting": 0, "running": 0, "in_play": False, "limit": None}
    assert p["HIGH"]["oldest_wait_seconds"] >= 0 and p["LOW"]["oldest_wait_seconds"] is None
    assert document["totals"] == {"waiting": 6, "deferred": 1, "running": 2, "failed": 1, "done_last_hour": 2}
    # In play: HIGH, MEDIUM (waiting) and LOW (a worker running); the limits are the core's.
    limits = core.quadratic_limits(3, 3)
    assert [p[n]["limit"] for n in ("HIGH", "MEDIUM", "LOW")] == limits
    assert [p[n]["share"] for n in ("HIGH", "MEDIUM", "LOW")] == [round(9 / 14, 4), round(4 / 14, 4), round(1 / 14, 4)]
    assert document["scheduler"] == {
        "active_workers": 3, "running_workers": 2, "priorities_in_play": 3,
        "next_priority": "MEDIUM",  # waiting and no worker: the starvation guard
    }
    assert document["jobs_per_minute"] == {"1": 2.0, "3": round(2 / 3, 1), "5": 0.4}
    (host,) = document["hosts"]
    (master,) = host["masters"]
    assert host["host"] == HOST and master["pid"] == MASTER and master["workers"] == 3 and master["alive"]
    assert [c["pid"] for c in master["children"]] == CHILDREN
    assert all(c["heartbeat_age_seconds"] < 30 for c in master["children"])
    (failed,) = document["failed_recent"]
    assert failed["command"] == "Delivery" and failed["name"] == "MEDIUM"
    assert failed["error_summary"] == "RuntimeError: mailbox full" and "Traceback" in failed["error"]
    assert "password" not in result.stdout


def test_status_text_is_a_table_with_hosts_and_failures(dsn, backend, cli):
    build_queue(dsn, backend)
    result = cli("status", "--dsn", dsn)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    rows = {line.split()[1]: line.split()[2:] for line in out.splitlines() if line[:2] in ("10", "20", "30", "40", "50")}
    assert rows["HIGH"][:4] == ["4", "0", "1", "0"]  # waiting, deferred, running, failed
    assert rows["MEDIUM"][:4] == ["2", "1", "0", "1"]
    assert rows["LOW"][:5] == ["0", "0", "1", "0", "2"]
    assert "the next free worker goes to MEDIUM" in out
    assert "jobs per minute: 2 over 1 min" in out
    assert f"master pid {MASTER}: 3 workers" in out and "alive" in out
    assert "children 4243, 4244, 4245" in out
    assert "RuntimeError: mailbox full" in out


def test_status_shows_a_master_past_its_lease_as_dead(dsn, backend, cli):
    register(backend, at=now() - dt.timedelta(seconds=120))
    result = cli("status", "--json", "--dsn", dsn, "--lease", "30")
    (master,) = json.loads(result.stdout)["hosts"][0]["masters"]
    assert master["alive"] is False and master["heartbeat_age_seconds"] >= 120
    assert json.loads(result.stdout)["scheduler"]["active_workers"] == 0
    text = cli("status", "--dsn", dsn, "--lease", "30").stdout
    assert "DEAD (no heartbeat for more than 30 s)" in text
    backend.unregister(HOST, MASTER)
    empty = cli("status", "--dsn", dsn)
    assert empty.returncode == 0 and "no pool master is registered" in empty.stdout


def test_status_watch_prints_one_json_document_per_reading_until_interrupted(sqlite_dsn):
    fastsched.connect(sqlite_dsn).add(fastsched.Priority.LOW, "Cleanup")
    process = subprocess.Popen(
        [sys.executable, "-m", "fastsched", "status", "--json", "--watch", "--interval", "0.1", "--dsn", sqlite_dsn],
        env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        first, second = process.stdout.readline(), process.stdout.readline()
        assert json.loads(first)["totals"]["waiting"] == 1 and json.loads(second)["format"] == status.FORMAT
        process.send_signal(signal.SIGINT)
        assert process.wait(TIMEOUT) == 0
    finally:
        process.kill()
        process.wait()


def test_status_rejects_a_bad_interval_and_an_unreachable_database():
    bad = fastsched_pool("status", "--watch", "--interval", "soon")
    assert bad.returncode == 2 and "--interval: invalid value 'soon'" in bad.stderr
    down = fastsched_pool("status", "--dsn", "mysql://root:hunter22@127.0.0.1:1/x")
    assert down.returncode == 3 and "hunter22" not in down.stderr + down.stdout


def test_collect_equals_the_command(dsn, backend, cli):
    build_queue(dsn, backend)
    mine = status.collect(backend, tasks=status.task_entries(tasks.default_registry))  # as this process has them
    theirs = json.loads(cli("status", "--json", "--dsn", dsn).stdout)
    for document in (mine, theirs):
        document.pop("generated_at")
        for host in document["hosts"]:
            for master in host["masters"]:
                for entry in (master, *master["children"]):
                    entry.pop("heartbeat_age_seconds")
        for p in document["priorities"]:
            p.pop("oldest_wait_seconds")
    assert mine == theirs


# --- explain ------------------------------------------------------------------------------------


@pytest.fixture
def explain(cli: Any) -> Any:
    def run(dsn: str, job_id: int) -> tuple[dict[str, Any], str, int]:
        as_json = cli("explain", str(job_id), "--json", "--dsn", dsn)
        text = cli("explain", str(job_id), "--dsn", dsn)
        assert as_json.returncode == text.returncode
        return json.loads(as_json.stdout), text.stdout, text.returncode

    return run


def explain_command(dsn: str, job_id: int) -> tuple[dict[str, Any], str, int]:
    as_json = fastsched_pool("explain", str(job_id), "--json", "--dsn", dsn)
    text = fastsched_pool("explain", str(job_id), "--dsn", dsn)
    assert as_json.returncode == text.returncode
    return json.loads(as_json.stdout), text.stdout, text.returncode


def test_explain_a_waiting_job_counts_the_jobs_ahead_and_its_share(dsn, backend):
    ids = build_queue(dsn, backend)
    facts, text, code = explain_command(dsn, ids["high"][4])  # the console command, for real
    assert code == 0 and facts["state"] == "waiting"
    scheduler = facts["scheduler"]
    assert scheduler["jobs_ahead"] == 3  # high[1..3]; high[0] is running
    assert (scheduler["workers"], scheduler["limit"], scheduler["active_workers"]) == (1, core.quadratic_limits(3, 3)[0], 3)
    assert scheduler["next_priority"] == "MEDIUM"
    assert f"Job #{ids['high'][4]} Notifier [4] (HIGH) is waiting" in text
    assert "3 HIGH jobs are ahead of it in the claim order" in text
    assert "3 priorities are in play with 3 workers; HIGH may hold 2 (a share of 64%) and holds 1" in text
    assert "The next free worker goes to MEDIUM: MEDIUM has work waiting and no worker" in text
    assert "1 of 3 active workers are free" in text
    assert f"returns #{ids['high'][4]} instead of a new job" in text  # dedup


def test_explain_deferred_running_done_failed_and_missing_jobs(dsn, backend, explain):
    ids = build_queue(dsn, backend)
    facts, text, _ = explain(dsn, ids["deferred"])
    assert facts["state"] == "deferred" and "it was added with a delay and runs from" in text
    assert "When it is due, 2 MEDIUM jobs with an earlier next_try will be ahead of it" in text

    (running,) = ids["running_high"]
    facts, text, _ = explain(dsn, running)
    assert facts["state"] == "running" and facts["job"]["pid"] == CHILDREN[0]
    assert "is running: claimed" in text and f"by child pid {CHILDREN[0]} of host '{HOST}'" in text

    facts, text, _ = explain(dsn, ids["done_low"][0])
    assert facts["state"] == "done" and "is done: it finished at" in text

    facts, text, _ = explain(dsn, ids["medium"][2])
    assert facts["state"] == "failed"
    assert "after 0 retrials and 0 crashes" in text and "RuntimeError: mailbox full" in text
    assert f"`fastsched-pool retry {ids['medium'][2]}`" in text

    facts, text, code = explain(dsn, 999_999)
    assert code == 1 and facts == {**facts, "found": False, "state": "not_found"}
    assert "No job has id 999999" in text and "purged" in text


def test_explain_tells_a_prefetched_batch_from_the_running_one(dsn, backend, explain):
    """A child given its next batch while it runs one (prefetch): both are its claims; explain says
    which one waits behind the other."""
    build_queue(dsn, backend)
    (running,) = claim(backend, 1, 1, CHILDREN[2:3])  # the child's running batch
    time.sleep(0.01)  # the next claim is later, as a prefetch always is
    (prefetched,) = claim(backend, 1, 1, CHILDREN[2:3])
    facts, text, _ = explain(dsn, prefetched)
    assert facts["state"] == "running" and facts["prefetched"] is True
    assert f"is claimed, in a prefetched batch: child pid {CHILDREN[2]} of host '{HOST}'" in text
    assert "(1 job still pending); it starts when that batch ends" in text
    facts, text, _ = explain(dsn, running)
    assert facts["prefetched"] is False and "is running: claimed" in text
    document = status.collect(backend)
    assert by_name(document)["HIGH"]["prefetched"] == 1 and by_name(document)["LOW"]["prefetched"] == 0
    text = status.render_text(document)
    assert "claimed ahead (prefetched): 1 of the running jobs are in batches sent to a child" in text


def test_explain_says_when_no_master_is_alive_and_how_dedup_applies(dsn, backend, explain):
    q = fastsched.connect(dsn)
    try:
        first = q.add(fastsched.Priority.LOW, "Cleanup", "a")
        twin = q.add({"priority": fastsched.Priority.LOW, "dedup": False}, "Cleanup", "a")
    finally:
        q.close()
    facts, text, _ = explain(dsn, twin)
    assert "No pool master is alive" in text and facts["masters_alive"] == 0
    assert facts["dedup"] == {"pending_job": first}
    assert f"it was added with dedup=False; the identical job #{first} is pending too" in text
    assert "The next free worker goes to LOW" in text
    fail_jobs(backend, [first], "gave up", now())
    _, text, _ = explain(dsn, twin)
    assert "Dedup: off for this job (added with dedup=False)" in text
    _, text, _ = explain(dsn, first)
    assert "failed at" in text and "Dedup" not in text


def test_explain_rejects_a_bad_id(cli):
    result = cli("explain", "abc")
    assert result.returncode == 2 and "job id: invalid value 'abc'" in result.stderr
