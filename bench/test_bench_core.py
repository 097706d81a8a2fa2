"""Benchmarks of the scheduling core: the compiled twin against the pure-Python reference.

    pytest bench/test_bench_core.py --benchmark-group-by=group          # c and python side by side
    FASTSCHED_BENCH_QUICK=1 pytest bench/test_bench_core.py             # one round at size 10: seconds

Every function runs at sizes 10, 1,000 and 100,000. For the per-call functions the size is the number of
calls (``map`` over that many inputs, so the loop itself adds as little Python as possible); for
``batch_ids`` it is the length of the claimed rows; for ``plan`` it is the number
of free slots. When both twins of a group have run, each benchmark records ``c_speedup`` (python median /
c median) in its ``extra_info`` (see ``--benchmark-json``), and the table of speedups is printed at the end.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest

import fastsched._core_py as core_py

try:
    import fastsched._core as core_c
except ImportError:  # not built
    core_c = None

QUICK = os.environ.get("FASTSCHED_BENCH_QUICK") == "1"
SIZES = (10,) if QUICK else (10, 1_000, 100_000)
PRIORITIES = (10, 20, 30, 40, 50)
FETCH_LIMIT = 5
SEED = 20190307  # the day Friendica's PR #6719 was merged: any fixed seed will do

Workload = Callable[[ModuleType], Callable[[], Any]]


def _round_half_up(size: int) -> Workload:
    rnd = random.Random(SEED)
    values = [rnd.choice((rnd.uniform(-1000, 1000), rnd.randint(-1000, 1000) + 0.5)) for _ in range(size)]
    return lambda core: lambda: list(map(core.round_half_up, values))


def _quadratic_limits(size: int) -> Workload:
    rnd = random.Random(SEED)
    actives = [rnd.randint(0, 200) for _ in range(size)]
    ns = [rnd.randint(0, 5) for _ in range(size)]
    return lambda core: lambda: list(map(core.quadratic_limits, actives, ns))


def _rank_of(size: int) -> Workload:
    rnd = random.Random(SEED)
    priorities = [rnd.choice(PRIORITIES) for _ in range(size)]
    return lambda core: lambda: list(map(core.rank_of, priorities))


def _choose_priority(size: int) -> Workload:
    rnd = random.Random(SEED)
    waiting = [[rnd.choice((0, 0, rnd.randint(1, 500))) for _ in PRIORITIES] for _ in range(size)]
    running = [[rnd.randint(0, 8) for _ in PRIORITIES] for _ in range(size)]
    active = [rnd.randint(1, 40) for _ in range(size)]
    return lambda core: lambda: list(map(core.choose_priority, waiting, running, active))


def _plan(size: int) -> Workload:
    # size free slots, every priority but CRITICAL has more work than the slots can take
    waiting = [0, size, size, size, size]
    running = [0, 1, 1, 1, 1]
    return lambda core: lambda: core.plan(waiting, running, 50, size, FETCH_LIMIT)


def _batch_ids(size: int) -> Workload:
    # claimed rows come back in claim order: by priority, then age
    rnd = random.Random(SEED)
    priorities = sorted(rnd.choice(PRIORITIES) for _ in range(size))
    ids = rnd.sample(range(10 * size), size)
    return lambda core: lambda: core.batch_ids(ids, priorities, FETCH_LIMIT)


def _plan_sized(size: int) -> Workload:
    waiting = [0, size * 10, size * 10, size * 10, size * 10]
    running = [0, 1, 1, 1, 1]
    return lambda core: lambda: core.plan_sized(waiting, running, 50, size, [1, 7, 3, 40, 1000])


def _time_batches(size: int) -> Workload:
    # claimed rows of one priority: mostly runs of one command, a few others, one never seen
    rnd = random.Random(SEED)
    commands = [rnd.choice(("Noop",) * 8 + ("Mail", "Unseen")) for _ in range(size)]
    estimates = {"Noop": 0.00001, "Mail": 0.002}
    return lambda core: lambda: core.time_batches(commands, estimates, 0.020, 1000, size)


def _allowed_workers(size: int) -> Workload:
    rnd = random.Random(SEED)
    workers = [rnd.randint(0, 64) for _ in range(size)]
    loads = [rnd.uniform(0, 30) for _ in range(size)]
    max_loads = [rnd.choice((0.0, 20.0, 50.0)) for _ in range(size)]
    waiting = [rnd.random() < 0.5 for _ in range(size)]
    return lambda core: lambda: list(map(core.allowed_workers, workers, loads, max_loads, waiting))


WORKLOADS: dict[str, Callable[[int], Workload]] = {
    "round_half_up": _round_half_up,
    "quadratic_limits": _quadratic_limits,
    "rank_of": _rank_of,
    "choose_priority": _choose_priority,
    "plan": _plan,
    "batch_ids": _batch_ids,
    "plan_sized": _plan_sized,
    "time_batches": _time_batches,
    "allowed_workers": _allowed_workers,
}

# Garbage collection off while timing: batch_ids and the map-based loops build many small lists, and the
# pauses that triggers depend on the whole process's heap (pytest's included), not on the code measured.
pytestmark = pytest.mark.benchmark(disable_gc=True)

# (function, size) -> implementation -> (median seconds, the benchmark fixture)
_RESULTS: dict[tuple[str, int], dict[str, tuple[float, Any]]] = {}


def _module(implementation: str) -> ModuleType:
    if implementation == "python":
        return core_py
    if core_c is None:
        message = "the compiled extension fastsched._core is not built"
        if os.environ.get("FASTSCHED_IMPL") == "c":
            pytest.fail(f"FASTSCHED_IMPL=c but {message}", pytrace=False)
        pytest.skip(message)
    return core_c


def _record(function: str, size: int, implementation: str, benchmark: Any) -> None:
    """Keep this run's median; once both twins ran, store the speedup in both benchmarks' extra_info."""
    if benchmark.stats is None:  # --benchmark-disable / --benchmark-skip
        return
    results = _RESULTS.setdefault((function, size), {})
    results[implementation] = (benchmark.stats.stats.median, benchmark)
    if "c" in results and "python" in results:
        speedup = results["python"][0] / results["c"][0]
        for _median, fixture in results.values():
            fixture.extra_info["c_speedup"] = round(speedup, 1)


@pytest.fixture(scope="module", autouse=True)
def _print_speedups(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    plugins = request.config.pluginmanager
    reporter, capture = plugins.getplugin("terminalreporter"), plugins.getplugin("capturemanager")
    rows = [(key, results) for key, results in _RESULTS.items() if "c" in results and "python" in results]
    if reporter is None or capture is None or not rows:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        reporter.write_line("compiled core speedup (python median / c median):")
        for (function, size), results in sorted(rows):
            python_median, c_median = results["python"][0], results["c"][0]
            reporter.write_line(
                f"  {function:<18} {size:>7,}   c {c_median * 1e6:>11.1f} us"
                f"   python {python_median * 1e6:>11.1f} us   x{python_median / c_median:.1f}"
            )


@pytest.mark.parametrize("implementation", ["c", "python"])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("function", list(WORKLOADS))
def test_core(benchmark: Any, function: str, size: int, implementation: str) -> None:
    core = _module(implementation)
    run = WORKLOADS[function](size)(core)
    benchmark.group = f"{function}[{size}]"
    benchmark.extra_info.update(function=function, size=size, implementation=implementation)
    if QUICK:
        result = benchmark.pedantic(run, rounds=1, iterations=1)
    else:
        result = benchmark(run)
    if implementation == "c":  # the twins agree on the benchmarked input
        assert result == WORKLOADS[function](size)(core_py)()
    _record(function, size, implementation, benchmark)
