"""Latency: an idle pool (``fastsched-pool start --workers 2``, default flags, a subprocess), jobs
added one at a time by this process (the producer), enqueue-to-start measured by the job itself.

Each job stamps ``time.monotonic()`` as its first act and sends it back over UDP; the producer
stamps the same clock just before ``add()`` and just after it returns. The pool is idle before
each add: the next job is added only after the previous one started, plus a pause of 5 to 20 ms.

Judged from the *call* of ``add()`` (the producer's enqueue, commit included); the figure from
its *return* (the job committed and visible) is shown beside it. Targets (issue 12): p50 <= 1.5 ms
and p99 <= 5 ms on MariaDB, p50 <= 1 ms on SQLite. Before each add, the two durable commits that
path cannot do without (the add's and the claim's) are timed alone on a raw connection: the floor,
measured in the same run (``baseline.CommitFloor``).

``test_latency_parts`` times each step of that path on its own, on the same database, so that the
end-to-end figure can be read as a sum: the add (its INSERT and durable commit, then the wake-up
datagram), the datagram reaching another process, ``plan_counts``, the claim of one job (its
durable commit), and a one-job batch through a pipe to a forked process.
"""
from __future__ import annotations

import datetime as dt
import multiprocessing
import os
import random
import select
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastsched
from bench import harness
from bench.baseline import CommitFloor
from bench.harness import PingCollector, PoolProcess, Target, median, percentile, pick, record, table
from fastsched import wakeup

TARGET_P50_MS = {"mysql": 1.5, "sqlite": 1.0}
TARGET_P99_MS = 5.0
JOBS = pick(200, 20)
PART_ROUNDS = pick(200, 20)
WARMUP_JOBS = 5
WORKERS = 2
PING_TIMEOUT = 10.0  # seconds one job may take to start before the benchmark gives up
PAUSE_MS = (5.0, 20.0)  # idle time between a job's start and the next add
FLOOR_GAP_S = 0.003  # idle time between the two-commit floor's round and the add after it


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
    floor = CommitFloor(bench_dsn)
    floor_ms: list[float] = []
    with PingCollector() as pings:
        argv = harness.pool_argv(bench_dsn, WORKERS, None, until_empty=False)
        with PoolProcess(argv, tmp_path, "pool-latency") as pool:
            for seq in range(WARMUP_JOBS):  # the first one also waits for the pool to start
                queue.add(fastsched.PRIORITY_MEDIUM, "BenchPing", pings.port, -1 - seq)
                _wait_started(pings, seq + 1, pool, harness.POOL_START_TIMEOUT)

            def measure() -> None:
                for seq in range(JOBS):
                    time.sleep(rng.uniform(*PAUSE_MS) / 1000.0)
                    floor_ms.append(floor.once() * 1000)
                    time.sleep(FLOOR_GAP_S)
                    before = time.monotonic()
                    queue.add(fastsched.PRIORITY_MEDIUM, "BenchPing", pings.port, seq)
                    after = time.monotonic()
                    sent[seq] = (before, after)
                    _wait_started(pings, WARMUP_JOBS + seq + 1, pool, PING_TIMEOUT)

            harness.run_once(benchmark, measure)
            stop_code = pool.stop()
    queue.close()
    floor.close()

    started = {int(seq): float(start) for seq, start, _pid in pings.parsed() if int(seq) >= 0}
    assert set(started) == set(sent), f"{len(sent) - len(started)} jobs never reported"
    from_call = [(started[s] - sent[s][0]) * 1000 for s in sent]
    from_return = [(started[s] - sent[s][1]) * 1000 for s in sent]
    add_ms = [(sent[s][1] - sent[s][0]) * 1000 for s in sent]
    p50, p99 = percentile(from_call, 50), percentile(from_call, 99)
    targets = [Target(f"latency p50 from add() call ({dialect})", p50, "<=", TARGET_P50_MS[dialect], "ms")]
    if dialect == "mysql":
        targets.append(Target(f"latency p99 from add() call ({dialect})", p99, "<=", TARGET_P99_MS, "ms"))
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
            "two_durable_commits_alone_p50_ms": percentile(floor_ms, 50),
            "two_durable_commits_alone_p99_ms": percentile(floor_ms, 99),
            "p50_ms_above_the_two_commits": p50 - percentile(floor_ms, 50),
            "pool_exit_code_after_sigterm": stop_code,
        },
        tables={
            "quantiles": table(
                ["quantile", "from add() call, ms", "from add() return, ms", "add() itself, ms",
                 "the two durable commits alone, ms"],
                [
                    [f"p{q}" if q < 100 else "max", percentile(from_call, q), percentile(from_return, q),
                     percentile(add_ms, q), percentile(floor_ms, q)]
                    for q in quantiles
                ],
            )
        },
        targets=targets,
        notes=[
            ("The two durable commits alone: before each add, on a raw connection, a one-row INSERT that commits "
             "itself then a one-row UPDATE that commits itself, on a table of their own in the same database "
             "(bench/baseline.py, CommitFloor): the floor under any enqueue-to-start path with a durable add and "
             "a durable claim, measured beside it."),
        ],
    )


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def _timings(rounds: int, step: Callable[[], Any]) -> list[float]:
    """Milliseconds each of ``rounds`` calls of ``step`` took, with a short idle pause before each
    (the pool is idle between adds too: nothing is warm in the server's group commit)."""
    taken = []
    for _ in range(rounds):
        time.sleep(0.002)
        before = time.perf_counter()
        step()
        taken.append((time.perf_counter() - before) * 1000)
    return taken


def _echo(conn: Any) -> None:
    """A forked process that answers each message with the monotonic time it got it."""
    while True:
        message = conn.recv()
        if message is None:
            return
        conn.send(time.monotonic())


def _pipe_ms(rounds: int) -> list[float]:
    """A one-job batch, as the master sends it, to a forked process: send to receipt."""
    context = multiprocessing.get_context("fork")
    parent, child = context.Pipe(duplex=True)
    process = context.Process(target=_echo, args=(child,))
    process.start()
    batch = (1, [(123, "BenchPing", "[1, 2]", 30, 0)])
    taken = []
    try:
        for _ in range(rounds):
            time.sleep(0.002)
            sent = time.monotonic()
            parent.send(batch)
            taken.append((parent.recv() - sent) * 1000)
        parent.send(None)
    finally:
        process.join(5)
    return taken


def _wakeup_ms(identity: str, rounds: int) -> list[float]:
    """The wake-up datagram (``wakeup.notify``, what add() sends) to a listening forked process."""
    context = multiprocessing.get_context("fork")
    parent, child = context.Pipe(duplex=True)

    def listen() -> None:
        listener = wakeup.Listener(identity, f"latency-parts-{os.getpid()}")
        child.send("ready")
        while True:
            select.select([listener.fileno()], [], [])
            got = time.monotonic()
            listener.drain()
            child.send(got)
            if child.poll(0) and child.recv() is None:
                listener.close()
                return

    process = context.Process(target=listen)
    process.start()
    taken = []
    try:
        assert parent.recv() == "ready"
        for _ in range(rounds):
            time.sleep(0.002)
            sent = time.monotonic()
            wakeup.notify(identity, 30)
            taken.append((parent.recv() - sent) * 1000)
        parent.send(None)
        wakeup.notify(identity, 30)
    finally:
        process.join(5)
        if process.exitcode is None:
            process.kill()
    return taken


def test_latency_parts(benchmark: Any, bench_dsn: str) -> None:
    dialect = harness.dialect_of(bench_dsn)
    queue = fastsched.connect(bench_dsn)
    backend = queue.backend
    host = "latency-parts"
    parts: dict[str, list[float]] = {}

    def measure() -> None:
        seq = iter(range(10**9))
        parts["add(): INSERT + durable commit + wake-up datagram"] = _timings(
            PART_ROUNDS, lambda: queue.add(fastsched.PRIORITY_MEDIUM, "BenchNoop", "add", next(seq))
        )
        parts["wake-up datagram sent, alone"] = _timings(PART_ROUNDS, lambda: wakeup.notify("nobody-listens", 30))
        parts["wake-up datagram, send to receipt in another process"] = _wakeup_ms(queue.dsn.identity, PART_ROUNDS)
        backend.register_master(host, os.getpid(), WORKERS, _utcnow())

        def plan_counts() -> None:
            now = _utcnow()
            backend.plan_counts(now, WORKERS * 1000, now - dt.timedelta(seconds=30))

        parts["plan_counts (read only)"] = _timings(PART_ROUNDS, plan_counts)
        claim_times: list[float] = []
        write_times: list[float] = []
        for n in range(PART_ROUNDS):
            job_id = queue.add(fastsched.PRIORITY_HIGH, "BenchNoop", "claim", n)
            time.sleep(0.002)
            now = _utcnow()
            before = time.perf_counter()
            batches = backend.claim([0, 1, 0, 0, 0], [os.getpid()], host, 1, now)
            claim_times.append((time.perf_counter() - before) * 1000)
            assert [job.id for batch in batches for job in batch.jobs] == [job_id]
            before = time.perf_counter()
            backend.write_outcomes(host, now, fastsched.jobs.Outcomes(done=[job_id]))
            write_times.append((time.perf_counter() - before) * 1000)
        parts["claim of one job: SELECT ... FOR UPDATE, UPDATE, durable commit"] = claim_times
        parts["its completion written (not on the path to the start)"] = write_times
        parts["a one-job batch through a pipe to a forked child"] = _pipe_ms(PART_ROUNDS)

    harness.run_once(benchmark, measure)
    backend.unregister(host, os.getpid())
    queue.close()
    on_path = [name for name in parts if "alone" not in name and "not on the path" not in name]
    record(
        benchmark,
        title=f"Where idle latency goes: each step of the path from add() to a job's start, timed alone ({dialect})",
        figures={
            "rounds": PART_ROUNDS,
            "sum_of_medians_on_the_path_ms": sum(median(parts[name]) for name in on_path),
            **{f"{name}: p50 ms": median(values) for name, values in parts.items()},
        },
        tables={
            "steps": table(
                ["step", "p50 ms", "p90 ms", "p99 ms", "on the path to the start"],
                [[name, median(v), percentile(v, 90), percentile(v, 99), "yes" if name in on_path else "no"]
                 for name, v in parts.items()],
            )
        },
        notes=[
            ("The end-to-end figure (test_latency_idle_pool) less this sum is what the pool adds on its own: "
             "its loop between the wake-up and the claim, the child's start of the job, the UDP report."),
            "plan_counts is on the path only when the master's copy of the counts is stale (see docs/scaling.md).",
        ],
    )
