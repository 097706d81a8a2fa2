"""The planner's copy of the counts (CountsCache): capped counts are "at least", never "exactly".

In-process, against a model of the database's true counts: ``plan_counts`` caps each waiting
count, claims take what exists. Issue 12's defect was a copy that subtracted claimed jobs from a
capped count and read the result as exact: "at least 2" became 0, and CRITICAL jobs waited behind
HIGH and NEGLIGIBLE ones.
"""
from __future__ import annotations

import random

from fastsched import core
from fastsched.master.counts import CountsCache, PlanInputs

CRITICAL, HIGH, MEDIUM, LOW, NEGLIGIBLE = range(5)
POLL = 1.0


class Queue:
    """The true waiting counts, read the way plan_counts reads them."""

    def __init__(self, waiting: list[int]) -> None:
        self.waiting = list(waiting)

    def plan_counts(self, cap: int) -> list[int]:
        return [min(count, cap) for count in self.waiting]

    def claim(self, wanted: list[int]) -> list[int]:
        got = [min(want, have) for want, have in zip(wanted, self.waiting)]
        self.waiting = [have - taken for have, taken in zip(self.waiting, got)]
        return got


def plan_inputs(cache: CountsCache, queue: Queue, mono: float, free: int) -> PlanInputs:
    """What the pool's _plan_inputs does, with no one else running."""
    if cache.needs_read(mono, free):
        cap = cache.cap(free)
        return cache.update(mono, queue.plan_counts(cap), [0] * 5, 2, cap, [0] * 5, [])
    return cache.current([0] * 5)


def test_issue_12_critical_jobs_never_wait_behind_high_and_negligible_ones() -> None:
    queue = Queue([5, 150, 0, 0, 150])
    cache = CountsCache(POLL, fetch_limit=1)
    started: list[int] = []
    mono = 0.0
    free = 2
    while any(queue.waiting) and len(started) < 20:
        inputs = plan_inputs(cache, queue, mono, free)
        wanted = core.plan(inputs.waiting, inputs.running, inputs.active, free, 1)
        got = queue.claim(wanted)
        cache.claimed(wanted, got)
        for rank, count in enumerate(got):
            started += [rank] * count
        free = 1  # one child at a time comes back
        mono += 0.001  # well within a poll interval: the copy is used where it can be trusted
    assert started[:5] == [CRITICAL] * 5, started


def test_a_capped_count_that_a_claim_brought_below_a_plan_is_read_again() -> None:
    cache = CountsCache(POLL, fetch_limit=10)
    cap = cache.cap(2)
    cache.update(0.0, [cap, 0, 0, 0, 3], [0] * 5, 2, cap, [0] * 5, [])
    assert not cache.needs_read(0.1, 2)
    cache.claimed([cap - 5, 0, 0, 0, 0], [cap - 5, 0, 0, 0, 0])
    assert cache.needs_read(0.1, 1)  # "at least 5" cannot feed one batch of 10: unknown, not 5
    exact = CountsCache(POLL, fetch_limit=10)
    exact.update(0.0, [7, 0, 0, 0, 3], [0] * 5, 2, exact.cap(2), [0] * 5, [])
    exact.claimed([5, 0, 0, 0, 0], [5, 0, 0, 0, 0])
    assert not exact.needs_read(0.1, 1)  # an exact 7 less 5 is 2
    assert exact.current([0] * 5).waiting == [2, 0, 0, 0, 3]


def test_fewer_claimed_than_planned_is_read_again_before_the_next_plan() -> None:
    """A claim that got fewer jobs than planned may have found none left, or cut its batches
    shorter than the plan's sizes (by the run-time estimates of the rows it read) with rows left:
    the copy holds none for that priority and the database is read before the next plan. Taken
    for none left, the priority got no worker until the next poll (a pool test's shares failed)."""
    cache = CountsCache(POLL, fetch_limit=1)
    cap = cache.cap(2)
    cache.update(0.0, [0, cap, 0, 0, 1], [0] * 5, 2, cap, [0] * 5, [])
    assert not cache.needs_read(0.1, 1)
    cache.claimed([0, 2, 0, 0, 0], [0, 1, 0, 0, 0])
    assert cache.current([0] * 5).waiting == [0, 0, 0, 0, 1]
    assert cache.needs_read(0.1, 1)
    cache.update(0.1, [0, 5, 0, 0, 1], [0] * 5, 2, cap, [0] * 5, [])  # rows were left
    assert cache.current([0] * 5).waiting == [0, 5, 0, 0, 1]
    assert not cache.needs_read(0.2, 1)


def test_adds_on_this_host_count_and_a_wake_up_naming_no_priority_forces_a_read() -> None:
    cache = CountsCache(POLL, fetch_limit=1)
    cache.update(0.0, [0, 0, 0, 0, 1], [0] * 5, 2, cache.cap(1), [0] * 5, [])
    cache.added([10, 50])
    assert cache.current([0] * 5).waiting == [1, 0, 0, 0, 2]
    assert not cache.needs_read(0.1, 1)
    cache.added([99])  # not a priority: only the database knows what it is
    assert cache.needs_read(0.1, 1)
    cache.update(0.2, [0, 0, 0, 0, 1], [0] * 5, 2, cache.cap(1), [0] * 5, [])
    cache.added(None)
    assert cache.needs_read(0.3, 1)


def test_the_copy_is_read_again_after_a_poll_interval_and_when_it_says_nothing_is_left() -> None:
    cache = CountsCache(POLL, fetch_limit=1)
    assert cache.needs_read(0.0, 1)  # never read
    cache.update(0.0, [0, 1, 0, 0, 0], [0] * 5, 2, cache.cap(1), [0] * 5, [])
    assert not cache.needs_read(POLL / 2, 1)
    assert cache.needs_read(POLL, 1)
    cache.update(POLL, [0, 0, 0, 0, 0], [0] * 5, 2, cache.cap(1), [0] * 5, [])
    assert cache.needs_read(POLL + 0.001, 1)  # empty: the queue may have filled meanwhile


def test_running_is_other_masters_as_read_plus_our_busy_children() -> None:
    cache = CountsCache(POLL, fetch_limit=1)
    # plan_counts says 3 HIGH workers run, 1 of them ours, and one batch of ours just ended (its
    # rows still read as running until its outcomes are written).
    fresh = cache.update(0.0, [0, 5, 0, 0, 0], [0, 3, 0, 0, 0], 4, cache.cap(1), [0, 1, 0, 0, 0], [1])
    assert fresh.running == [0, 2, 0, 0, 0] and fresh.fresh
    later = cache.current([0, 2, 0, 0, 0])
    assert later.running == [0, 3, 0, 0, 0] and later.active == 4 and not later.fresh


def test_a_plan_from_the_copy_is_the_plan_from_the_true_counts() -> None:
    """Random backlogs, adds on this host, free slots and fetch limits: every plan the master
    makes from its copy equals core.plan over the true counts (the quadratic shares included)."""
    rng = random.Random(12)
    for _ in range(300):
        fetch_limit = rng.choice((1, 2, 5, 100))
        workers = rng.randint(1, 8)
        queue = Queue([rng.choice((0, 1, 3, 50, 400)) for _ in range(5)])
        cache = CountsCache(POLL, fetch_limit)
        mono = 0.0
        for _ in range(60):
            if rng.random() < 0.2:
                priority = rng.choice((10, 20, 30, 40, 50))
                queue.waiting[priority // 10 - 1] += 1
                cache.added([priority])
            free = rng.randint(1, workers)
            running = [0] * 5
            inputs = plan_inputs(cache, queue, mono, free)
            wanted = core.plan(inputs.waiting, running, workers, free, fetch_limit)
            assert wanted == core.plan(queue.waiting, running, workers, free, fetch_limit), (queue.waiting, inputs)
            cache.claimed(wanted, queue.claim(wanted))
            mono += rng.choice((0.0, 0.01, 0.3))


def test_the_batch_size_rule_has_one_home_that_the_core_agrees_with() -> None:
    from fastsched.priority import ALL_PRIORITIES, BATCHED_UP_TO, RANK, batch_size

    assert BATCHED_UP_TO == core.BATCHED_UP_TO and tuple(RANK) == core.PRIORITIES
    for priority in ALL_PRIORITIES:
        ids = list(range(12))
        sizes = [len(b) for b in core.batch_ids(ids, [int(priority)] * 12, 5)]
        assert set(sizes[:-1]) == {batch_size(priority, 5)}
        assert RANK[priority] == core.rank_of(priority)
