"""Whether the master should wait a moment for a batch about to end before it claims.

Every claim transaction costs a commit and a plan_counts whatever its size, so when a busy child's
batch should end well within the time a claim takes (fast jobs in big batches), the master waits
for it and claims for both children at once. It never waits past a batch's expected end (an
average batch time) nor longer than COALESCE_MAX, and the waits before one claim add up to no more
than that either: with many children on short jobs one is always about to finish, and a chain of
waits could keep the free ones idle.
"""
from __future__ import annotations

from collections.abc import Iterable

COALESCE_SHARE = 0.5  # wait at most this share of a claim's duration for a batch about to end
COALESCE_MAX = 0.02  # seconds: the longest such wait
EWMA_WEIGHT = 0.2  # weight of the newest sample in the running averages of claim and batch times


def ewma(average: float, sample: float) -> float:
    return sample if average <= 0 else average * (1 - EWMA_WEIGHT) + sample * EWMA_WEIGHT


class Coalescer:
    """The running averages of claim and batch times, and the waits before the next claim."""

    def __init__(self) -> None:
        self.claim_seconds = 0.0  # a claim transaction, on average
        self.batch_seconds = 0.0  # a child running one batch, on average (the child's own timing)
        self._holding_since = 0.0  # monotonic start of the waits before the next claim (0: none)

    def claimed(self, seconds: float) -> None:
        self.claim_seconds = ewma(self.claim_seconds, seconds)

    def stop_holding(self) -> None:
        """The master goes on to claim: the next waits add up from zero again."""
        self._holding_since = 0.0

    def batch_ran(self, seconds: float) -> None:
        self.batch_seconds = ewma(self.batch_seconds, seconds)

    def hold(self, mono: float, free: int, sent_at: Iterable[float]) -> float:
        """Seconds to wait before claiming (0: claim now). ``free``: children a claim could feed
        now; ``sent_at``: when each busy child with one batch (and no more) got it."""
        claim_time, batch_time = self.claim_seconds, self.batch_seconds
        if claim_time <= 0 or batch_time <= 0:
            return 0.0
        limit = min(claim_time * COALESCE_SHARE, COALESCE_MAX)
        if self._holding_since and mono - self._holding_since >= limit:
            return 0.0
        hold = 0.0
        if free:
            for sent in sent_at:
                remaining = sent + batch_time - mono
                if 0 < remaining <= limit:
                    hold = max(hold, remaining)
        if hold <= 0:
            self._holding_since = 0.0
            return 0.0
        if not self._holding_since:
            self._holding_since = mono
        return hold
