"""Mixed load: a steady stream of no-op jobs plus 10-second jobs, 4 workers, default flags, MariaDB.

Batches are sized by expected run time: a no-op job must never sit in a batch behind a long one
(a command never seen goes alone, and once seen a 10 s job is alone: it is over any budget), nor
in a prefetched batch on a child whose long job has far to go. So no no-op job may wait longer
than the batch budget plus 50 ms (the target, issue 12), however many long jobs run.

The producer adds what is due every 2 ms (one add_many); long jobs arrive every LONG_EVERY_S, so
that at most two run at once and two workers stay for the stream. Every job reports its start
(``BenchPing``, ``BenchWork``); a no-op's wait runs from just before the add_many that enqueued it
to its first line.
The database's own commit stalls are timed beside it (baseline.CommitStalls: two durable commits
every 10 ms on a raw connection): a no-op whose wait spans one waited for the disk, not behind a
long job, and the target is judged on the others; the longest wait of all is reported beside it.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import fastsched
from bench import baseline, harness
from bench.harness import PingCollector, PoolProcess, Target, percentile, pick, record, table
from fastsched import batching

WORKERS = 4
RUN_S = pick(30.0, 5.0)
LONG_S = pick(10.0, 2.0)  # the long jobs' run time (the issue's 10 s; shorter in CI's quick form)
LONG_EVERY_S = LONG_S / 2  # at most two long jobs at once
NOOP_RATE = 200.0  # no-op jobs per second
TICK_S = 0.002
TARGET_SLACK_MS = 50.0
LONG_SEQ_BASE = 10**6  # long jobs' seq numbers, apart from the no-ops'


def run_mixed(
    dsn: str, log_dir: Path, stalls: baseline.CommitStalls
) -> tuple[dict[int, float], dict[int, float], dict[int, float]]:
    """Run the mix on a real pool, ``stalls`` timing the database's commits beside it; return the
    no-ops' arrival and start times, and the long jobs' starts."""
    queue = fastsched.connect(dsn)
    arrival: dict[int, float] = {}
    with PingCollector() as pings, stalls:
        argv = harness.pool_argv(dsn, WORKERS, None, until_empty=False)
        with PoolProcess(argv, log_dir, "pool-mixed") as pool:
            queue.add(fastsched.PRIORITY_MEDIUM, "BenchPing", pings.port, -1)
            if not pings.wait_for(1, harness.POOL_START_TIMEOUT):
                raise AssertionError(f"the pool did not start\n{pool.output_tail()}")
            t0 = time.monotonic()
            next_noop, next_long, seq, longs = t0, t0, 0, 0
            while time.monotonic() - t0 < RUN_S:
                now = time.monotonic()
                due: list[tuple[Any, ...]] = []
                if now >= next_long and now - t0 < RUN_S - LONG_S:
                    due.append((fastsched.PRIORITY_MEDIUM, "BenchWork", pings.port, LONG_SEQ_BASE + longs, LONG_S * 1000))
                    longs += 1
                    next_long += LONG_EVERY_S
                first_noop = seq
                while next_noop <= now:
                    due.append((fastsched.PRIORITY_MEDIUM, "BenchPing", pings.port, seq))
                    seq += 1
                    next_noop += 1 / NOOP_RATE
                if due:
                    called = time.monotonic()
                    queue.add_many(due)
                    for s in range(first_noop, seq):
                        arrival[s] = called
                time.sleep(TICK_S)
            if not pings.wait_for(1 + seq + longs, 30.0):
                raise AssertionError(f"not every job started\n{pool.output_tail()}")
            assert pool.poll() is None, f"the pool exited during the run\n{pool.output_tail()}"
            pool.stop()
        reports = pings.parsed()
    queue.close()
    noop_start = {int(r[0]): float(r[1]) for r in reports if len(r) == 3 and int(r[0]) >= 0}
    long_start = {int(r[0]): float(r[1]) for r in reports if len(r) == 4}
    return arrival, noop_start, long_start


def test_mixed_load(benchmark: Any, bench_mysql_dsn: str, tmp_path: Path) -> None:
    stalls = baseline.CommitStalls(bench_mysql_dsn, over=TARGET_SLACK_MS / 1000)
    arrival, started, longs = harness.run_once(benchmark, lambda: run_mixed(bench_mysql_dsn, tmp_path, stalls))
    assert set(started) == set(arrival), f"{len(set(arrival) - set(started))} no-op jobs never started"
    assert longs, "no long job ran"
    assert stalls.pairs > 0, "the commit probe never ran"
    waits = [(started[s] - arrival[s]) * 1000 for s in arrival]
    clear_waits = [(started[s] - arrival[s]) * 1000 for s in arrival if not stalls.overlaps(arrival[s], started[s])]
    budget_ms = batching.DEFAULT_BATCH_BUDGET_MS
    goal = budget_ms + TARGET_SLACK_MS
    worst = max(clear_waits, default=math.nan)  # every wait across a stall: nothing to judge, so missed
    record(
        benchmark,
        title=f"Mixed load: {NOOP_RATE:g} no-op jobs/s plus a {LONG_S:g} s job every {LONG_EVERY_S:g} s, "
        f"{WORKERS} workers, default flags, MariaDB",
        figures={
            "noop_jobs": len(waits),
            "long_jobs": len(longs),
            "noop_wait_p50_ms": percentile(waits, 50),
            "noop_wait_p99_ms": percentile(waits, 99),
            "noop_wait_max_ms": max(waits),
            "noops_over_goal": sum(1 for w in waits if w > goal),
            "commit_stalls_over_slack": len(stalls.stalls),
            "longest_commit_pair_ms": stalls.longest * 1000,
            "noops_waiting_across_a_stall": len(waits) - len(clear_waits),
            "noop_wait_max_ms_outside_stalls": worst,
            "noops_over_goal_outside_stalls": sum(1 for w in clear_waits if w > goal),
            "batch_budget_ms": budget_ms,
        },
        tables={
            "no-op waits": table(
                ["quantile", "ms"],
                [[f"p{q}" if q < 100 else "max", percentile(waits, q)] for q in (50, 90, 99, 99.9, 100)],
            )
        },
        targets=[Target("longest no-op wait, mixed with long jobs, outside the database's commit stalls (default flags)",
                       worst, "<=", goal, "ms")],
        notes=[
            (f"Commit stalls: two durable commits on a raw connection every 10 ms beside the run; a pair over "
             f"{TARGET_SLACK_MS:g} ms is a stall of the database's disk (on this VM a file's fdatasync alone stalls 70-230 ms "
             "now and then, MariaDB's commits up to 580 ms). A no-op whose wait spans one is left out of the target, and the longest wait of "
             "all (noop_wait_max_ms) is kept beside it."),
        ],
    )
