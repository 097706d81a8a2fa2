"""The outcomes of finished batches: buffered here, and written only from here.

The master learns outcomes one batch at a time and writes them in bulk: alone, in one
transaction (:meth:`Completer.write`), or with the next claim (:meth:`Completer.for_claim`), which
the Completer splits. Retries and releases hand jobs back to the queue: they go first into the
claim's own transaction, so that claim can take them. Done and failed jobs are final: when there
are many and the dialect runs transactions in parallel, they are written on the Completer's own
connection while the claim runs (the server runs one statement per connection at a time, and in a
drain the master waits on it nearly all the time). Both touch disjoint rows: the finishing writes
only this host's claimed rows (pid <> 0), the claim only unclaimed ones (pid = 0, SKIP LOCKED).

Outcomes that could not be written stay, in front of any gathered since, and go out with the next
write. Until written, a finished batch's rows still read as running in ``plan_counts``: the
Completer keeps the ranks of those batches for the counts cache.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable

from fastsched.backends.contracts import MasterStore
from fastsched.errors import DatabaseError
from fastsched.jobs import Failure, Outcomes
from fastsched.master.dblink import DbLink
from fastsched.master.metrics import DbKind

# Final outcomes (done, failed, cancelled) to write beside a claim on the Completer's own connection,
# at least: for a few, a thread and a commit of their own made claims slower, not faster (8 workers on 5 ms
# NEGLIGIBLE jobs: 240-330 -> 520 jobs/s on a loaded machine with this rule).
BESIDE_MIN_JOBS = 64


def merge(older: Outcomes, newer: Outcomes) -> Outcomes:
    """``older`` followed by ``newer`` (written in that order)."""
    return Outcomes(
        done=older.done + newer.done,
        retry=older.retry + newer.retry,
        failed=older.failed + newer.failed,
        released=older.released + newer.released,
        cancelled=older.cancelled + newer.cancelled,
    )


class Completer:
    """The buffer of outcomes and the only path that writes them. ``own_connection``: a backend
    of its own (a sibling of the link's) for writes beside a claim; None where the dialect has
    one writer at a time."""

    def __init__(self, link: DbLink, host: str, wall: Callable[[], dt.datetime], own_connection: MasterStore | None = None) -> None:
        self._link = link
        self._host = host
        self._wall = wall
        self._own = own_connection
        self._buffer = Outcomes()
        self._finished_ranks: list[int] = []

    def __bool__(self) -> bool:
        return bool(self._buffer)

    def __len__(self) -> int:
        return len(self._buffer)

    @property
    def finished_ranks(self) -> list[int]:
        """The ranks of the batches whose outcomes are not written yet."""
        return list(self._finished_ranks)

    def add(self, outcomes: Outcomes, rank: int | None = None) -> None:
        """Outcomes of a batch (``rank``: of its priority, None for jobs that never ran in a child)."""
        buffer = self._buffer
        buffer.done.extend(outcomes.done)
        buffer.retry.extend(outcomes.retry)
        buffer.failed.extend(outcomes.failed)
        buffer.released.extend(outcomes.released)
        buffer.cancelled.extend(outcomes.cancelled)
        if rank is not None:
            self._finished_ranks.append(rank)

    def add_failure(self, failure: Failure) -> None:
        self._buffer.failed.append(failure)

    def take(self) -> Outcomes:
        """Every outcome, the buffer emptied (our claims were taken over: none is ours to write as
        our own)."""
        outcomes, self._buffer = self._buffer, Outcomes()
        self._finished_ranks.clear()
        return outcomes

    def write(self, now: dt.datetime | None = None) -> bool:
        """Write the buffer in one transaction; False (the buffer kept) when the database failed."""
        if not self._buffer:
            return True
        outcomes, self._buffer = self._buffer, Outcomes()
        try:
            self._link.call(DbKind.WRITE, self._link.backend.write_outcomes, self._host, now or self._wall(), outcomes)
        except DatabaseError:
            self._buffer = merge(outcomes, self._buffer)
            return False
        self._finished_ranks.clear()
        return True

    def write_late(self, outcomes: Outcomes, now: dt.datetime | None = None) -> int:
        """Write outcomes our claims no longer cover (we were declared dead): to the jobs no master
        has claimed since, and only those; how many were written. DatabaseError raised."""
        return int(self._link.call(
            DbKind.WRITE, self._link.backend.write_released_outcomes, now or self._wall(), outcomes
        ))

    def for_claim(self, now: dt.datetime) -> ClaimWrites:
        """Take the buffer for the next claim: what goes into the claim's transaction, and what
        (if anything) to write beside it at the same time. Then :meth:`after_claim`."""
        outcomes, self._buffer = self._buffer, Outcomes()
        own = self._own
        if own is not None and len(outcomes.done) + len(outcomes.failed) >= BESIDE_MIN_JOBS:
            finishing = Outcomes(done=outcomes.done, failed=outcomes.failed, cancelled=outcomes.cancelled)
            handing_back = Outcomes(retry=outcomes.retry, released=outcomes.released)
            host = self._host

            def beside() -> None:
                own.write_outcomes(host, now, finishing)

            return ClaimWrites(handing_back or None, beside, outcomes)
        return ClaimWrites(outcomes or None, None, outcomes)

    def after_claim(self, writes: ClaimWrites, ok: bool) -> None:
        """The claim committed (``ok``), or it failed and what it took goes back to the buffer.
        A failed claim may have committed some parts: those outcomes are written again, which is
        harmless (each write is guarded by host and done=0)."""
        if ok:
            self._finished_ranks.clear()
        else:
            self._buffer = merge(writes.taken, self._buffer)

    def close(self) -> None:
        if self._own is not None:
            self._own.close()


@dataclasses.dataclass(frozen=True)
class ClaimWrites:
    """The outcomes that go out with one claim."""

    in_claim: Outcomes | None  # written first in the claim's own transaction
    beside: Callable[[], None] | None  # writes the rest on the Completer's own connection, meanwhile
    taken: Outcomes  # all of them
