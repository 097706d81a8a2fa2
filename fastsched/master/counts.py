"""The planner's copy of the waiting and running counts, between reads of ``plan_counts``.

``plan_counts`` caps each waiting count (a million pending rows must cost no more than a thousand),
so a count at its cap means "at least that many". A busy master reads the counts again only when
its copy cannot be trusted; in between it plans from the copy, less what it claimed, plus the jobs
added on this host (the wake-ups name their priority), with running = other masters' (as last
read) + its own busy children.

The copy can be trusted for a plan of ``free`` slots when no capped count has dropped below what
those slots could take of it (``free`` x the priority's batch size, ``sizes[rank]``): ``core.plan`` then decides
exactly as it would from the true counts (a priority it can never empty looks the same at any
count). A capped count that a claim brought below that is unknown, not zero: the copy is read
again before the next plan. Reading it as zero was issue 12's defect: CRITICAL jobs waited behind
HIGH and NEGLIGIBLE ones while the copy said none was left.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence

from fastsched.backends.base import Batch
from fastsched.batching import sizing_of
from fastsched.priority import RANK

# A read asks for counts capped at this many times what the free slots could take at most: the
# copy then lasts another claim or so before a capped count drops below what a plan may take.
CAP_HEADROOM = 2


@dataclasses.dataclass(frozen=True)
class PlanInputs:
    """What ``core.plan`` needs, and whether it was read from the database just now."""

    waiting: list[int]
    running: list[int]
    active: int
    fresh: bool


class CountsCache:
    """Waiting counts per rank, "at least" where capped; running counts of other masters; active
    workers. ``poll_interval``: the copy is read again after this long (other hosts' adds are seen
    within it, as an idle master sees them)."""

    def __init__(self, poll_interval: float, fetch_limit: int = 1) -> None:
        self._poll_interval = poll_interval
        # The batch sizes when a plan gives none: a fixed fetch limit, by Friendica's rule.
        self._sizes = sizing_of(fetch_limit).sizes
        self._read_at = -math.inf  # monotonic time of the last read
        self._stale = True
        self._waiting = [0] * len(RANK)
        self._at_least = [False] * len(RANK)  # the count was capped: there may be more
        self._others_running = [0] * len(RANK)
        self._active = 0

    def cap(self, free: int, sizes: Sequence[int] | None = None) -> int:
        """The cap to read the waiting counts with, for a plan of ``free`` slots whose batches take
        up to ``sizes[rank]`` jobs (time-sized batches: what the plan may take, not the fetch limit,
        so that a read costs about what the claim after it takes)."""
        return max(free, 1) * max(self._sizes if sizes is None else sizes) * CAP_HEADROOM

    def mark_stale(self) -> None:
        """Only the database knows now (a wake-up named no priority, a child died, a resync)."""
        self._stale = True

    def needs_read(self, mono: float, free: int, sizes: Sequence[int] | None = None) -> bool:
        if self._stale or mono - self._read_at >= self._poll_interval or not any(self._waiting):
            return True
        for rank, size in enumerate(self._sizes if sizes is None else sizes):
            if self._at_least[rank] and self._waiting[rank] < free * size:
                return True
        return False

    def update(
        self,
        mono: float,
        waiting: Sequence[int],
        running: Sequence[int],
        active: int,
        cap: int,
        own_running: Sequence[int],
        finished_ranks: Sequence[int],
    ) -> PlanInputs:
        """Take a fresh read (``plan_counts`` with ``cap``). ``finished_ranks``: the ranks of batches
        that ended since outcomes were last written: their rows still read as running."""
        total = list(running)
        for rank in finished_ranks:
            if total[rank] > 0:
                total[rank] -= 1
        self._read_at, self._stale = mono, False
        self._waiting = list(waiting)
        self._at_least = [count >= cap for count in waiting]
        self._others_running = [max(0, count - ours) for count, ours in zip(total, own_running)]
        self._active = active
        return PlanInputs(list(waiting), total, active, True)

    def current(self, own_running: Sequence[int]) -> PlanInputs:
        """The copy, for a plan between reads."""
        running = [others + ours for others, ours in zip(self._others_running, own_running)]
        return PlanInputs(list(self._waiting), running, self._active, False)

    def added(self, priorities: Sequence[int] | None) -> None:
        """Jobs were added on this host (None: some wake-up did not say which priorities)."""
        if priorities is None:
            self._stale = True
            return
        for priority in priorities:
            rank = RANK.get(priority)
            if rank is None:
                self._stale = True
            else:
                self._waiting[rank] += 1

    def claimed(self, wanted: Sequence[int], claimed: Sequence[int]) -> None:
        """A claim asked for ``wanted`` and got ``claimed`` jobs per rank."""
        for rank, (want, got) in enumerate(zip(wanted, claimed)):
            if got < want:
                # Fewer than planned: none may be left (other masters took them, a duplicate add
                # was counted), or the claim cut its batches shorter than the plan's sizes (by the
                # run-time estimates of the rows it read; one float rounding is enough). Only the
                # database tells which: read it before the next plan. Taken for none left, a
                # priority with work waiting got no worker until the next poll.
                self._waiting[rank] = 0
                self._at_least[rank] = False
                self._stale = True
            else:
                self._waiting[rank] = max(0, self._waiting[rank] - got)



def claimed_by_rank(batches: Iterable[Batch]) -> list[int]:
    """The jobs of ``batches`` per rank: a batch is of one priority, so it is counted whole."""
    counts = [0] * len(RANK)
    for batch in batches:
        rank = RANK.get(batch.jobs[0].priority) if batch.jobs else None
        if rank is not None:
            counts[rank] += len(batch.jobs)
    return counts
