"""Peers (optional, not run in CI): the same drain of no-op jobs by Huey's 2-process consumer and by
fastsched's default-flag pool, 2 workers each, on this machine in the same run.

Huey (``pip install huey redis``) uses Redis when it answers at FASTSCHED_BENCH_REDIS (default
redis://127.0.0.1:6379/0), else its SqliteHuey; each system runs with the settings its docs start
you with (Huey on Redis does not make each job durable before it returns; fastsched on MariaDB
commits every claim and completion). Huey's time runs from starting its consumer until its queue
is empty (the last two jobs may still be running); fastsched's from starting the pool until it
exits with every job done. Target (issue 12): fastsched at least 3x Huey's jobs/s.

Skipped when huey is not installed: it is a comparison, not a feature. CI keeps the raw-loop
baseline of bench 3 instead.
"""
from __future__ import annotations

import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bench import harness
from bench.harness import PoolProcess, Target, pick, record, table
from bench.test_bench_drain import WORKERS, drain_once

huey_module = pytest.importorskip("huey", reason="optional peer comparison: pip install huey redis")

JOBS = pick(100_000, 2_000)
TARGET_RATIO = 3.0
HUEY_TIMEOUT = 900.0


def _redis_answers(url: str) -> bool:
    try:
        import redis
    except ImportError:
        return False
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
    except Exception:  # noqa: BLE001 - any failure means "use SqliteHuey"
        return False


def huey_drain(tmp_path: Path, jobs: int) -> dict[str, Any]:
    url = os.environ.get("FASTSCHED_BENCH_REDIS", "redis://127.0.0.1:6379/0")
    env = harness.pool_env(FASTSCHED_BENCH_HUEY_NAME=f"fastsched-bench-{secrets.token_hex(4)}")
    storage = "redis"
    if not _redis_answers(url):
        env["FASTSCHED_BENCH_HUEY_SQLITE"] = str(tmp_path / "huey.sqlite3")
        storage = "sqlite"
    # The producer side in this process, with the consumer's settings.
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    sys.modules.pop("bench.huey_app", None)
    try:
        from bench import huey_app
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    huey = huey_app.huey
    huey.flush()
    filled = time.perf_counter()
    for n in range(jobs):
        huey_app.noop(n)
    fill_seconds = time.perf_counter() - filled
    assert huey.pending_count() == jobs
    consumer = Path(sys.executable).with_name("huey_consumer")
    argv = [str(consumer), "bench.huey_app.huey", "-w", str(WORKERS), "-k", "process"]
    with PoolProcess(argv, tmp_path, "huey", env=env) as proc:
        deadline = time.monotonic() + HUEY_TIMEOUT
        while huey.pending_count() > 0:
            if proc.poll() is not None:
                raise AssertionError(f"the huey consumer exited\n{proc.output_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"huey did not drain in {HUEY_TIMEOUT:.0f} s\n{proc.output_tail()}")
            time.sleep(0.005)
        wall = time.perf_counter() - proc.started
        proc.stop()
    huey.flush()
    return {"storage": storage, "wall_seconds": wall, "jobs_per_s": jobs / wall, "fill_seconds": fill_seconds}


def test_peer_huey(benchmark: Any, bench_mysql_dsn: str, tmp_path: Path) -> None:
    def both() -> tuple[dict[str, Any], dict[str, Any]]:
        peer = huey_drain(tmp_path, JOBS)
        ours = drain_once(bench_mysql_dsn, JOBS, None, tmp_path, name="peers")
        ours.pop("split")
        return peer, ours

    peer, ours = harness.run_once(benchmark, both)
    ratio = ours["jobs_per_s"] / peer["jobs_per_s"]
    record(
        benchmark,
        title=f"Peers: {JOBS:,} no-op jobs, 2 workers each: Huey's consumer ({peer['storage']}) vs fastsched-pool, "
        "default flags (MariaDB)",
        figures={
            "jobs": JOBS,
            "huey_storage": peer["storage"],
            "huey_jobs_per_s": peer["jobs_per_s"],
            "fastsched_jobs_per_s": ours["jobs_per_s"],
            "fastsched_over_huey": ratio,
            "fastsched_master_cpu_us_per_job": ours["cpu_us_per_job_master"],
        },
        tables={"runs": table(["system", "jobs/s", "wall s"], [
            [f"huey {huey_module.__version__} ({peer['storage']}), -w {WORKERS} -k process", peer["jobs_per_s"],
             peer["wall_seconds"]],
            ["fastsched-pool --workers 2, default flags (MariaDB)", ours["jobs_per_s"], ours["wall_seconds"]],
        ])},
        targets=[Target("fastsched default flags / Huey 2-process consumer", ratio, ">=", TARGET_RATIO, "x")],
    )
