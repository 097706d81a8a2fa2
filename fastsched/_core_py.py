"""The scheduling math of fastsched, in plain Python: the reference implementation.

This module is the specification. ``src_c/_core.pyx`` (the compiled ``fastsched._core``) implements the
same functions with the same signatures, returns equal values and raises the same exceptions with the
same messages; ``tests/test_core.py`` checks both against each other. Import the functions from
``fastsched.core``, which picks one of the two.

Everything here is pure: ints and sequences in, ints and lists out. Nothing knows about databases or
processes.

Conventions:

* Priorities are the five ints 10 (CRITICAL), 20 (HIGH), 30 (MEDIUM), 40 (LOW) and 50 (NEGLIGIBLE); a lower
  number runs first.
* A per-priority vector is a length-5 sequence indexed by *rank*: index 0 is CRITICAL (10), index 4 is
  NEGLIGIBLE (50).
* Integer arguments go through ``operator.index``, so any int-like object (``bool``, ``IntEnum`` members,
  numpy integers) is accepted and anything else raises ``TypeError``. Counts (jobs, workers) must lie
  between 0 and ``MAX_COUNT``; that bound keeps the compiled twin's arithmetic inside 64 bits.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "BATCHED_UP_TO",
    "BUDGET_SLACK",
    "MAX_COUNT",
    "PRIORITIES",
    "allowed_workers",
    "batch_ids",
    "choose_priority",
    "plan",
    "plan_sized",
    "quadratic_limits",
    "rank_of",
    "round_half_up",
    "time_batches",
]

PRIORITIES: tuple[int, ...] = (10, 20, 30, 40, 50)
"""The five priorities in rank order: ``PRIORITIES[rank]`` is the priority of that rank."""

BATCHED_UP_TO = 30
"""Priorities up to this one (CRITICAL, HIGH, MEDIUM) take ``fetch_limit`` jobs per batch; LOW and
NEGLIGIBLE take one job at a time (Friendica's ``worker_fetch_limit`` rule)."""

MAX_COUNT = 2**53 - 1
"""The largest count (of jobs or workers) the core accepts: the largest integer a double holds exactly.
No real queue comes near it; the bound keeps every intermediate value of the compiled twin in 64 bits."""

BUDGET_SLACK = 1e-9
"""``time_batches`` lets a batch's estimated time exceed the budget by this share: sums of floats round
(five 4 ms jobs add up to 0.020000000000000004 s), and five of them should fit 20 ms."""

_PRIORITY_COUNT = len(PRIORITIES)
_MAX_PRIORITIES_IN_PLAY = _PRIORITY_COUNT
_RANK_BY_PRIORITY: dict[int, int] = {priority: rank for rank, priority in enumerate(PRIORITIES)}
_PRIORITY_CHOICES = "10, 20, 30, 40, 50"
_LOAD_EXPONENT = 3.0  # Friendica's worker_load_exponent; math.pow and the compiled twin both call C pow()


# --------------------------------------------------------------------------------------------- validation


def _count(value: Any, name: str) -> int:
    """``value`` as an int between 0 and MAX_COUNT, or ValueError naming ``name``."""
    number = operator.index(value)
    if number < 0 or number > MAX_COUNT:
        raise ValueError(f"{name} must be between 0 and {MAX_COUNT}, got {number}")
    return number


def _as_list(values: Iterable[Any], name: str) -> list[Any]:
    """The items of ``values`` as a list; TypeError naming ``name`` when it is not iterable."""
    if type(values) is list:  # a subclass may iterate differently: it goes through iter() like the rest
        return values
    try:
        iterator = iter(values)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of ints, got {type(values).__name__}") from None
    return list(iterator)


def _count_vector(values: Sequence[int], name: str) -> list[int]:
    """A validated copy of a per-priority vector: five counts, indexed by rank."""
    items = _as_list(values, name)
    if len(items) != _PRIORITY_COUNT:
        raise ValueError(f"{name} must have {_PRIORITY_COUNT} entries (one per priority), got {len(items)}")
    return [_count(item, f"{name}[{rank}]") for rank, item in enumerate(items)]


def _real(value: Any, name: str) -> float:
    """``value`` (an int or a float) as a float, or TypeError naming ``name``."""
    if not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be an int or a float, got {type(value).__name__}")
    return float(value)


def _ranks(priorities: Iterable[int], name: str) -> list[int]:
    """The rank of every priority in ``priorities``; ValueError naming the first bad one and its index."""
    ranks = []
    for index, item in enumerate(_as_list(priorities, name)):
        priority = operator.index(item)
        rank = _RANK_BY_PRIORITY.get(priority)
        if rank is None:
            raise ValueError(f"{name}[{index}] must be one of {_PRIORITY_CHOICES}, got {priority}")
        ranks.append(rank)
    return ranks


# ----------------------------------------------------------------------------------------------- rounding


def round_half_up(value: float) -> int:
    """Round half away from zero, like PHP's ``round()``: 2.5 → 3, 0.5 → 1, 1.49 → 1, -2.5 → -3.

    Python's built-in ``round`` rounds half to even (``round(2.5) == 2``), which changes Friendica's limits.
    ``math.floor(x + 0.5)`` is not used either: the addition itself rounds (0.49999999999999994 + 0.5 is
    1.0). ``x - floor(x)`` is exact for every double, so this rounds the exact binary value, as C's
    ``round()`` does in the compiled twin.

    Accepts an int or a float. NaN raises ValueError and infinities raise OverflowError (no int holds them).
    """
    number = _real(value, "value")
    magnitude = abs(number)
    whole = math.floor(magnitude)
    if magnitude - whole >= 0.5:
        whole += 1
    return whole if number >= 0 else -whole


# ------------------------------------------------------------------------------------------------- limits


def _quadratic_limit(active: int, n: int, j: int) -> int:
    """The worker limit of the j-th (0-based, highest first) of n priorities in play."""
    total = n * (n + 1) * (2 * n + 1) // 6  # sum of k*k for k = 1..n
    k = n - j
    # round_half_up(active * k*k / total) in exact integer arithmetic: floor((2*active*k*k + total) / 2*total)
    return max(1, (2 * active * k * k + total) // (2 * total))


def quadratic_limits(active: int, n: int) -> list[int]:
    """Friendica's quadratic fair share: the worker limit of each of ``n`` priorities in play.

    Highest priority first. Element j is ``max(1, round_half_up(active * (n-j)**2 / S))`` with
    ``S = 1² + 2² + ... + n²``, computed exactly in integers so that both twins agree bit for bit.
    The highest priority gets the share n²/S, the lowest 1/S; each gets at least one worker, so the limits
    can sum to more than ``active``: they are soft targets checked one claim at a time.

    >>> quadratic_limits(10, 3)
    [6, 3, 1]
    """
    active = _count(active, "active")
    n = operator.index(n)
    if n < 0 or n > _MAX_PRIORITIES_IN_PLAY:
        raise ValueError(f"n must be between 0 and {_MAX_PRIORITIES_IN_PLAY}, got {n}")
    return [_quadratic_limit(active, n, j) for j in range(n)]


# ------------------------------------------------------------------------------------------------- ranks


def rank_of(priority: int) -> int:
    """The rank of a priority: 10 → 0, 20 → 1, 30 → 2, 40 → 3, 50 → 4; ValueError for anything else."""
    number = operator.index(priority)
    rank = _RANK_BY_PRIORITY.get(number)
    if rank is None:
        raise ValueError(f"priority must be one of {_PRIORITY_CHOICES}, got {number}")
    return rank


# -------------------------------------------------------------------------------------------- scheduling


def _choose(waiting: list[int], running: list[int], active: int) -> int:
    """choose_priority on validated vectors."""
    # a. Waiting CRITICAL work always goes first.
    if waiting[0] > 0:
        return 0
    # b. Starvation guard: a priority with work waiting and no worker on it gets the slot.
    for rank in range(_PRIORITY_COUNT):
        if waiting[rank] > 0 and running[rank] == 0:
            return rank
    # c. Quadratic fair share among the priorities in play. The j-th priority in play gets limits[j]:
    #    Friendica matched limits to the position of the priority in an unordered SQL result instead.
    in_play = [rank for rank in range(_PRIORITY_COUNT) if waiting[rank] > 0 or running[rank] > 0]
    workers = max(active, sum(running))
    for j, rank in enumerate(in_play):
        if waiting[rank] > 0 and running[rank] < _quadratic_limit(workers, len(in_play), j):
            return rank
    # d. Everyone is at their share: the highest priority with work waiting.
    for rank in range(_PRIORITY_COUNT):
        if waiting[rank] > 0:
            return rank
    return -1


def choose_priority(waiting: Sequence[int], running: Sequence[int], active: int) -> int:
    """The rank of the priority the next free worker slot should serve, or -1 if nothing waits.

    ``waiting[rank]`` counts runnable jobs of that priority, ``running[rank]`` the workers busy with that
    priority, ``active`` the workers in the pool. The rules, in order:

    a. CRITICAL work waiting (``waiting[0] > 0``) → 0.
    b. The first rank with work waiting and nothing running → it (starvation guard).
    c. The priorities in play are the ranks with work waiting or running, in priority order; with n of
       them, ``limits = quadratic_limits(max(active, sum(running)), n)`` and the j-th priority in play gets
       ``limits[j]``. The first priority in play with work waiting and fewer running than its limit → it.
    d. Otherwise the highest priority with work waiting.

    Unlike Friendica's ``nextPriority``, it never returns a priority that has nothing waiting, and limits
    follow the rank among the priorities in play rather than the row order of a SQL result.
    """
    waiting_counts = _count_vector(waiting, "waiting")
    running_counts = _count_vector(running, "running")
    return _choose(waiting_counts, running_counts, _count(active, "active"))


def _batch_size(rank: int, fetch_limit: int) -> int:
    """How many jobs one child takes at once at this rank."""
    return fetch_limit if PRIORITIES[rank] <= BATCHED_UP_TO else 1


def plan(
    waiting: Sequence[int], running: Sequence[int], active: int, free_slots: int, fetch_limit: int
) -> list[int]:
    """How many jobs of each priority to claim now, as a length-5 list by rank.

    Fills ``free_slots`` worker slots one at a time, stopping early when nothing is left waiting. For each
    slot, ``r = choose_priority(waiting_left, running_now, active)`` picks the priority; the slot takes
    ``min(waiting_left[r], fetch_limit)`` jobs for CRITICAL, HIGH and MEDIUM and one job for LOW and
    NEGLIGIBLE, and counts as one more worker running at that priority. It never plans more than is
    waiting and does not modify its arguments.
    """
    waiting_left = _count_vector(waiting, "waiting")
    running_now = _count_vector(running, "running")
    active = _count(active, "active")
    free_slots = operator.index(free_slots)
    if free_slots < 0:
        raise ValueError(f"free_slots must be >= 0, got {free_slots}")
    fetch_limit = operator.index(fetch_limit)
    if fetch_limit < 1:
        raise ValueError(f"fetch_limit must be >= 1, got {fetch_limit}")

    claim = [0] * _PRIORITY_COUNT
    for _slot in range(free_slots):
        rank = _choose(waiting_left, running_now, active)
        if rank < 0:
            break
        take = min(waiting_left[rank], _batch_size(rank, fetch_limit))
        claim[rank] += take
        waiting_left[rank] -= take
        running_now[rank] += 1
    return claim


def plan_sized(
    waiting: Sequence[int], running: Sequence[int], active: int, free_slots: int, batch_sizes: Sequence[int]
) -> list[int]:
    """``plan`` with a batch size per priority: the slot that serves rank r takes
    ``min(waiting_left[r], batch_sizes[r])`` jobs, for every priority alike (the pool sizes its batches
    by expected run time, see ``fastsched.batching``). The slots are shared exactly as in ``plan``: a
    slot is one worker whatever its batch holds. Each batch size must be at least 1.
    """
    waiting_left = _count_vector(waiting, "waiting")
    running_now = _count_vector(running, "running")
    active = _count(active, "active")
    free_slots = operator.index(free_slots)
    if free_slots < 0:
        raise ValueError(f"free_slots must be >= 0, got {free_slots}")
    sizes = _count_vector(batch_sizes, "batch_sizes")
    for rank, size in enumerate(sizes):
        if size < 1:
            raise ValueError(f"batch_sizes[{rank}] must be >= 1, got {size}")

    claim = [0] * _PRIORITY_COUNT
    for _slot in range(free_slots):
        rank = _choose(waiting_left, running_now, active)
        if rank < 0:
            break
        take = min(waiting_left[rank], sizes[rank])
        claim[rank] += take
        waiting_left[rank] -= take
        running_now[rank] += 1
    return claim


# -------------------------------------------------------------------------------------------- claimed rows


def batch_ids(ids: Sequence[int], priorities: Sequence[int], fetch_limit: int) -> list[list[int]]:
    """Split claimed job ids into the batches handed to children.

    ``ids[i]`` has priority ``priorities[i]``; the order is the claim order and is kept, within and across
    batches. A batch holds consecutive ids of one priority; a new batch starts when the priority changes
    or the batch is full. A batch is full at ``fetch_limit`` ids for CRITICAL, HIGH and MEDIUM and at one
    id for LOW and NEGLIGIBLE.

    >>> batch_ids([1, 2, 3, 4, 5], [20, 20, 20, 40, 40], 2)
    [[1, 2], [3], [4], [5]]
    """
    id_items = _as_list(ids, "ids")
    priority_items = _as_list(priorities, "priorities")
    fetch_limit = operator.index(fetch_limit)
    if fetch_limit < 1:
        raise ValueError(f"fetch_limit must be >= 1, got {fetch_limit}")
    if len(id_items) != len(priority_items):
        raise ValueError(
            f"ids and priorities must have the same length, got {len(id_items)} ids "
            f"and {len(priority_items)} priorities"
        )
    ranks = _ranks(priority_items, "priorities")
    job_ids = [operator.index(item) for item in id_items]

    batches: list[list[int]] = []
    batch: list[int] = []
    batch_rank = -1
    for job_id, rank in zip(job_ids, ranks):
        if batch and (rank != batch_rank or len(batch) >= _batch_size(rank, fetch_limit)):
            batches.append(batch)
            batch = []
        batch.append(job_id)
        batch_rank = rank
    if batch:
        batches.append(batch)
    return batches


def time_batches(
    commands: Sequence[str], estimates: Mapping[str, float], budget: float, cap: int, slots: int
) -> list[int]:
    """Cut claimed jobs of one priority, in claim order, into at most ``slots`` batches that each fit a
    time budget; return the batches' lengths (they cover a prefix of ``commands``, in order).

    ``commands[i]`` is the command of the i-th job; ``estimates`` maps a command to the seconds one of
    its jobs is expected to run (a command not in it has never been seen). A batch takes the next job,
    then each following one while it holds fewer than ``cap`` jobs and its estimated time plus the
    job's stays within ``budget`` seconds. A job of a command never seen is a batch of its own: nothing
    is known of how long it runs. A job expected to run longer than the budget is alone too.

    >>> time_batches(["a", "a", "a", "new", "a"], {"a": 0.004}, 0.010, 100, 5)
    [2, 1, 1, 1]
    """
    items = _as_list(commands, "commands")
    if not isinstance(estimates, Mapping):
        raise TypeError(f"estimates must be a mapping of command to seconds, got {type(estimates).__name__}")
    limit = _real(budget, "budget")
    if not limit >= 0.0:  # NaN too
        raise ValueError(f"budget must be a number of seconds >= 0, got {budget!r}")
    limit += limit * BUDGET_SLACK
    cap = operator.index(cap)
    if cap < 1:
        raise ValueError(f"cap must be >= 1, got {cap}")
    slots = operator.index(slots)
    if slots < 0:
        raise ValueError(f"slots must be >= 0, got {slots}")

    lengths: list[int] = []
    if slots == 0:
        return lengths
    size = 0
    total = 0.0
    open_batch = False  # the current batch may take more jobs: its commands are known, it has room
    for command in items:
        cost = estimates.get(command)
        if cost is not None:
            if type(cost) is not float:
                cost = _real(cost, f"estimates[{command!r}]")
            if not cost >= 0.0:
                raise ValueError(f"estimates[{command!r}] must be a number of seconds >= 0, got {cost!r}")
        if open_batch and cost is not None and size < cap and total + cost <= limit:
            size += 1
            total += cost
            continue
        if size:
            lengths.append(size)
            if len(lengths) == slots:
                return lengths
        size = 1
        total = 0.0 if cost is None else cost
        open_batch = cost is not None and cost <= limit
    if size:
        lengths.append(size)
    return lengths


# ---------------------------------------------------------------------------------------- load governor


def allowed_workers(workers: int, load: float, max_load: float, waiting: bool) -> int:
    """How many of ``workers`` may run at system load ``load``: Friendica's load governor, fixed.

    ``allowed = ceil(((max(0, max_load - load)) / max_load) ** 3 * workers)``, at least 1 when work is
    waiting (it may be 0 when nothing waits), never more than ``workers``.

    No throttling (``workers`` is returned) when ``max_load`` is not a positive finite number (the governor
    is off) or when ``load`` is not positive: a zero or missing reading (NaN counts as missing) means "no
    information", not "skip the rest of the checks". A load of infinity allows the minimum.

    Both twins evaluate the same IEEE-754 double expression (``pow`` and ``ceil`` of C's libm), so they
    agree exactly.
    """
    workers = _count(workers, "workers")
    current = _real(load, "load")
    maximum = _real(max_load, "max_load")
    has_waiting = bool(waiting)
    if not (0.0 < maximum < math.inf) or not current > 0.0:
        return workers
    headroom = maximum - current
    if not headroom > 0.0:
        headroom = 0.0
    slope = math.pow(headroom / maximum, _LOAD_EXPONENT)
    allowed = math.ceil(slope * workers)
    if has_waiting and allowed < 1:
        allowed = 1
    return min(allowed, workers)
