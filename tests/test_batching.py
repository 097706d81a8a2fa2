"""Batches sized by time: the estimates and the fit."""
from __future__ import annotations

import pytest

from fastsched import batching, core
from fastsched.batching import RunTimes, fit


def test_fit_counts_the_jobs_that_fit_the_budget() -> None:
    assert fit(0.004, 0.020, 1000) == 5
    assert fit(0.00005, 0.020, 1000) == 400
    assert fit(0.00001, 0.020, 1000) == 1000  # the fetch limit caps it
    assert fit(0.0, 0.020, 1000) == 1000


def test_fit_gives_one_job_to_a_command_never_seen_and_to_a_slow_one() -> None:
    assert fit(None, 0.020, 1000) == 1
    assert fit(10.0, 0.020, 1000) == 1
    assert fit(float("nan"), 0.020, 1000) == 1


def test_fit_rejects_a_cap_below_one() -> None:
    with pytest.raises(ValueError, match="cap must be >= 1, got 0"):
        fit(0.001, 0.02, 0)


def test_fit_agrees_with_time_batches() -> None:
    """What the plan asks of a priority is what the claim cuts for a run of one command."""
    for per_job in (0.004, 0.001, 0.0003, 0.00005, 0.0199, 0.021):
        for budget in (0.005, 0.020, 0.1):
            lengths = core.time_batches(["a"] * 2000, {"a": per_job}, budget, 1000, 1)
            assert lengths == [fit(per_job, budget, 1000)], (per_job, budget)


def test_estimates_decay_towards_the_newest_reports() -> None:
    times = RunTimes(weight=0.5)
    assert times.estimate("a") is None
    times.observe("a", 10, 0.010)  # 1 ms each: the first report is the estimate
    assert times.estimate("a") == pytest.approx(0.001)
    times.observe("a", 1, 0.003)
    assert times.estimate("a") == pytest.approx(0.002)
    for _ in range(30):
        times.observe("a", 100, 0.0)
    assert times.estimate("a") == pytest.approx(0.0, abs=1e-9)


def test_estimates_ignore_reports_of_nothing_or_of_a_clock_gone_wrong() -> None:
    times = RunTimes()
    times.observe("a", 0, 1.0)
    times.observe("a", 3, -1.0)
    times.observe("a", 3, float("inf"))
    times.observe("a", 3, float("nan"))
    assert times.estimate("a") is None


def test_batch_sizes_follow_the_command_claimed_last_at_each_priority() -> None:
    times = RunTimes()
    assert times.batch_sizes(0.020, 1000) == [1, 1, 1, 1, 1]  # nothing claimed anywhere yet
    times.observe_all([("fast", 100, 0.001), ("slow", 2, 4.0)])
    times.claimed(core.rank_of(50), "fast")
    times.claimed(core.rank_of(20), "slow")
    times.claimed(core.rank_of(30), "unseen")
    assert times.batch_sizes(0.020, 1000) == [1, 1, 1, 1, 1000]
    assert times.batch_sizes(0.020, 100) == [1, 1, 1, 1, 100]


def test_expected_seconds_is_unknown_when_one_command_is() -> None:
    times = RunTimes()
    times.observe("a", 1, 0.5)
    assert times.expected_seconds(["a", "a"]) == pytest.approx(1.0)
    assert times.expected_seconds(["a", "b"]) is None
    assert times.expected_seconds([]) == 0.0


def test_weight_must_be_a_share() -> None:
    with pytest.raises(ValueError, match="weight must be in"):
        RunTimes(weight=0.0)


def test_the_default_budget_is_twenty_milliseconds() -> None:
    assert batching.DEFAULT_BATCH_BUDGET_MS == 20.0
