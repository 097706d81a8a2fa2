"""Fairness: 8 workers, a backlog of NEGLIGIBLE jobs, then HIGH and MEDIUM jobs arriving steadily;
every job sleeps 5 ms and reports when it started and ended.

The trace has two phases (Poisson arrivals, seeded):

* steady:    HIGH 200/s and MEDIUM 200/s, about one worker's worth each: the backlog takes the
             rest. Here HIGH must wait no longer than one job plus 50 ms (p99).
* saturated: HIGH 1,800/s and MEDIUM 600/s, more than the pool can do: every priority has work
             waiting, so the shares show the rule. Quadratic limits for 8 workers and 3
             priorities in play are 5, 2, 1 (HIGH, MEDIUM, NEGLIGIBLE); shares must be within
             one worker of them (measured after the first second of the phase).

Across the run, no priority with work waiting may hold zero workers for more than a second.

The real pool (``fastsched-pool start --workers 8``, MariaDB) runs the trace; the arrival times
it actually got are then replayed by the simulation harness (bench/fairness.py) under three
policies: quadratic (fastsched.core.plan), strict priority, and the seed's nextPriority. The
same metrics are computed for all four.
"""
from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest

import fastsched
from bench import fairness, harness
from bench.fairness import NAMES, Job
from bench.harness import PingCollector, PoolProcess, Target, pick, record, table
from fastsched import batching, config, core

WORKERS = 8
# Runs: None is the pool's default flags (batches sized by time, judged by the targets); 1 is
# Friendica's default worker_fetch_limit (HIGH and MEDIUM batches of one job; LOW and NEGLIGIBLE
# always take one), for comparison (full mode only).
FETCH_LIMITS: list[int | None] = pick([None, 1], [None])
JOB_MS = 5.0
BACKLOG = pick(50_000, 5_000)
STEADY_S = pick(10.0, 2.0)
SATURATED_S = pick(10.0, 2.0)
SETTLE_S = pick(1.0, 0.5)  # the start of the saturated phase not used for the share check
BIN_S = pick(1.0, 0.5)
RATES = {  # jobs/s per phase
    "steady": {20: 200.0, 30: 200.0},
    "saturated": {20: 1800.0, 30: 600.0},
}
PRIORITIES = (20, 30, 50)
TARGET_HIGH_P99_MS = JOB_MS + 50.0
TARGET_MAX_STARVED_S = 1.0
TARGET_SHARE_SLACK = 1.0  # workers
TICK_S = 0.002  # the producer's loop: it adds what is due every 2 ms, in one add_many
SEED = 20240521


def planned_arrivals() -> list[tuple[float, int]]:
    """(seconds since t0, priority), Poisson per priority and phase, sorted."""
    rng = random.Random(SEED)
    arrivals = []
    start = 0.0
    for phase, length in (("steady", STEADY_S), ("saturated", SATURATED_S)):
        for priority, rate in RATES[phase].items():
            t = start + rng.expovariate(rate)
            while t < start + length:
                arrivals.append((t, priority))
                t += rng.expovariate(rate)
        start += length
    arrivals.sort()
    return arrivals


def label(fetch_limit: int | None) -> str:
    return "default flags" if fetch_limit is None else f"fetch limit {fetch_limit}"


def simulated_sizes(fetch_limit: int | None) -> fairness.BatchSizes:
    """What the simulations batch by: the real run's fetch limit, or under the default flags the
    time-sized batches of 5 ms jobs (every priority alike, capped at the default fetch limit)."""
    if fetch_limit is not None:
        return fetch_limit
    budget = batching.DEFAULT_BATCH_BUDGET_MS / 1000
    return [batching.fit(JOB_MS / 1000, budget, config.DEFAULT_FETCH_LIMIT)] * len(fairness.PRIORITIES)


def run_real(dsn: str, log_dir: Path, fetch_limit: int | None) -> tuple[list[Job], float]:
    """Run the trace on a real pool; return the jobs (times relative to t0) and t_end."""
    t_end = STEADY_S + SATURATED_S
    queue = fastsched.connect(dsn)
    arrival: dict[int, float] = {}
    priority_of: dict[int, int] = {}
    with PingCollector() as pings:
        added = time.monotonic()
        for first in range(0, BACKLOG, 10_000):
            seqs = range(first, min(first + 10_000, BACKLOG))
            queue.add_many([(fastsched.PRIORITY_NEGLIGIBLE, "BenchWork", pings.port, s, JOB_MS) for s in seqs])
            for s in seqs:
                arrival[s] = added
                priority_of[s] = 50
        argv = harness.pool_argv(dsn, WORKERS, fetch_limit, until_empty=False)
        with PoolProcess(argv, log_dir, "pool-fairness") as pool:
            if not pings.wait_for(2 * WORKERS, harness.POOL_START_TIMEOUT):
                raise AssertionError(f"the pool did not start its first jobs\n{pool.output_tail()}")
            t0 = time.monotonic()
            plan = planned_arrivals()
            seq, i = BACKLOG, 0
            while i < len(plan):
                now = time.monotonic() - t0
                due = []
                while i < len(plan) and plan[i][0] <= now:
                    due.append((plan[i][1], seq))
                    seq += 1
                    i += 1
                if due:
                    called = time.monotonic()
                    queue.add_many([(p, "BenchWork", pings.port, s, JOB_MS) for p, s in due])
                    for p, s in due:
                        arrival[s] = called
                        priority_of[s] = p
                if i < len(plan):
                    time.sleep(max(0.0, min(TICK_S, plan[i][0] - (time.monotonic() - t0))))
            time.sleep(max(0.0, t0 + t_end - time.monotonic()))
            assert pool.poll() is None, f"the pool exited during the run\n{pool.output_tail()}"
            pool.stop()
        time.sleep(0.2)  # the last datagrams
        reports = pings.parsed()
    queue.close()

    started: dict[int, tuple[float, float]] = {int(s): (float(a), float(b)) for s, a, b, _pid in reports}
    jobs = []
    for s, added_at in arrival.items():
        start_end = started.get(s)
        start = start_end[0] - t0 if start_end else None
        end = start_end[1] - t0 if start_end else None
        if start is not None and start > t_end:
            start = end = None
        elif end is not None and end > t_end:
            end = None
        jobs.append(Job(s, priority_of[s], max(0.0, added_at - t0), JOB_MS / 1000, start, end))
    return jobs, t_end


def _judge(metrics: dict[str, Any]) -> dict[str, Any]:
    """The three targets on one policy's metrics."""
    limits = dict(zip(PRIORITIES, core.quadratic_limits(WORKERS, len(PRIORITIES))))
    steady = metrics["phases"]["steady"]
    saturated = metrics["phases"]["saturated (settled)"]
    share_error = max(abs(saturated[p]["share_workers"] - limits[p]) for p in PRIORITIES)
    busy = sum(saturated[p]["share_workers"] for p in PRIORITIES)
    # The same shares scaled to all the workers: whether the split follows the rule, whatever the
    # pool's total throughput (a master that cannot keep 8 workers busy still splits its capacity).
    scaled_error = (
        max(abs(saturated[p]["share_workers"] * WORKERS / busy - limits[p]) for p in PRIORITIES)
        if busy > 0 else float("nan")
    )
    starved = max(metrics["starved_s"].values())
    return {
        "high_p99_ms": steady[20]["wait_p99_ms"],
        "max_starved_s": starved,
        "share_error": share_error,
        "scaled_share_error": scaled_error,
        "busy_workers": busy,
        "limits": limits,
    }


@pytest.mark.parametrize("fetch_limit", FETCH_LIMITS)
def test_fairness(benchmark: Any, bench_mysql_dsn: str, tmp_path: Path, fetch_limit: int | None) -> None:
    real_jobs, t_end = harness.run_once(benchmark, lambda: run_real(bench_mysql_dsn, tmp_path, fetch_limit))
    phases = [
        ("steady", 0.0, STEADY_S),
        ("saturated", STEADY_S, t_end),
        ("saturated (settled)", STEADY_S + SETTLE_S, t_end),
    ]
    ran = sum(1 for j in real_jobs if j.start is not None and j.priority != 50)
    assert ran > 0, "no HIGH or MEDIUM job ran"

    # The simulations replay the arrivals the real run got; the backlog is what had not started at t0.
    trace = [Job(j.seq, j.priority, j.arrival, j.duration) for j in real_jobs if j.start is None or j.start >= 0]
    results = {"fastsched pool (real)": fairness.measure(real_jobs, phases, t_end, BIN_S, PRIORITIES)}
    sizes = simulated_sizes(fetch_limit)
    for name, policy in fairness.POLICIES.items():
        # Friendica's seed batches by its own rule, with its default fetch limit when ours is the default.
        policy_sizes = (1 if fetch_limit is None else fetch_limit) if name == "seed" else sizes
        simulated = fairness.simulate(trace, policy, WORKERS, policy_sizes, t_end)
        results[f"{name} (simulated)"] = fairness.measure(simulated, phases, t_end, BIN_S, PRIORITIES)

    judged = {name: _judge(m) for name, m in results.items()}
    real = judged["fastsched pool (real)"]
    limits = real["limits"]
    rows = []
    for name, m in results.items():
        for phase, stats in m["phases"].items():
            for p in PRIORITIES:
                s = stats[p]
                rows.append([name, phase, NAMES[p], s["share_workers"], s["wait_p50_ms"], s["wait_p99_ms"],
                             s["not_started"], s["jobs_per_s"]])
    tables = {
        "per policy, phase and priority": table(
            ["policy", "phase", "priority", "workers (mean)", "wait p50 ms", "wait p99 ms", "not started", "jobs/s"], rows
        ),
        "targets by policy": table(
            ["policy", f"HIGH p99 wait, steady (<= {TARGET_HIGH_P99_MS:g} ms)",
             f"longest starvation (<= {TARGET_MAX_STARVED_S:g} s)",
             f"largest share error vs {list(limits.values())} (<= {TARGET_SHARE_SLACK:g})",
             "busy workers, saturated", "share error, shares scaled to 8 workers"],
            [[name, j["high_p99_ms"], j["max_starved_s"], j["share_error"], j["busy_workers"],
              j["scaled_share_error"]] for name, j in judged.items()],
        ),
        "longest starvation per priority (s)": table(
            ["policy"] + [NAMES[p] for p in PRIORITIES],
            [[name] + [m["starved_s"][p] for p in PRIORITIES] for name, m in results.items()],
        ),
    }
    for name, m in results.items():
        tables[f"workers per priority over time: {name}"] = table(
            ["t (s)"] + [NAMES[p] for p in PRIORITIES], m["over_time"]
        )
    saturated = results["fastsched pool (real)"]["phases"]["saturated (settled)"]
    record(
        benchmark,
        title=f"Fairness, {label(fetch_limit)}: {WORKERS} workers, {BACKLOG:,} NEGLIGIBLE backlog, HIGH and MEDIUM arriving "
        f"({STEADY_S:g} s steady, {SATURATED_S:g} s saturated), {JOB_MS:g} ms jobs, MariaDB",
        figures={
            "workers": WORKERS,
            "fetch_limit": "default" if fetch_limit is None else fetch_limit,
            "simulated_batch_sizes": str(sizes),
            "job_ms": JOB_MS,
            "jobs_arrived": len(real_jobs) - BACKLOG,
            "high_p99_wait_ms_steady": real["high_p99_ms"],
            "longest_starvation_s": real["max_starved_s"],
            "largest_share_error_workers": real["share_error"],
            "busy_workers_saturated": real["busy_workers"],
            "largest_share_error_scaled_to_8_workers": real["scaled_share_error"],
            **{f"share_{NAMES[p]}_saturated": saturated[p]["share_workers"] for p in PRIORITIES},
            **{f"limit_{NAMES[p]}": limits[p] for p in PRIORITIES},
        },
        tables=tables,
        targets=[
            Target(f"HIGH p99 wait, steady phase (real pool, {label(fetch_limit)})", real["high_p99_ms"],
                   "<=", TARGET_HIGH_P99_MS, "ms"),
            Target(f"longest time a priority with work waiting held no worker (real pool, {label(fetch_limit)})",
                   real["max_starved_s"], "<=", TARGET_MAX_STARVED_S, "s"),
            Target(f"largest |share - quadratic limit|, saturated phase (real pool, {label(fetch_limit)})",
                   real["share_error"], "<=", TARGET_SHARE_SLACK, "workers"),
        ],
        notes=[
            ("Shares are busy workers: the time-average number of jobs of that priority running. In the real "
            "pool the per-job overhead between jobs (reporting, claiming) is idle time, so shares sum below 8."),
            ("Waits run from just before the add_many() call that enqueued the job to the job's first line; "
            "a job not started by the end counts with its wait so far (a lower bound)."),
            ("With 8 workers the seed's nextPriority decides like the quadratic rule: its starvation guard "
            "makes the running rows equal the priorities in play whenever the limits are consulted, so its "
            "positional limits coincide with limits by rank; it differs when it picks a running priority with "
            "nothing waiting (its fallback then claims a single job of the best waiting priority)."),
        ],
    )


# --------------------------------------------------------------------------- the harness itself


def test_seed_policy_keeps_the_positional_quirk() -> None:
    """friendica-worker.md §2.5 quirk 1: running {30:2, 40:1, 50:1}, waiting {40, 50}, 6 workers:
    n = 3, limits [4, 2, 1] go to the running rows by position, so MEDIUM (nothing waiting) is
    checked against the largest limit and returned; the fallback then claims one LOW job."""
    waiting, running = [0, 0, 0, 1, 1], [0, 0, 2, 1, 1]
    assert fairness.seed_next_priority(waiting, running, 6) == 30
    assert fairness.seed_policy(waiting, running, 6, 1, 10) == [(3, 1)]
    assert core.choose_priority(waiting, running, 6) == 3  # fastsched: LOW, by rank among those in play


def test_policies_on_a_saturated_pool() -> None:
    """Three priorities with more work than 8 workers: quadratic gives 5/2/1, strict 8/0/0."""
    waiting = [0, 100, 100, 0, 100]
    quadratic = fairness.quadratic_policy(waiting, [0] * 5, 8, 8, 1)
    strict = fairness.strict_policy(waiting, [0] * 5, 8, 8, 1)
    seed = fairness.seed_policy(waiting, [0] * 5, 8, 8, 1)
    def slots(decisions: list[tuple[int, int]]) -> list[int]:
        return [sum(1 for r, _ in decisions if r == rank) for rank in (1, 2, 4)]
    assert slots(quadratic) == [5, 2, 1]
    assert slots(strict) == [8, 0, 0]
    assert slots(seed) == [5, 2, 1]


def test_simulation_and_metrics_agree_on_a_simple_trace() -> None:
    """Two workers, four 10 ms jobs at t=0: two start at once, two 10 ms later; nobody starves long."""
    trace = [Job(i, 30, 0.0, 0.010) for i in range(4)]
    jobs = fairness.simulate(trace, fairness.quadratic_policy, 2, 1, 1.0)
    assert sorted(j.start for j in jobs) == [0.0, 0.0, 0.010, 0.010]
    metrics = fairness.measure(jobs, [("all", 0.0, 0.020)], 1.0, 0.010, (30,))
    assert abs(metrics["phases"]["all"][30]["share_workers"] - 2.0) < 1e-9
    assert metrics["starved_s"][30] == 0.0
