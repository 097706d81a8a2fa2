"""``fastsched-pool demo``: off a terminal, on a terminal (a pty), and on MariaDB with --dsn."""
from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import fastsched
from fastsched import demo
from fastsched.priority import Priority

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 120  # seconds a demo may take
JOBS = 60


def demo_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTSCHED_") or k == "FASTSCHED_IMPL"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return env


def run_demo(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fastsched", "demo", *args], env=demo_env(), cwd=cwd, capture_output=True,
        text=True, timeout=TIMEOUT, check=False,
    )


def summary_rows(out: str) -> dict[str, list[str]]:
    rows = {}
    for line in out.splitlines():
        words = line.split()
        if words and words[0] in Priority.__members__ and "waiting" not in words:
            rows[words[0]] = words[1:]
    return rows


def test_the_workload_mixes_the_five_priorities():
    specs = demo.workload(1000)
    counts = Counter(spec[0] for spec in specs)
    assert counts == {10: 50, 20: 150, 30: 400, 40: 250, 50: 150}
    assert len({spec[2] for spec in specs}) == 1000  # distinct args: no job is deduplicated away
    assert 0 < sum(spec[4] for spec in specs) < 100  # a few defer themselves once
    assert demo.workload(1000) == specs  # the same every run
    assert demo.percentile([3.0, 1.0, 2.0, 4.0], 50) == 2.0 and demo.percentile([], 99) is None
    assert demo.percentile([float(i) for i in range(1, 101)], 99) == 99.0


def test_demo_off_a_terminal_logs_progress_and_prints_the_summary(tmp_path):
    result = run_demo("--jobs", str(JOBS), "--workers", "3", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert f"fastsched demo: {JOBS} jobs (3 CRITICAL, 9 HIGH, 24 MEDIUM, 15 LOW, 9 NEGLIGIBLE)" in out
    assert "in a temporary SQLite file" in out
    assert re.search(r"^demo +\d+\.\d+s: \d+/60 done, \d+ jobs/s; waiting/running/done CRITICAL=", out, re.MULTILINE)
    match = re.search(r"^done: 60 jobs in (\d+\.\d) s, (\d+\.\d) jobs/s on 3 workers", out, re.MULTILINE)
    assert match and float(match.group(2)) > 0
    rows = summary_rows(out)
    assert list(rows) == [p.name for p in Priority]
    for name, row in rows.items():  # jobs, p50, p99 (a number and a unit each)
        assert int(row[0]) > 0 and len(row) == 5 and row[2] in ("ms", "s") and row[4] in ("ms", "s"), (name, row)
    assert "\x1b[" not in out  # no terminal codes off a terminal
    assert os.listdir(tmp_path) == []  # the temporary database is gone, nothing left in the working directory


def test_demo_on_a_terminal_redraws_one_line_per_priority(tmp_path, monkeypatch):
    output = bytearray()

    def read(fd: int) -> bytes:
        data = os.read(fd, 65536)
        output.extend(data)
        return data

    for name in [k for k in os.environ if k.startswith("FASTSCHED_") and k != "FASTSCHED_IMPL"]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PYTHONPATH", demo_env()["PYTHONPATH"])
    monkeypatch.chdir(tmp_path)
    # pty.spawn runs the command on a pseudo-terminal: the demo sees a tty.
    status = pty.spawn([sys.executable, "-m", "fastsched", "demo", "--jobs", "40", "--workers", "2"], read)
    assert os.waitstatus_to_exitcode(status) == 0, output.decode(errors="replace")
    text = output.decode(errors="replace")
    assert "\x1b[2K" in text and "\x1b[6F" in text  # lines cleared and redrawn in place (5 priorities + a total)
    for priority in Priority:
        assert re.search(rf"{priority.name} +waiting +\d+ +running +\d+ +done +\d+/\d+ +\[[#.]+\] +workers", text)
    assert re.search(r"CRITICAL +waiting +0 +running +0 +done +2/2 +\[#{24}\]", text)  # all done in the last frame
    assert "done: 40 jobs in" in text


def test_demo_runs_on_mariadb_and_refuses_a_queue_with_pending_jobs(mysql_dsn, tmp_path):
    result = run_demo("--jobs", "30", "--workers", "2", "--dsn", mysql_dsn, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "done: 30 jobs in" in result.stdout and mysql_dsn.split("@")[1] in result.stdout
    q = fastsched.connect(mysql_dsn)
    try:
        assert sum(entry.done_last_hour for entry in q.stats()) == 30
        q.add(fastsched.Priority.LOW, "someone.elses.job")
    finally:
        q.close()
    refused = run_demo("--jobs", "30", "--dsn", mysql_dsn, cwd=tmp_path)
    assert refused.returncode == 1 and "holds 1 pending jobs: the demo needs an empty queue" in refused.stdout
    bad = run_demo("--jobs", "0", cwd=tmp_path)
    assert bad.returncode == 2 and "--jobs: invalid value '0'" in bad.stderr


def test_the_cli_registers_no_command_of_its_own(tmp_path):
    """Only what --import registers runs: the demo's task is not a command of every pool."""
    dsn = f"sqlite:///{tmp_path / 'q.sqlite3'}"
    shown = subprocess.run(
        [sys.executable, "-m", "fastsched", "status", "--json", "--dsn", dsn], env=demo_env(), cwd=tmp_path,
        capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert [t["command"] for t in json.loads(shown.stdout)["tasks"]] == []
