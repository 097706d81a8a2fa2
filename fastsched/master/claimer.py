"""Claims, on one connection or split over several where the dialect runs transactions in parallel.

A claim of two or more batches (64 jobs or more) on MariaDB/MySQL is split over the backend's
``concurrent_connections``: the batches are laid out child by child, priority by priority (as one
claim fills them) and dealt to the connections in turn, so that together they take what one claim
would. Beside them, the Completer's own connection may write the finishing outcomes. Each part is
one transaction of its own; they cannot wait on each other (claims skip rows another holds, SKIP
LOCKED; the finishing writes touch only this host's claimed rows). A thread per part and call,
joined before :meth:`Claimer.claim` returns.
"""
from __future__ import annotations

import datetime as dt
import functools
import threading
from collections.abc import Callable, Sequence
from typing import Any

from fastsched.backends.base import Batch
from fastsched.backends.contracts import MasterStore
from fastsched.batching import BatchSizing
from fastsched.master.completer import ClaimWrites
from fastsched.master.dblink import DbLink
from fastsched.master.metrics import DbKind
from fastsched.priority import ALL_PRIORITIES

# Fewer jobs than this to claim and the claim stays on one connection: a second one costs a thread
# and a commit of its own, and for a few jobs that made claims slower, not faster.
SPLIT_MIN_JOBS = 64

Part = tuple[list[int], list[int]]  # (wanted per rank, children) of one claim


def split_claim(wanted: Sequence[int], children: Sequence[int], sizes: Sequence[int], groups: int) -> list[Part]:
    """Split one claim into up to ``groups`` claims that together take what the one would. Empty
    (claim as one) when there is a single batch, or too few jobs for the extra connection to pay."""
    if groups < 2:
        return []
    slots: list[tuple[int, int]] = []  # (priority rank, jobs) of each batch, one per child
    for rank, count in enumerate(wanted):
        per_batch = sizes[rank]
        while count > 0 and len(slots) < len(children):
            take = min(per_batch, count)
            slots.append((rank, take))
            count -= take
    if len(slots) < 2 or sum(take for _, take in slots) < SPLIT_MIN_JOBS:
        return []
    parts: list[Part] = []
    for group in range(min(groups, len(slots))):
        part_wanted = [0] * len(ALL_PRIORITIES)
        part_children = []
        for index in range(group, len(slots), groups):
            rank, take = slots[index]
            part_wanted[rank] += take
            part_children.append(children[index])
        parts.append((part_wanted, part_children))
    return parts


class Claimer:
    """Claims for this master's children through ``link``; ``lanes`` connections at once at most
    (``backend.concurrent_connections``), the extra ones opened the first time they are needed."""

    def __init__(self, link: DbLink, host: str, lanes: int, queues: tuple[str, ...] = ()) -> None:
        self._queues = queues  # claim only jobs of these queues; () = every queue
        self._link = link
        self._host = host
        self._lanes = lanes
        self._siblings: list[MasterStore] = []

    def claim(
        self, wanted: Sequence[int], children: Sequence[int], sizing: BatchSizing, now: dt.datetime,
        writes: ClaimWrites,
    ) -> list[Batch]:
        """Claim ``wanted`` for ``children`` (batch i for children[i]), cut by ``sizing``, and write
        ``writes``; every part has committed when this returns. A DatabaseError leaves the claim's
        result unknown."""
        return self._link.call(DbKind.CLAIM, self._claim, list(wanted), list(children), sizing, now, writes)

    def _claim(
        self, wanted: list[int], children: list[int], sizing: BatchSizing, now: dt.datetime, writes: ClaimWrites
    ) -> list[Batch]:
        backend = self._link.backend
        host, queues = self._host, self._queues
        parts = split_claim(wanted, children, sizing.sizes, self._lanes)
        first_wanted, first_children = parts[0] if parts else (wanted, children)

        def first() -> list[Batch]:
            if writes.in_claim is not None:
                return list(backend.write_outcomes_and_claim(
                    writes.in_claim, first_wanted, first_children, host, sizing, now, queues
                ))
            return list(backend.claim(first_wanted, first_children, host, sizing, now, queues))

        side: list[Callable[[], Any]] = []
        if writes.beside is not None:
            side.append(writes.beside)
        for index, (part_wanted, part_children) in enumerate(parts[1:]):
            side.append(functools.partial(
                self.lane(index).claim, part_wanted, part_children, host, sizing, now, queues
            ))
        if not side:
            return first()
        results: list[Any] = [None] * len(side)
        failures: list[BaseException] = []

        def run(index: int, work: Callable[[], Any]) -> None:
            try:
                results[index] = work()
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                failures.append(exc)

        threads = [
            threading.Thread(target=run, args=(index, work), name="fastsched-claim", daemon=True)
            for index, work in enumerate(side)
        ]
        for thread in threads:
            thread.start()
        try:
            batches = first()
        finally:
            for thread in threads:
                thread.join()
        if failures:
            # Some parts committed, but the caller keeps the outcomes to write again and treats
            # the claim as unknown (as after a COMMIT whose answer was lost): it re-reads its claims.
            raise failures[0]
        for result in results:
            if isinstance(result, list):
                batches.extend(result)
        return batches

    def lane(self, index: int) -> Any:
        """The backend of the index-th extra connection, made (not yet connected) before any thread starts."""
        while len(self._siblings) <= index:
            self._siblings.append(self._link.backend.open_sibling())
        return self._siblings[index]

    def close(self) -> None:
        for sibling in self._siblings:
            sibling.close()
