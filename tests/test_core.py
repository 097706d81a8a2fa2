"""The scheduling core: every test runs against both twins, and hypothesis checks they agree.

The compiled twin (``fastsched._core``) and the reference (``fastsched._core_py``) are imported directly,
whatever ``fastsched.core`` picked. When the extension is not built its tests are skipped, except under
``FASTSCHED_IMPL=c``, where they fail: CI must not pass a broken build as "tested twice in Python".
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from array import array
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastsched._core_py as core_py

try:
    import fastsched._core as core_c
except ImportError as exc:  # not built
    core_c = None
    _C_IMPORT_ERROR: str = str(exc)
else:
    _C_IMPORT_ERROR = ""

C_REQUIRED = os.environ.get("FASTSCHED_IMPL") == "c"
REPO_ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS = (
    "round_half_up",
    "quadratic_limits",
    "rank_of",
    "choose_priority",
    "plan",
    "plan_sized",
    "batch_ids",
    "time_batches",
    "allowed_workers",
)
CONSTANTS = ("PRIORITIES", "BATCHED_UP_TO", "MAX_COUNT", "BUDGET_SLACK")


def _compiled() -> ModuleType:
    """The compiled twin; skip when it is not built, FAIL when FASTSCHED_IMPL=c demands it."""
    if core_c is None:
        message = f"the compiled extension fastsched._core is not built ({_C_IMPORT_ERROR})"
        if C_REQUIRED:
            pytest.fail(f"FASTSCHED_IMPL=c but {message}", pytrace=False)
        pytest.skip(message)
    return core_c


@pytest.fixture(params=["python", "c"])
def core(request: pytest.FixtureRequest) -> ModuleType:
    """Each twin in turn."""
    return core_py if request.param == "python" else _compiled()


def outcome(function: Callable[..., Any], *args: Any) -> tuple[str, Any]:
    """What a call did: ("ok", value) or (exception type name, message)."""
    try:
        return ("ok", function(*args))
    except Exception as exc:  # noqa: BLE001 - comparing the twins' errors is the point
        return (type(exc).__name__, str(exc))


# ------------------------------------------------------------------------------------ the compiled twin


def test_compiled_extension_is_built() -> None:
    """Fails (never skips) under FASTSCHED_IMPL=c when the extension is missing."""
    module = _compiled()
    assert module.__file__ is not None and not module.__file__.endswith(".py")


def test_both_twins_define_the_same_names(core: ModuleType) -> None:
    for name in FUNCTIONS:
        assert callable(getattr(core, name)), name
    assert core.PRIORITIES == (10, 20, 30, 40, 50)
    assert core.BATCHED_UP_TO == 30
    assert core.MAX_COUNT == 2**53 - 1


# -------------------------------------------------------------------------------------------- rounding


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (2.5, 3),
        (0.5, 1),
        (1.49, 1),
        (1.5, 2),
        (3.5, 4),
        (-2.5, -3),
        (-0.5, -1),
        (-1.49, -1),
        (0.0, 0),
        (-0.0, 0),
        (0.49999999999999994, 0),  # floor(x + 0.5) gets this one wrong
        (4503599627370497.0, 4503599627370497),  # 2**52 + 1: no fraction left to round
        (7, 7),
        (True, 1),
    ],
)
def test_round_half_up(core: ModuleType, value: float, expected: int) -> None:
    result = core.round_half_up(value)
    assert result == expected
    assert type(result) is int


def test_round_half_up_differs_from_python_round(core: ModuleType) -> None:
    assert round(2.5) == 2
    assert core.round_half_up(2.5) == 3


def test_round_half_up_errors(core: ModuleType) -> None:
    with pytest.raises(TypeError, match="^value must be an int or a float, got str$"):
        core.round_half_up("2.5")
    with pytest.raises(ValueError, match="NaN"):
        core.round_half_up(math.nan)
    with pytest.raises(OverflowError, match="infinity"):
        core.round_half_up(-math.inf)
    with pytest.raises(OverflowError):
        core.round_half_up(10**400)


# ---------------------------------------------------------------------------------------------- limits

LIMIT_TABLE = {
    4: {2: [3, 1], 3: [3, 1, 1], 4: [2, 1, 1, 1], 5: [2, 1, 1, 1, 1]},
    10: {2: [8, 2], 3: [6, 3, 1], 4: [5, 3, 1, 1], 5: [5, 3, 2, 1, 1]},
    20: {2: [16, 4], 3: [13, 6, 1], 4: [11, 6, 3, 1], 5: [9, 6, 3, 1, 1]},
}


@pytest.mark.parametrize(
    ("active", "n", "expected"),
    [(active, n, limits) for active, row in LIMIT_TABLE.items() for n, limits in row.items()],
)
def test_quadratic_limits_table(core: ModuleType, active: int, n: int, expected: list[int]) -> None:
    assert core.quadratic_limits(active, n) == expected


@pytest.mark.parametrize("n", range(6))
def test_quadratic_limits_match_the_float_formula(core: ModuleType, n: int) -> None:
    total = sum(k * k for k in range(1, n + 1))
    for active in range(60):
        expected = [max(1, core_py.round_half_up(active * (n - j) ** 2 / total)) for j in range(n)]
        assert core.quadratic_limits(active, n) == expected


def test_quadratic_limits_edges(core: ModuleType) -> None:
    assert core.quadratic_limits(10, 0) == []
    assert core.quadratic_limits(0, 3) == [1, 1, 1]
    assert core.quadratic_limits(7, 1) == [7]
    big = core.MAX_COUNT
    assert core.quadratic_limits(big, 5) == [(2 * big * k * k + 55) // 110 for k in (5, 4, 3, 2, 1)]


def test_quadratic_limits_errors(core: ModuleType) -> None:
    with pytest.raises(ValueError, match=r"^n must be between 0 and 5, got 7$"):
        core.quadratic_limits(10, 7)
    with pytest.raises(ValueError, match=r"^n must be between 0 and 5, got -1$"):
        core.quadratic_limits(10, -1)
    with pytest.raises(ValueError, match=r"^active must be between 0 and 9007199254740991, got -3$"):
        core.quadratic_limits(-3, 2)
    with pytest.raises(
        ValueError, match=r"^active must be between 0 and 9007199254740991, got 9007199254740992$"
    ):
        core.quadratic_limits(2**53, 2)
    with pytest.raises(TypeError, match="cannot be interpreted as an integer"):
        core.quadratic_limits(10.0, 2)


# ----------------------------------------------------------------------------------------------- ranks


@pytest.mark.parametrize(("priority", "rank"), [(10, 0), (20, 1), (30, 2), (40, 3), (50, 4)])
def test_rank_of(core: ModuleType, priority: int, rank: int) -> None:
    assert core.rank_of(priority) == rank


@pytest.mark.parametrize("bad", [7, 0, 15, 60, -10, 10**30])
def test_rank_of_rejects(core: ModuleType, bad: int) -> None:
    with pytest.raises(ValueError, match=rf"^priority must be one of 10, 20, 30, 40, 50, got {bad}$"):
        core.rank_of(bad)


def test_rank_of_accepts_int_likes_only(core: ModuleType) -> None:
    from fastsched.priority import Priority

    assert core.rank_of(Priority.LOW) == 3
    with pytest.raises(TypeError):
        core.rank_of(10.0)
    with pytest.raises(TypeError):
        core.rank_of("10")


# ------------------------------------------------------------------------------------- choose_priority


def test_nothing_waiting(core: ModuleType) -> None:
    assert core.choose_priority([0] * 5, [0] * 5, 5) == -1
    assert core.choose_priority([0] * 5, [3, 2, 1, 0, 0], 5) == -1


def test_rule_a_critical_always_first(core: ModuleType) -> None:
    # CRITICAL is far over any share and HIGH starves, yet CRITICAL still wins.
    assert core.choose_priority([1, 5, 0, 0, 0], [50, 0, 0, 0, 0], 10) == 0


def test_rule_b_starvation_guard(core: ModuleType) -> None:
    # HIGH is under its share, but MEDIUM has nothing running: it gets the slot.
    assert core.choose_priority([0, 5, 5, 5, 0], [0, 1, 0, 0, 0], 10) == 2
    # the first starving priority in priority order
    assert core.choose_priority([0, 5, 0, 5, 5], [0, 9, 0, 0, 0], 10) == 3


def test_rule_c_quadratic_share(core: ModuleType) -> None:
    # HIGH and MEDIUM in play: limits [8, 2] for 10 workers.
    assert core.choose_priority([0, 5, 5, 0, 0], [0, 7, 1, 0, 0], 10) == 1
    assert core.choose_priority([0, 5, 5, 0, 0], [0, 8, 1, 0, 0], 10) == 2


def test_rule_c_uses_running_total_when_larger_than_active(core: ModuleType) -> None:
    # active says 2, but 10 are running: limits come from 10 ([8, 2]), not from 2 ([2, 1]).
    assert core.choose_priority([0, 5, 5, 0, 0], [0, 7, 3, 0, 0], 2) == 1


def test_rule_c_counts_priorities_that_only_run(core: ModuleType) -> None:
    # LOW runs with nothing waiting: it is in play, so n = 3 and the limits are [13, 6, 1]: HIGH (14) is
    # over its share and MEDIUM (5 < 6) gets the slot.
    assert core.choose_priority([0, 5, 5, 0, 0], [0, 14, 5, 1, 0], 20) == 2
    # without it n = 2, the limits are [16, 4], and HIGH is under its share.
    assert core.choose_priority([0, 5, 5, 0, 0], [0, 14, 5, 0, 0], 20) == 1


def test_rule_d_highest_waiting_when_all_at_their_share(core: ModuleType) -> None:
    assert core.choose_priority([0, 5, 5, 0, 0], [0, 8, 2, 0, 0], 10) == 1
    assert core.choose_priority([0, 0, 5, 5, 0], [0, 0, 9, 9, 0], 4) == 2


def test_fixed_quirk_limits_follow_rank_among_priorities_in_play(core: ModuleType) -> None:
    # Friendica's example: running {30: 2, 40: 1, 50: 1}, waiting {40, 50}, 6 workers; limits [4, 2, 1].
    # Friendica returned 30 (running 2 < limit[0] = 4) although nothing of it waits. Here 30 is skipped
    # and 40, second in play, is checked against limits[1] = 2.
    waiting, running = [0, 0, 0, 3, 3], [0, 0, 2, 1, 1]
    assert core.quadratic_limits(6, 3) == [4, 2, 1]
    assert core.choose_priority(waiting, running, 6) == 3


def test_fixed_quirk_never_returns_a_priority_with_nothing_waiting(core: ModuleType) -> None:
    for running in ([0, 0, 5, 0, 0], [0, 0, 0, 0, 9], [1, 2, 3, 4, 5]):
        for waiting_rank in range(5):
            waiting = [0] * 5
            waiting[waiting_rank] = 2
            assert core.choose_priority(waiting, running, 3) == waiting_rank


def test_choose_priority_accepts_any_sequence(core: ModuleType) -> None:
    expected = core.choose_priority([0, 5, 5, 0, 0], [0, 8, 1, 0, 0], 10)
    assert core.choose_priority((0, 5, 5, 0, 0), array("q", [0, 8, 1, 0, 0]), 10) == expected
    assert core.choose_priority(iter([0, 5, 5, 0, 0]), range(5), True) == 1


def test_choose_priority_errors(core: ModuleType) -> None:
    with pytest.raises(ValueError, match=r"^waiting must have 5 entries \(one per priority\), got 4$"):
        core.choose_priority([0, 0, 0, 0], [0] * 5, 1)
    with pytest.raises(ValueError, match=r"^running must have 5 entries \(one per priority\), got 6$"):
        core.choose_priority([0] * 5, [0] * 6, 1)
    with pytest.raises(ValueError, match=r"^waiting\[3\] must be between 0 and 9007199254740991, got -1$"):
        core.choose_priority([0, 0, 0, -1, 0], [0] * 5, 1)
    with pytest.raises(ValueError, match=r"^running\[0\] must be between 0 and 9007199254740991, got -2$"):
        core.choose_priority([0] * 5, [-2, 0, 0, 0, 0], 1)
    with pytest.raises(ValueError, match=r"^active must be between 0 and 9007199254740991, got -1$"):
        core.choose_priority([0] * 5, [0] * 5, -1)
    with pytest.raises(TypeError, match=r"^waiting must be a sequence of ints, got int$"):
        core.choose_priority(5, [0] * 5, 1)
    with pytest.raises(TypeError, match="cannot be interpreted as an integer"):
        core.choose_priority([0, 0, 0.5, 0, 0], [0] * 5, 1)


# ------------------------------------------------------------------------------------------------ plan


def test_plan_worked_example(core: ModuleType) -> None:
    # slot 1, 2: CRITICAL (rule a), the second slot takes the last CRITICAL job;
    # slot 3: HIGH (starvation guard); slot 4: MEDIUM (starvation guard).
    assert core.plan([2, 10, 10, 10, 10], [0] * 5, 4, 4, 1) == [2, 1, 1, 0, 0]


def test_plan_batches_medium_and_higher_only(core: ModuleType) -> None:
    assert core.plan([0, 0, 100, 0, 0], [0] * 5, 10, 3, 5) == [0, 0, 15, 0, 0]
    assert core.plan([0, 0, 0, 100, 0], [0] * 5, 10, 3, 5) == [0, 0, 0, 3, 0]
    assert core.plan([0, 0, 0, 0, 100], [0] * 5, 10, 3, 5) == [0, 0, 0, 0, 3]
    assert core.plan([100, 0, 0, 0, 0], [0] * 5, 10, 2, 7) == [14, 0, 0, 0, 0]


def test_plan_never_more_than_waiting(core: ModuleType) -> None:
    assert core.plan([0, 0, 3, 0, 0], [0] * 5, 10, 5, 10) == [0, 0, 3, 0, 0]
    assert core.plan([1, 2, 3, 4, 5], [0] * 5, 10, 10**30, 10**30) == [1, 2, 3, 4, 5]


def test_plan_stops_when_nothing_waits(core: ModuleType) -> None:
    assert core.plan([0] * 5, [3, 0, 0, 0, 0], 5, 10, 1) == [0] * 5
    assert core.plan([0, 1, 0, 0, 1], [0] * 5, 5, 0, 1) == [0] * 5


def test_plan_shares_slots_quadratically(core: ModuleType) -> None:
    # 10 workers, HIGH..NEGLIGIBLE all waiting: the starvation guard gives each one slot, then the shares
    # of [5, 3, 1, 1] (n = 4) hand HIGH and MEDIUM the rest, HIGH first.
    assert core.plan([0, 50, 50, 50, 50], [0] * 5, 10, 10, 1) == [0, 5, 3, 1, 1]


def test_plan_does_not_mutate_its_inputs(core: ModuleType) -> None:
    waiting, running = [3, 4, 5, 6, 7], [1, 1, 1, 1, 1]
    core.plan(waiting, running, 5, 10, 2)
    assert waiting == [3, 4, 5, 6, 7]
    assert running == [1, 1, 1, 1, 1]


def test_plan_accepts_any_sequence(core: ModuleType) -> None:
    expected = core.plan([2, 10, 10, 10, 10], [0] * 5, 4, 4, 1)
    assert core.plan((2, 10, 10, 10, 10), array("q", [0] * 5), 4, 4, 1) == expected
    result = core.plan(range(5), range(5), 4, 4, 1)
    assert type(result) is list and all(type(x) is int for x in result)


def test_plan_errors(core: ModuleType) -> None:
    with pytest.raises(ValueError, match=r"^free_slots must be >= 0, got -1$"):
        core.plan([0] * 5, [0] * 5, 1, -1, 1)
    with pytest.raises(ValueError, match=r"^fetch_limit must be >= 1, got 0$"):
        core.plan([0] * 5, [0] * 5, 1, 1, 0)
    with pytest.raises(ValueError, match=r"^active must be between 0 and 9007199254740991, got -1$"):
        core.plan([0] * 5, [0] * 5, -1, 1, 1)
    with pytest.raises(ValueError, match=r"^waiting must have 5 entries \(one per priority\), got 0$"):
        core.plan([], [0] * 5, 1, 1, 1)


def test_plan_sized_takes_each_priority_s_own_batch_size(core: ModuleType) -> None:
    # Every priority batches, LOW and NEGLIGIBLE included, each by its own size.
    assert core.plan_sized([0, 0, 100, 0, 100], [0] * 5, 4, 4, [1, 1, 7, 1, 9]) == [0, 0, 21, 0, 9]
    assert core.plan_sized([0, 0, 0, 100, 0], [0] * 5, 10, 3, [5, 5, 5, 40, 5]) == [0, 0, 0, 100, 0]


def test_plan_sized_shares_workers_not_jobs(core: ModuleType) -> None:
    # The slots go as plan's do whatever the batches hold: 10 workers, shares [5, 3, 1, 1].
    sizes = [1, 100, 1, 50, 1]
    claim = core.plan_sized([0, 10**6, 10**6, 10**6, 10**6], [0] * 5, 10, 10, sizes)
    assert claim == [0, 5 * 100, 3 * 1, 1 * 50, 1 * 1]
    assert core.plan_sized([2, 10, 10, 10, 10], [0] * 5, 4, 4, [1] * 5) == core.plan([2, 10, 10, 10, 10], [0] * 5, 4, 4, 1)


def test_plan_sized_errors(core: ModuleType) -> None:
    with pytest.raises(ValueError, match=r"^batch_sizes\[3\] must be >= 1, got 0$"):
        core.plan_sized([0] * 5, [0] * 5, 1, 1, [1, 1, 1, 0, 1])
    with pytest.raises(ValueError, match=r"^batch_sizes must have 5 entries \(one per priority\), got 4$"):
        core.plan_sized([0] * 5, [0] * 5, 1, 1, [1] * 4)
    with pytest.raises(ValueError, match=r"^free_slots must be >= 0, got -1$"):
        core.plan_sized([0] * 5, [0] * 5, 1, -1, [1] * 5)


# ----------------------------------------------------------------------------------------- time_batches


def test_time_batches_fill_the_budget(core: ModuleType) -> None:
    # 4 ms jobs in a 10 ms budget: two per batch; five fill 20 ms, though their float sum is a hair over.
    assert core.time_batches(["a"] * 7, {"a": 0.004}, 0.010, 100, 10) == [2, 2, 2, 1]
    assert core.time_batches(["a"] * 7, {"a": 0.004}, 0.020, 100, 10) == [5, 2]


def test_time_batches_a_command_never_seen_gets_one_job(core: ModuleType) -> None:
    assert core.time_batches(["a", "a", "new", "new", "a"], {"a": 0.001}, 0.010, 100, 10) == [2, 1, 1, 1]


def test_time_batches_a_slow_command_goes_one_at_a_time(core: ModuleType) -> None:
    estimates = {"slow": 10.0, "fast": 0.00005}
    assert core.time_batches(["slow", "slow", "fast", "fast"], estimates, 0.020, 1000, 10) == [1, 1, 2]
    # Ten thousand 50 µs jobs go in a handful of batches, each capped at the fetch limit.
    lengths = core.time_batches(["fast"] * 10_000, estimates, 0.020, 1000, 100)
    assert sum(lengths) == 10_000 and len(lengths) <= 26 and max(lengths) <= 400
    assert core.time_batches(["fast"] * 10_000, estimates, 0.020, 300, 100) == [300] * 33 + [100]


def test_time_batches_stop_at_the_slots_and_the_cap(core: ModuleType) -> None:
    assert core.time_batches(["a"] * 100, {"a": 0.0}, 0.010, 3, 2) == [3, 3]
    assert core.time_batches(["a"] * 5, {"a": 0.0}, 0.010, 100, 0) == []
    assert core.time_batches([], {"a": 0.0}, 0.010, 100, 5) == []


def test_time_batches_errors(core: ModuleType) -> None:
    with pytest.raises(ValueError, match=r"^budget must be a number of seconds >= 0, got -1$"):
        core.time_batches(["a"], {}, -1, 1, 1)
    with pytest.raises(ValueError, match=r"^cap must be >= 1, got 0$"):
        core.time_batches(["a"], {}, 0.01, 0, 1)
    with pytest.raises(ValueError, match=r"^slots must be >= 0, got -1$"):
        core.time_batches(["a"], {}, 0.01, 1, -1)
    with pytest.raises(ValueError, match=r"^estimates\['a'\] must be a number of seconds >= 0, got -0.5$"):
        core.time_batches(["a"], {"a": -0.5}, 0.01, 1, 1)
    with pytest.raises(TypeError, match=r"^estimates must be a mapping of command to seconds, got list$"):
        core.time_batches(["a"], [], 0.01, 1, 1)


# -------------------------------------------------------------------------------------------- batch_ids


def test_batch_ids(core: ModuleType) -> None:
    ids = [1, 2, 3, 4, 5, 6, 7]
    assert core.batch_ids(ids, [20, 20, 20, 40, 40, 20, 50], 2) == [[1, 2], [3], [4], [5], [6], [7]]


def test_batch_ids_new_batch_when_priority_changes(core: ModuleType) -> None:
    assert core.batch_ids([9, 8, 7, 6], [10, 20, 20, 10], 5) == [[9], [8, 7], [6]]


def test_batch_ids_full_batches(core: ModuleType) -> None:
    assert core.batch_ids(list(range(7)), [30] * 7, 3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert core.batch_ids(list(range(3)), [40] * 3, 3) == [[0], [1], [2]]
    assert core.batch_ids(list(range(2)), [50] * 2, 3) == [[0], [1]]
    assert core.batch_ids([5, 6], [10, 10], 10**40) == [[5, 6]]


def test_batch_ids_keeps_order_and_ids(core: ModuleType) -> None:
    ids = [10**20, 3, 2**63, 1]
    assert core.batch_ids(ids, [10, 10, 10, 10], 2) == [[10**20, 3], [2**63, 1]]
    assert core.batch_ids([], [], 1) == []


def test_batch_ids_returns_lists_of_ints(core: ModuleType) -> None:
    from fastsched.priority import Priority

    result = core.batch_ids(array("q", [1, 2, 3]), (Priority.HIGH, 20, 40), 2)
    assert result == [[1, 2], [3]]
    assert all(type(batch) is list for batch in result)
    assert all(type(job_id) is int for batch in result for job_id in batch)
    assert core.batch_ids((True, 2), range(10, 30, 10), 1) == [[1], [2]]


@pytest.mark.parametrize(
    "make",
    [list, tuple, lambda v: array("q", v), lambda v: array("l", v), lambda v: array("i", v), iter],
    ids=["list", "tuple", "array-q", "array-l", "array-i", "iterator"],
)
def test_batch_ids_accepts_any_sequence_of_priorities(core: ModuleType, make: Callable[[list[int]], Any]) -> None:
    from fastsched.priority import Priority

    assert core.batch_ids([1, 2, 3, 4], make([10, 40, 40, 30]), 5) == [[1], [2], [3], [4]]
    assert core.batch_ids([1, 2, 3], [Priority.HIGH, Priority.HIGH, 50], 5) == [[1, 2], [3]]


def test_batch_ids_errors(core: ModuleType) -> None:
    with pytest.raises(
        ValueError, match=r"^ids and priorities must have the same length, got 2 ids and 1 priorities$"
    ):
        core.batch_ids([1, 2], [10], 1)
    with pytest.raises(ValueError, match=r"^fetch_limit must be >= 1, got 0$"):
        core.batch_ids([1], [10], 0)
    with pytest.raises(ValueError, match=r"^priorities\[1\] must be one of 10, 20, 30, 40, 50, got 25$"):
        core.batch_ids([1, 2], [10, 25], 1)
    with pytest.raises(TypeError, match=r"^ids must be a sequence of ints, got NoneType$"):
        core.batch_ids(None, [], 1)
    with pytest.raises(TypeError, match="cannot be interpreted as an integer"):
        core.batch_ids(["a"], [10], 1)


# -------------------------------------------------------------------------------------- allowed_workers


@pytest.mark.parametrize(("load", "expected"), [(0.5, 10), (2, 8), (5, 5), (10, 2), (15, 1), (19, 1)])
def test_allowed_workers_friendica_curve(core: ModuleType, load: float, expected: int) -> None:
    # maxloadavg 20, exponent 3, worker_queues 10 (friendica-worker.md §2.8)
    assert core.allowed_workers(10, load, 20, True) == expected


def test_allowed_workers_no_reading_means_no_throttle(core: ModuleType) -> None:
    assert core.allowed_workers(10, 0.0, 20, False) == 10
    assert core.allowed_workers(10, -1.0, 20, False) == 10
    assert core.allowed_workers(10, math.nan, 20, False) == 10
    assert core.allowed_workers(10, 5.0, 0, False) == 10
    assert core.allowed_workers(10, 5.0, math.inf, False) == 10


def test_allowed_workers_zero_only_when_nothing_waits(core: ModuleType) -> None:
    assert core.allowed_workers(10, 25.0, 20.0, False) == 0
    assert core.allowed_workers(10, 25.0, 20.0, True) == 1
    assert core.allowed_workers(10, math.inf, 20.0, True) == 1
    assert core.allowed_workers(0, 25.0, 20.0, True) == 0


def test_allowed_workers_errors(core: ModuleType) -> None:
    with pytest.raises(ValueError, match=r"^workers must be between 0 and 9007199254740991, got -1$"):
        core.allowed_workers(-1, 1.0, 2.0, True)
    with pytest.raises(TypeError, match=r"^load must be an int or a float, got str$"):
        core.allowed_workers(1, "1", 2.0, True)
    with pytest.raises(TypeError, match=r"^max_load must be an int or a float, got NoneType$"):
        core.allowed_workers(1, 1.0, None, True)


# ------------------------------------------------------------------------------- the twins agree: fuzz

counts = st.one_of(st.integers(0, 12), st.integers(0, 2**53 - 1), st.integers(-3, 2**64))
small_counts = st.integers(0, 30)
vectors = st.one_of(
    st.lists(small_counts, min_size=5, max_size=5),
    st.lists(counts, min_size=5, max_size=5),
    st.lists(small_counts, min_size=0, max_size=7),
)
priority_values = st.one_of(st.sampled_from([10, 20, 30, 40, 50]), st.integers(-(2**70), 2**70))
priority_lists = st.one_of(
    st.lists(st.sampled_from([10, 20, 30, 40, 50]), max_size=60),
    st.lists(priority_values, max_size=8),
)
reals = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(10**400), 10**400))


def agree(name: str, *args: Any) -> None:
    compiled = _compiled()
    assert outcome(getattr(compiled, name), *args) == outcome(getattr(core_py, name), *args), args


@settings(max_examples=300)
@given(reals)
def test_fuzz_round_half_up(value: float) -> None:
    agree("round_half_up", value)


@settings(max_examples=300)
@given(counts, st.integers(-2, 8))
def test_fuzz_quadratic_limits(active: int, n: int) -> None:
    agree("quadratic_limits", active, n)


@settings(max_examples=200)
@given(priority_values)
def test_fuzz_rank_of(priority: int) -> None:
    agree("rank_of", priority)


@settings(max_examples=500)
@given(vectors, vectors, counts)
def test_fuzz_choose_priority(waiting: list[int], running: list[int], active: int) -> None:
    agree("choose_priority", waiting, running, active)


@settings(max_examples=500)
@given(
    st.lists(small_counts, min_size=5, max_size=5),
    st.lists(small_counts, min_size=5, max_size=5),
    small_counts,
    st.one_of(st.integers(-2, 40), st.integers(0, 10**30)),
    st.one_of(st.integers(-1, 8), st.integers(1, 10**30)),
)
def test_fuzz_plan(waiting: list[int], running: list[int], active: int, free_slots: int, fetch: int) -> None:
    agree("plan", waiting, running, active, free_slots, fetch)
    # and the plan's own invariants
    if free_slots >= 0 and fetch >= 1:
        result = core_py.plan(waiting, running, active, free_slots, fetch)
        assert all(0 <= claim <= left for claim, left in zip(result, waiting))


@settings(max_examples=100)
@given(vectors, vectors, counts, st.integers(-1, 20), st.integers(0, 5))
def test_fuzz_plan_invalid_inputs(
    waiting: list[int], running: list[int], active: int, free_slots: int, fetch: int
) -> None:
    agree("plan", waiting, running, active, free_slots, fetch)


@settings(max_examples=300)
@given(
    st.lists(small_counts, min_size=5, max_size=5),
    st.lists(small_counts, min_size=5, max_size=5),
    small_counts,
    st.integers(-2, 40),
    st.lists(st.integers(-1, 60), min_size=4, max_size=6),
)
def test_fuzz_plan_sized(
    waiting: list[int], running: list[int], active: int, free_slots: int, sizes: list[int]
) -> None:
    agree("plan_sized", waiting, running, active, free_slots, sizes)
    if len(sizes) == 5 and min(sizes) >= 1 and free_slots >= 0:
        result = core_py.plan_sized(waiting, running, active, free_slots, sizes)
        assert all(0 <= claim <= left for claim, left in zip(result, waiting))
        # With one size for every priority it is plan where plan batches every priority alike.
        if len(set(sizes)) == 1 and sizes[0] == 1:
            assert result == core_py.plan(waiting, running, active, free_slots, 1)


@settings(max_examples=500)
@given(
    st.lists(st.sampled_from(["a", "b", "c", "new"]), max_size=60),
    st.dictionaries(
        st.sampled_from(["a", "b", "c"]),
        st.one_of(st.floats(0, 0.03), st.just(0.0), st.floats(-1, 1), st.none(), st.integers(0, 2)),
    ),
    st.one_of(st.floats(0, 0.05), st.just(float("inf")), st.floats(allow_nan=True), st.integers(-1, 1)),
    st.one_of(st.integers(-1, 10), st.integers(10**20, 10**21)),
    st.one_of(st.integers(-1, 10), st.integers(10**20, 10**21)),
)
def test_fuzz_time_batches(commands: list[str], estimates: dict[str, Any], budget: float, cap: int, slots: int) -> None:
    agree("time_batches", commands, estimates, budget, cap, slots)
    result = outcome(core_py.time_batches, commands, estimates, budget, cap, slots)
    if result[0] == "ok":
        lengths = result[1]
        assert len(lengths) <= slots and all(1 <= n <= cap for n in lengths)
        assert sum(lengths) <= len(commands)
        # A command never seen is always alone in its batch.
        start = 0
        for n in lengths:
            batch = commands[start:start + n]
            assert n == 1 or all(estimates.get(c) is not None for c in batch)
            start += n


@settings(max_examples=300)
@given(
    st.lists(st.sampled_from([10, 20, 30, 40, 50]), max_size=60),
    st.integers(-1, 8),
    st.data(),
)
def test_fuzz_batch_ids(priorities: list[int], fetch_limit: int, data: st.DataObject) -> None:
    ids = data.draw(st.lists(st.integers(0, 2**70), min_size=len(priorities), max_size=len(priorities)))
    agree("batch_ids", ids, priorities, fetch_limit)
    if fetch_limit >= 1:
        batches = core_py.batch_ids(ids, priorities, fetch_limit)
        assert [job_id for batch in batches for job_id in batch] == ids


@settings(max_examples=100)
@given(st.lists(st.integers(0, 9), max_size=6), priority_lists, st.integers(0, 3))
def test_fuzz_batch_ids_invalid_inputs(ids: list[int], priorities: list[int], fetch_limit: int) -> None:
    agree("batch_ids", ids, priorities, fetch_limit)


@settings(max_examples=500)
@given(st.one_of(small_counts, counts), reals, reals, st.booleans())
def test_fuzz_allowed_workers(workers: int, load: float, max_load: float, waiting: bool) -> None:
    agree("allowed_workers", workers, load, max_load, waiting)


@settings(max_examples=300)
@given(st.integers(0, 1000), st.floats(0, 100), st.floats(0.01, 100), st.booleans())
def test_fuzz_allowed_workers_realistic(workers: int, load: float, max_load: float, waiting: bool) -> None:
    agree("allowed_workers", workers, load, max_load, waiting)
    allowed = core_py.allowed_workers(workers, load, max_load, waiting)
    assert 0 <= allowed <= workers
    if waiting and workers:
        assert allowed >= 1


# --------------------------------------------------------------------------------- fastsched.core: which


def _run_core(env_impl: str | None, pythonpath: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Import fastsched.core in a clean interpreter and print IMPLEMENTATION."""
    env = {key: value for key, value in os.environ.items() if key not in ("FASTSCHED_IMPL", "PYTHONPATH")}
    if env_impl is not None:
        env["FASTSCHED_IMPL"] = env_impl
    env["PYTHONPATH"] = str(pythonpath)
    # -S: no site-packages, so an editable install's import hook cannot hand the subprocess the
    # checkout's extension behind the copy on PYTHONPATH (fastsched.core imports nothing from there).
    return subprocess.run(
        [sys.executable, "-S", "-c", "import fastsched.core as c; print(c.IMPLEMENTATION)"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def package_without_extension(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the fastsched package without the compiled extension; its parent goes on sys.path."""
    root = tmp_path_factory.mktemp("no_extension")
    shutil.copytree(
        REPO_ROOT / "fastsched",
        root / "fastsched",
        ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__"),
    )
    return root


def test_selector_defaults_to_compiled(tmp_path: Path) -> None:
    _compiled()
    result = _run_core(None, REPO_ROOT, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "c"


def test_selector_python_forced(tmp_path: Path) -> None:
    result = _run_core("python", REPO_ROOT, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "python"


def test_selector_c_forced(tmp_path: Path) -> None:
    _compiled()
    result = _run_core("c", REPO_ROOT, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "c"


def test_selector_falls_back_when_extension_missing(package_without_extension: Path) -> None:
    result = _run_core(None, package_without_extension, package_without_extension)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "python"


def test_selector_c_forced_but_missing_fails_loudly(package_without_extension: Path) -> None:
    result = _run_core("c", package_without_extension, package_without_extension)
    assert result.returncode != 0
    assert (
        "ImportError: FASTSCHED_IMPL=c but the compiled extension fastsched._core is not built"
        in result.stderr
    )
    assert "pip install ." in result.stderr


def test_selector_rejects_unknown_value(tmp_path: Path) -> None:
    result = _run_core("bogus", REPO_ROOT, tmp_path)
    assert result.returncode != 0
    assert "ValueError: FASTSCHED_IMPL must be one of c, python (or unset), got 'bogus'" in result.stderr


def test_selector_reexports_everything() -> None:
    import fastsched.core as selected

    expected = core_py if selected.IMPLEMENTATION == "python" else _compiled()
    assert selected.IMPLEMENTATION in ("c", "python")
    if C_REQUIRED:
        assert selected.IMPLEMENTATION == "c"
    for name in FUNCTIONS + CONSTANTS:
        assert getattr(selected, name) is getattr(expected, name), name
    assert set(selected.__all__) == set(FUNCTIONS + CONSTANTS + ("IMPLEMENTATION",))
