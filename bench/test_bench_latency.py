"""Latency: an idle pool (``fastsched-pool start --workers 2``, a subprocess), jobs added one at a
time by this process (the producer), enqueue-to-start measured by the job itself.

Each job stamps ``time.monotonic()`` as its first act and sends it back over UDP; the producer
stamps the same clock just before ``add()`` and just after it returns. The pool is idle before
each add: the next job is added only after the previous one started, plus a pause of 5 to 20 ms.

Judged from the *call* of ``add()`` (the producer's enqueue, commit included); the figure from
its *return* (the job committed and visible) is shown beside it. Targets: p50 <= 1 ms,
p99 <= 5 ms.
"""
from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import fastsched
from bench import harness
from bench.harness import PingCollector, PoolProcess, Target, percentile, pick, record, table

TARGET_P50_MS = 1.0
TARGET_P99_MS = 5.0
JOBS = pick(200, 20)
WARMUP_JOBS = 5
WORKERS = 2
PING_TIMEOUT = 10.0  # seconds one job may take to start before the benchmark gives up
PAUSE_MS = (5.0, 20.0)  # idle time between a job's start and the next add


def _wait_started(pings: PingCollector, count: int, pool: PoolProcess, timeout: float) -> None:
    if not pings.wait_for(count, timeout):
        code = pool.poll()
        raise AssertionError(
            f"job {count} did not start within {timeout:.0f} s (pool exit code: {code})\n{pool.output_tail()}"
        )


def test_latency_idle_pool(benchmark: Any, bench_dsn: str, tmp_path: Path) -> None:
    dialect = harness.dialect_of(bench_dsn)
    rng = random.Random(42)
    queue = fastsched.connect(bench_dsn)  # creates the schema before the pool starts
    sent: dict[int, tuple[float, float]] = {}
    with PingCollector() as pings:
        argv = harness.pool_argv(bench_dsn, WORKERS, 1, until_empty=False)
        with PoolProcess(argv, tmp_path, "pool-latency") as pool:
            for seq in range(WARMUP_JOBS):  # the first one also waits for the pool to start
                queue.add(fastsched.PRIORITY_MEDIUM, "BenchPing", pings.port, -1 - seq)
                _wait_started(pings, seq + 1, pool, harness.POOL_START_TIMEOUT)

            def measure() -> None:
                for seq in range(JOBS):
                    time.sleep(rng.uniform(*PAUSE_MS) / 1000.0)
                    before = time.monotonic()
                    queue.add(fastsched.PRIORITY_MEDIUM, "BenchPing", pings.port, seq)
                    after = time.monotonic()
                    sent[seq] = (before, after)
                    _wait_started(pings, WARMUP_JOBS + seq + 1, pool, PING_TIMEOUT)

            harness.run_once(benchmark, measure)
            stop_code = pool.stop()
    queue.close()

    started = {int(seq): float(start) for seq, start, _pid in pings.parsed() if int(seq) >= 0}
    assert set(started) == set(sent), f"{len(sent) - len(started)} jobs never reported"
    from_call = [(started[s] - sent[s][0]) * 1000 for s in sent]
    from_return = [(started[s] - sent[s][1]) * 1000 for s in sent]
    add_ms = [(sent[s][1] - sent[s][0]) * 1000 for s in sent]
    p50, p99 = percentile(from_call, 50), percentile(from_call, 99)
    quantiles = (50, 90, 99, 100)
    record(
        benchmark,
        title=f"Enqueue-to-start latency, idle pool of {WORKERS} workers, {JOBS} jobs added one at a time ({dialect})",
        figures={
            "jobs": JOBS,
            "p50_ms_from_add_call": p50,
            "p99_ms_from_add_call": p99,
            "p50_ms_from_add_return": percentile(from_return, 50),
            "p99_ms_from_add_return": percentile(from_return, 99),
            "add_call_p50_ms": percentile(add_ms, 50),
            "pool_exit_code_after_sigterm": stop_code,
        },
        tables={
            "quantiles": table(
                ["quantile", "from add() call, ms", "from add() return, ms", "add() itself, ms"],
                [
                    [f"p{q}" if q < 100 else "max", percentile(from_call, q), percentile(from_return, q),
                     percentile(add_ms, q)]
                    for q in quantiles
                ],
            )
        },
        targets=[
            Target(f"latency p50 from add() call ({dialect})", p50, "<=", TARGET_P50_MS, "ms"),
            Target(f"latency p99 from add() call ({dialect})", p99, "<=", TARGET_P99_MS, "ms"),
        ],
    )
