"""Enqueue from asyncio: ``await q.add_async()`` against ``q.add()`` in the same run.

* ``add()``: one caller, one job per call, on the queue's connection (the baseline).
* ``add_async()``, one caller awaiting each job in turn: what the hop to a worker thread costs.
* ``add_async()``, CALLERS coroutines at once (a busy async web server): the queue's worker
  threads each have a connection of their own (four on MariaDB, one on SQLite).

Rounds alternate the three on the same machine; the figure is the median round. No target: the
issue asks for the figures beside ``add``'s.
"""
from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import fastsched
from bench import harness
from bench.harness import pick, record, table

COMMAND = "BenchNoop"
CALLERS = 32  # concurrent coroutines in the concurrent round

_counter = itertools.count()


def _specs(count: int, tag: str) -> list[tuple[Any, ...]]:
    return [(30, COMMAND, tag, next(_counter)) for _ in range(count)]


def test_add_async_against_add(benchmark: Any, bench_dsn: str) -> None:
    jobs = pick(4000, 200)
    rounds = pick(5, 1)
    dialect = harness.dialect_of(bench_dsn)
    queue = fastsched.connect(bench_dsn)
    rates: dict[str, list[float]] = {"add": [], "add_async, 1 caller": [], f"add_async, {CALLERS} callers": []}

    async def one_caller(specs: list[tuple[Any, ...]]) -> None:
        for spec in specs:
            await queue.add_async(*spec)

    async def many_callers(specs: list[tuple[Any, ...]]) -> None:
        async def caller(part: list[tuple[Any, ...]]) -> None:
            for spec in part:
                await queue.add_async(*spec)

        await asyncio.gather(*(caller(specs[i::CALLERS]) for i in range(CALLERS)))

    def timed(name: str, run: Any) -> None:
        specs = _specs(jobs, name)
        start = time.perf_counter()
        run(specs)
        rates[name].append(jobs / (time.perf_counter() - start))

    def sync_round(specs: list[tuple[Any, ...]]) -> None:
        for spec in specs:
            queue.add(*spec)

    def baseline_rounds() -> None:
        timed("add", sync_round)
        timed("add_async, 1 caller", lambda specs: asyncio.run(one_caller(specs)))

    try:
        for spec in _specs(50, "warm"):
            queue.add(*spec)
        asyncio.run(many_callers(_specs(4 * CALLERS, "warm-async")))  # every worker thread connected
        benchmark.pedantic(
            lambda: timed(f"add_async, {CALLERS} callers", lambda specs: asyncio.run(many_callers(specs))),
            setup=baseline_rounds, rounds=rounds, iterations=1, warmup_rounds=0,
        )
        stored = queue.stats()
        assert sum(s.waiting for s in stored) == 50 + 4 * CALLERS + 3 * jobs * rounds  # every job, once
    finally:
        queue.close()

    medians = {name: harness.median(values) for name, values in rates.items()}
    base = medians["add"]
    record(
        benchmark,
        title=f"add_async() vs add(), one job per call ({dialect})",
        figures={
            "jobs_per_round": jobs,
            "rounds": rounds,
            "callers": CALLERS,
            **{f"{name} jobs/s": rate for name, rate in medians.items()},
            **{f"{name} / add": rate / base for name, rate in medians.items() if name != "add"},
        },
        tables={
            "rounds": table(
                ["round", *rates], zip(itertools.count(1), *rates.values())
            )
        },
        notes=["No target: recorded beside add() of the same run."],
    )
