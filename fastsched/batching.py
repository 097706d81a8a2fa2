"""Batches sized by time: how many jobs a child is given at once.

Friendica gives LOW and NEGLIGIBLE jobs out one at a time and the rest by a fixed fetch limit,
because a batch of slow jobs blocks the work behind it on that child. fastsched sizes every batch
by expected run time instead: a child gets as many jobs of one priority as fit the batch budget
(``--batch-budget``, in ms), never more than ``--fetch-limit`` (a cap). Ten thousand 50 µs jobs go
in a handful of claims; a slow command still goes one job at a time; a command never seen yet
gets one job, since nothing is known of how long it runs.

The estimates come from the children's reports: each batch's reply carries, per run of one
command, how many jobs ran and how long they took (``fastsched.child_process``). :class:`RunTimes` keeps a
decaying average of one job's time per command. Two places use it:

* the plan (``core.plan_sized``): each priority's batch size is what fits the budget at the
  estimate of the command last claimed at that priority (the head of a priority's queue is
  usually more of the same); the quadratic shares still count workers, not jobs;
* the claim (``core.time_batches``): the claimed rows are cut into batches by the estimate of each
  row's own command, so a batch never holds a command never seen with anything else, nor more
  estimated time than the budget.

Everything here is pure: no clock, no database, no processes.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import cast

from fastsched import core
from fastsched.priority import ALL_PRIORITIES, batch_size

__all__ = [
    "DEFAULT_BATCH_BUDGET_MS",
    "ESTIMATE_WEIGHT",
    "BatchSizing",
    "RunTimes",
    "fit",
    "sizing_of",
]

# 20 ms: a HIGH job arriving while every worker is busy waits for the first child to end its
# batch, so at most a budget and usually a fraction of it (8 workers: about an eighth); the
# fairness target (5 ms jobs, HIGH p99 wait <= one job + 50 ms) keeps well inside it. No-op jobs
# (about 10 µs each) reach the fetch-limit cap long before the budget.
DEFAULT_BATCH_BUDGET_MS = 20.0
ESTIMATE_WEIGHT = 0.2  # weight of the newest report in a command's decaying average


def fit(per_job: float | None, budget: float, cap: int) -> int:
    """How many jobs of ``per_job`` seconds each fit ``budget`` seconds: at least 1, at most ``cap``.

    ``per_job`` None (never seen) gives 1; 0 (too quick to measure) gives ``cap``.

    >>> fit(0.004, 0.020, 1000), fit(None, 0.020, 1000), fit(10.0, 0.020, 1000), fit(0.0, 0.020, 1000)
    (5, 1, 1, 1000)
    """
    if cap < 1:
        raise ValueError(f"cap must be >= 1, got {cap}")
    if per_job is None or not per_job >= 0.0:
        return 1
    if per_job == 0.0:
        return cap
    # The slack time_batches allows, so that both count the same jobs as fitting.
    jobs = math.floor(budget * (1 + core.BUDGET_SLACK) / per_job)
    return max(1, min(cap, jobs))


class RunTimes:
    """Per command, a decaying average of how long one of its jobs runs, from the children's reports.

    ``per_job`` is the mapping ``core.time_batches`` takes (command -> seconds); a command is in it
    once one of its jobs has reported. ``batch_sizes`` gives ``core.plan_sized`` a size per priority
    from the command claimed last at that priority.
    """

    __slots__ = ("_head", "per_job", "weight")

    def __init__(self, weight: float = ESTIMATE_WEIGHT) -> None:
        if not 0.0 < weight <= 1.0:
            raise ValueError(f"weight must be in (0, 1], got {weight!r}")
        self.weight = weight
        self.per_job: dict[str, float] = {}
        self._head: list[str | None] = [None] * len(core.PRIORITIES)  # command claimed last, per rank

    def observe(self, command: str, jobs: int, seconds: float) -> None:
        """``jobs`` jobs of ``command`` ran in ``seconds`` in all (one run of a child's report)."""
        if jobs < 1 or not seconds >= 0.0 or math.isinf(seconds):
            return  # nothing ran, or a clock gone wrong: nothing to learn
        sample = seconds / jobs
        known = self.per_job.get(command)
        self.per_job[command] = sample if known is None else known + (sample - known) * self.weight

    def observe_all(self, timings: Iterable[tuple[str, int, float]]) -> None:
        """Every ``(command, jobs, seconds)`` of a child's reply."""
        for command, jobs, seconds in timings:
            self.observe(command, jobs, seconds)

    def claimed(self, rank: int, command: str) -> None:
        """A claim at priority rank ``rank`` ended with a job of ``command``: the next jobs of that
        priority are most likely more of it."""
        self._head[rank] = command

    def estimate(self, command: str) -> float | None:
        """Seconds one job of ``command`` is expected to run; None when none has reported yet."""
        return self.per_job.get(command)

    def batch_sizes(self, budget: float, cap: int) -> list[int]:
        """Per priority rank, the jobs one batch may take: ``fit`` at the estimate of the command
        claimed last at that rank (1 before anything was claimed there)."""
        get = self.per_job.get
        return [1 if head is None else fit(get(head), budget, cap) for head in self._head]

    def expected_seconds(self, commands: Iterable[str]) -> float | None:
        """How long jobs of these commands are expected to run in all; None if one was never seen."""
        estimates = list(map(self.per_job.get, commands))  # no Python per job: batches hold a thousand
        return None if None in estimates else sum(cast("list[float]", estimates))


@dataclasses.dataclass(frozen=True)
class BatchSizing:
    """How a claim cuts the rows it takes into batches, one per child.

    ``sizes[rank]``: the most jobs one batch of that priority takes (what the plan gave each slot).
    ``estimates``: command -> seconds one job runs (:attr:`RunTimes.per_job`), with ``budget`` in
    seconds: each batch is cut by ``core.time_batches`` so that its estimated time fits the budget
    and a command never seen is alone. None: batches of exactly ``sizes`` (a fixed fetch limit).
    """

    sizes: Sequence[int]
    estimates: Mapping[str, float] | None = None
    budget: float = math.inf

    def lengths(self, rank: int, commands: Sequence[str], slots: int) -> list[int]:
        """The lengths of the batches (at most ``slots``) cut from the claimed rows of one
        priority rank, whose commands are ``commands`` in claim order."""
        size = self.sizes[rank]
        if self.estimates is None:
            full, rest = divmod(min(len(commands), size * slots), size)
            return [size] * full + ([rest] if rest else [])
        return core.time_batches(commands, self.estimates, self.budget, size, slots)


def sizing_of(limit: int | BatchSizing) -> BatchSizing:
    """``limit`` as a BatchSizing: an int is a fixed fetch limit, by Friendica's rule (that many
    jobs a batch for CRITICAL, HIGH and MEDIUM, one for LOW and NEGLIGIBLE)."""
    if isinstance(limit, BatchSizing):
        return limit
    return BatchSizing([batch_size(priority, limit) for priority in ALL_PRIORITIES])
