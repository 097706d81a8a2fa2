"""fastsched-pool pause, resume, and the filters and --dry-run of retry, cancel and purge, run as
commands on both backends; status (text and --json) shows the pauses and the history."""
from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys

from test_cli import _state, env, run, rundir  # noqa: F401 - fixtures

import fastsched
from fastsched import cli
from fastsched.queue import utcnow
from tests.conftest import fail_jobs


def _failed(dsn: str, command: str, error: str, priority: int = 30) -> int:
    with fastsched.connect(dsn) as queue:
        job_id = queue.add(priority, command, error)
        assert fail_jobs(queue.backend, [job_id], error, utcnow()) == 1
    return job_id


def test_pause_and_resume_show_in_status(dsn: str, env: dict[str, str]) -> None:  # noqa: F811
    env["FASTSCHED_DSN"] = dsn
    paused = run("pause", "--priority", "LOW", env=env)
    assert paused.returncode == 0, paused.stderr
    assert "paused priority LOW" in paused.stdout and "fastsched-pool resume --priority LOW" in paused.stdout
    both = run("pause", "--command", "SendMail", "--priority", "high", env=env)
    assert both.returncode == 0 and "paused priority HIGH, command SendMail" in both.stdout

    text = run("status", env=env).stdout
    assert "40 LOW (paused)" in text and "20 HIGH (paused)" not in text  # HIGH is paused for SendMail only
    assert "PAUSED priority HIGH, command SendMail: by " in text and "PAUSED priority LOW: by " in text
    assert "recent actions" in text and " pause priority LOW" in text
    document = json.loads(run("status", "--json", env=env).stdout)
    assert [(p["priority"], p["command"], p["queue"]) for p in document["paused"]] == [
        ("HIGH", "SendMail", None), ("LOW", None, None)
    ]
    assert {p["name"]: p["paused"] for p in document["priorities"]} == {
        "CRITICAL": False, "HIGH": False, "MEDIUM": False, "LOW": True, "NEGLIGIBLE": False
    }
    assert [a["action"] for a in document["actions_recent"]] == ["pause", "pause"]

    missing = run("resume", "--priority", "HIGH", env=env)
    assert missing.returncode == cli.EXIT_FAILURE
    assert "priority HIGH is not paused" in missing.stderr and "resume --priority HIGH --command SendMail" in missing.stderr
    assert run("resume", "--priority", "LOW", env=env).stdout.strip() == "resumed priority LOW: masters claim it again"
    assert run("resume", "--all", env=env).stdout.strip() == "resumed 1 pause"
    assert "PAUSED" not in run("status", env=env).stdout


def test_pause_and_resume_refuse_bad_flags(sqlite_dsn: str, env: dict[str, str]) -> None:  # noqa: F811
    env["FASTSCHED_DSN"] = sqlite_dsn
    for args, message in [
        (["pause"], "a pause needs a priority, a command or a queue"),
        (["pause", "--priority", "URGENT", "--queue", "mail"], "--priority: priority must be one of CRITICAL"),
        (["pause", "--command", "no spaces"], "--command: command 'no spaces' contains ' '"),
        (["pause", "--priority", "LOW", "--queue", "a;b"], "--queue: queue 'a;b' contains ';'"),
        (["resume", "--queue", "a;b"], "--queue: queue 'a;b' contains ';'"),
        (["resume"], "a pause needs a priority"),
        (["resume", "--all", "--priority", "LOW"], "not both"),
        (["retry"], "exactly one of the three"),
        (["retry", "1", "--command", "X"], "exactly one of the three"),
        (["retry", "1", "--dry-run"], "--dry-run goes with --all or filters"),
        (["cancel", "--older-than", "soon"], "--older-than: invalid value 'soon'"),
        (["purge", "--priority", "99"], "--priority: priority must be one of"),
        (["cancel", "--command", "SendMail", "--queue", ""], "--queue: queue must not be empty"),
        (["retry", "--error", "", "--dry-run"], "--error: error must be a text of 1 to 1000 characters"),
    ]:
        result = run(*args, env=env)
        assert result.returncode == cli.EXIT_CONFIG, (args, result.stdout, result.stderr)
        assert message in result.stderr, (args, result.stderr)
    with fastsched.connect(sqlite_dsn) as queue:
        assert queue.paused() == [] and queue.actions() == []


def test_bulk_retry_cancel_purge_by_filter_with_dry_runs(dsn: str, env: dict[str, str]) -> None:  # noqa: F811
    env["FASTSCHED_DSN"] = dsn
    timed_out = [_failed(dsn, "SendMail", f"smtp {i}: timed out") for i in range(3)]
    refused = _failed(dsn, "SendMail", "smtp: 550 refused")
    other = _failed(dsn, "Notify", "timed out", priority=20)

    dry = run("retry", "--command", "SendMail", "--error", "timed out", "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.strip() == (
        "dry run: 3 failed jobs matching command SendMail, error 'timed out' would be put back in the queue; "
        "nothing was changed"
    )
    assert {_state(dsn, i) for i in timed_out} == {"failed"}
    done = run("retry", "--command", "SendMail", "--error", "timed out", env=env)
    assert done.stdout.strip() == "3 failed jobs matching command SendMail, error 'timed out' put back in the queue"
    assert {_state(dsn, i) for i in timed_out} == {"waiting"} and _state(dsn, refused) == "failed"

    dry = run("cancel", "--command", "SendMail", "--dry-run", env=env)
    assert "dry run: 4 jobs matching command SendMail (3 pending, 1 failed) would be cancelled" in dry.stdout
    cancelled = run("cancel", "--command", "SendMail", "--older-than", "0", env=env)
    assert cancelled.stdout.strip() == "cancelled 4 jobs matching command SendMail, older than 0 s (3 pending, 1 failed)"
    assert [_state(dsn, i) for i in [*timed_out, refused]] == [None] * 4 and _state(dsn, other) == "failed"

    assert "dry run: 1 done, failed and cancelled job finished more than 0 s ago matching priority HIGH would be" \
        in run("purge", "--older-than", "0", "--include-failed", "--priority", "HIGH", "--dry-run", env=env).stdout
    purged = run("purge", "--older-than", "0", "--include-failed", "--command", "Notify", env=env)
    assert purged.stdout.strip() == "purged 1 done, failed and cancelled job finished more than 0 s ago matching command Notify"
    assert _state(dsn, other) is None

    history = json.loads(run("status", "--json", env=env).stdout)["actions_recent"]
    assert [(a["action"], a["target"], a["jobs"]) for a in history] == [
        ("purge", "command Notify, older than 0 s (failed and cancelled too)", 1),
        ("cancel", "command SendMail, older than 0 s", 4),
        ("retry", "command SendMail, error 'timed out'", 3),
    ]
    assert all(a["by"] and a["at"] for a in history)


def test_older_than_takes_seconds_or_a_unit(dsn: str, env: dict[str, str]) -> None:  # noqa: F811
    env["FASTSCHED_DSN"] = dsn
    with fastsched.connect(dsn) as queue:
        job_id = queue.add(30, "SendMail", "old")
        assert fail_jobs(queue.backend, [job_id], "timed out", utcnow() - dt.timedelta(hours=2)) == 1
    for age, matching in [("3600", 1), ("1h", 1), ("90m", 1), ("1.5h", 1), ("3h", 0), ("1d", 0), ("1w", 0)]:
        result = run("retry", "--older-than", age, "--dry-run", env=env)
        assert result.returncode == 0, (age, result.stderr)
        assert f"dry run: {matching} failed job" in result.stdout, (age, result.stdout)
    assert "older than 5400 s" in run("retry", "--older-than", "90m", "--dry-run", env=env).stdout
    assert "finished more than 86400 s ago" in run("purge", "--older-than", "1d", "--dry-run", env=env).stdout
    bad = run("purge", "--older-than", "1y", env=env)
    assert bad.returncode == cli.EXIT_CONFIG and "--older-than: invalid value '1y'" in bad.stderr
    assert "90s, 10m, 1h, 2d, 1w" in bad.stderr
    assert _state(dsn, job_id) == "failed"


def test_a_reader_that_goes_away_gets_no_traceback(sqlite_dsn: str, env: dict[str, str]) -> None:  # noqa: F811
    env["FASTSCHED_DSN"] = sqlite_dsn
    # `status --watch | head -1`: the next reading is written into a closed pipe.
    process = subprocess.Popen(
        [sys.executable, "-m", "fastsched", "status", "--watch", "--interval", "0.1"], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.readline().startswith("fastsched status of ")
    process.stdout.close()
    try:
        assert process.wait(60) == cli.EXIT_FAILURE
    finally:
        if process.poll() is None:
            process.kill()
    stderr = process.stderr.read()
    process.stderr.close()
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr
