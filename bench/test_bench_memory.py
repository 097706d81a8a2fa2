"""Memory: the resident set of the master and of each child while ``fastsched-pool start
--until-empty --workers 2 --fetch-limit 500`` drains 1,000,000 no-op jobs (MariaDB), sampled
with psutil every 0.25 s.

Growth is measured from the first sample after a tenth of the drain (imports done, first
batches through, buffers at their working size) to the largest sample after it, per process.
Target: under 20 MB for the master and for every child.
"""
from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import psutil

from bench import harness
from bench.harness import PoolProcess, Target, pick, record, split_table, table

JOBS = pick(1_000_000, 10_000)
WORKERS = 2
FETCH_LIMIT = 500
SAMPLE_S = 0.25
WARM_FRACTION = 0.10
TARGET_GROWTH_MB = 20.0
DRAIN_TIMEOUT = 1800.0  # seconds
MB = 1024 * 1024


def sample_drain(
    dsn: str, log_dir: Path
) -> tuple[float, dict[int, list[tuple[float, int]]], int, dict[str, float]]:
    """Run the drain; return (wall seconds, {pid: [(t, rss)]}, master pid, the master's time split)."""
    series: dict[int, list[tuple[float, int]]] = {}
    argv = harness.pool_argv(dsn, WORKERS, FETCH_LIMIT, until_empty=True)
    with PoolProcess(argv, log_dir, "pool-memory") as pool:
        master = psutil.Process(pool.pid)
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while pool.poll() is None:
            now = time.perf_counter() - pool.started
            try:
                procs = [master] + master.children(recursive=True)
            except psutil.NoSuchProcess:
                procs = []
            for proc in procs:
                try:
                    rss = proc.memory_info().rss
                except psutil.NoSuchProcess:
                    continue
                if rss:  # an exited child not yet reaped (a zombie) reads as 0
                    series.setdefault(proc.pid, []).append((now, rss))
            if time.monotonic() > deadline:
                pool.kill()
                raise AssertionError(f"the drain did not finish in {DRAIN_TIMEOUT:.0f} s\n{pool.output_tail()}")
            try:
                pool.wait(SAMPLE_S)
            except subprocess.TimeoutExpired:
                pass
        code = pool.wait()
        assert code == 0, f"fastsched-pool exited with {code}\n{pool.output_tail()}"
        assert pool.ended is not None
        return pool.ended - pool.started, series, pool.pid, harness.master_time_split(pool.stderr_path)


def growth(samples: list[tuple[float, int]], warm_at: float) -> tuple[int, int, int] | None:
    """(rss at warm, peak after warm, growth) in bytes, or None if the process was not sampled
    after the warm-up."""
    after = [(t, rss) for t, rss in samples if t >= warm_at]
    if len(after) < 2:
        return None
    base = after[0][1]
    peak = max(rss for _, rss in after)
    return base, peak, peak - base


def test_memory_flat(benchmark: Any, bench_mysql_dsn: str, tmp_path: Path) -> None:
    fill_s = harness.fill_jobs(bench_mysql_dsn, JOBS, tag="memory")
    wall, series, master_pid, split = harness.run_once(benchmark, lambda: sample_drain(bench_mysql_dsn, tmp_path))
    counts = harness.state_counts(bench_mysql_dsn)
    assert counts["done"] == JOBS and counts["pending"] == 0 and counts["claimed"] == 0, counts

    warm_at = wall * WARM_FRACTION
    rows, targets = [], []
    children = 0
    for pid, samples in sorted(series.items(), key=lambda kv: (kv[0] != master_pid, kv[0])):
        role = "master" if pid == master_pid else "child"
        measured = growth(samples, warm_at)
        first, last = samples[0][1], samples[-1][1]
        if measured is None:
            rows.append([role, str(pid), len(samples), first / MB, None, None, None, last / MB])
            continue
        base, peak, grown = measured
        rows.append([role, str(pid), len(samples), first / MB, base / MB, peak / MB, grown / MB, last / MB])
        if role == "child":
            children += 1
            name = f"child {children} RSS growth"
        else:
            name = "master RSS growth"
        targets.append(Target(name, grown / MB, "<=", TARGET_GROWTH_MB, "MB"))
    assert targets, "no process was sampled after the warm-up"
    record(
        benchmark,
        title=f"RSS of master and children while draining {JOBS:,} no-op jobs "
        f"(--workers {WORKERS} --fetch-limit {FETCH_LIMIT}, MariaDB)",
        figures={
            "jobs": JOBS,
            "fill_seconds": fill_s,
            "drain_wall_seconds": wall,
            "jobs_per_s": JOBS / wall,
            "processes_sampled": len(series),
            "max_growth_mb": max(t.value for t in targets),
        },
        tables={
            **({"the master's time (its Performance log lines, every 10 s)": split_table(split)} if split else {}),
            "rss": table(
                ["process", "pid", "samples", "first MB", "at warm-up MB", "peak after MB", "growth MB", "last MB"],
                rows,
            )
        },
        targets=targets,
        notes=[f"Warm-up: the first {WARM_FRACTION:.0%} of the drain; growth = peak after it - the sample at it."],
    )
