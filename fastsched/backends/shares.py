"""Claims spread over the nodes of a cluster where every node takes writes (MariaDB Galera).

Two claims on different nodes that take the same row both commit locally, and one of them then
loses certification (error 1213) and runs again: SKIP LOCKED only sees the locks of its own node.
So the masters on different nodes claim different rows, and know which from the database:

* Each master records its node (``fastsched_meta``, ``galera_node:<host id>``: the node's gcomm
  UUID and, on the database's clock, when it last claimed) when it registers, before its first
  claim, and then at most every STAMP_EVERY while it claims. Registered masters with such a row
  are the members; a master stopped or recovered is one no more.
* The nodes that have members are the shares, ranked by UUID: the node of rank i of K owns share
  i, the rows whose CRC32(id) modulo K is i. Nodes without a master have no share, so nothing
  waits for a claimer that does not exist. Masters on one node share theirs (SKIP LOCKED keeps
  them apart: a node's locks are its own).
* A claim takes the oldest rows of its own share (FIFO within it), then, if too few, rows of the
  others that their owners will not claim next: past the ``reserve`` oldest of each (a batch of
  this priority for each worker of the share's masters that claimed within ACTIVE_WINDOW: no
  claim of theirs takes more), the youngest, so the stealer works from the far end and never
  meets the owner's next claim. A share
  whose masters have not claimed for ACTIVE_WINDOW (busy with long jobs, or dead and not yet
  recovered) is taken from its oldest: nobody else will take those soon.
* A claim that lost certification runs again on its own share only: the loser just met another
  node's claim, and its view of the shares is read again.

With every master on one node (or one server) there is no share: claims take the oldest rows.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from fastsched.backends.sqlfiles import expand_in, expand_spread

NODE_PREFIX = "galera_node:"  # fastsched_meta rows of the masters' nodes, by host id
STAMP_EVERY = 1.0  # seconds between the records of a claiming master's node (and time)
# A master that claimed within this many seconds will claim its share's oldest rows next: others
# leave them (the reserve). Past it, its share is taken from the oldest by whoever has room.
ACTIVE_WINDOW = 3.0  # seconds


def node_row(host_id: int) -> str:
    """The fastsched_meta name of the row that records the node of the master ``host_id``."""
    return f"{NODE_PREFIX}{int(host_id)}"


@dataclasses.dataclass(frozen=True)
class ShareView:
    """A master's share, ``slot`` of ``of``, and for every share the workers of its masters that
    claimed lately."""

    slot: int
    of: int
    active: tuple[int, ...]

    @property
    def share(self) -> tuple[int, int]:
        return self.slot, self.of

    def steals(self, batch: int) -> list[tuple[int, int]]:
        """(share, reserve) in the order a claim whose batches hold ``batch`` rows takes from the
        other shares: its own is short. The shares nobody claims lately first, from their oldest
        (reserve 0), then the others past their reserve (a batch for each worker of their masters
        that claim lately), from the share after ours on (each stealer starts on another one)."""
        order = [(self.slot + step) % self.of for step in range(1, self.of)]
        idle = [(share, 0) for share in order if not self.active[share]]
        busy = [(share, batch * self.active[share]) for share in order if self.active[share]]
        return idle + busy


def view_of(node: str, members: Iterable[tuple[str, bool, int]]) -> ShareView | None:
    """The view of a master on ``node`` from the members' (node, claimed lately, workers); None
    when every member is on that node (no share: take the oldest rows)."""
    members = list(members)
    nodes = sorted({member for member, _, _ in members} | {node})
    if len(nodes) < 2:
        return None
    rank = {member: index for index, member in enumerate(nodes)}
    active = [0] * len(nodes)
    for member, lately, workers in members:
        if lately:
            active[rank[member]] += max(int(workers), 1)
    return ShareView(rank[node], len(nodes), tuple(active))


class ShareKeeper:
    """When this master last recorded its node, and which: one for a backend and its siblings
    (their claims are one master's), so that one connection records it at a time."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()  # the claim lanes run in threads
        self._recorded: tuple[int, str] | None = None  # (host id, node) last recorded
        self._recorded_at = -float("inf")

    def take_stamp(self, host_id: int, node: str) -> bool:
        """Whether the caller should record ``node`` for ``host_id`` now (it then owns the duty
        until the next STAMP_EVERY): a new node, a new host id, or the last record is old."""
        with self._lock:
            now = self._clock()
            if self._recorded == (host_id, node) and now - self._recorded_at < STAMP_EVERY:
                return False
            self._recorded, self._recorded_at = (host_id, node), now
            return True

    def forget(self) -> None:
        """The record did not commit (its transaction failed): make the next claim record it."""
        with self._lock:
            self._recorded_at = -float("inf")


# Finds the ids of a share's runnable rows in claim order, at most params["limit"] (a plain read).
Finder = Callable[[Any, dict[str, Any], tuple[int, int]], list[int]]


class SharedClaim:
    """The rows of one claim of one priority on a cluster, in a transaction on ``cursor``:
    ``queries`` are the dialect's named queries; ``find`` overrides how a share's oldest rows are
    found (a claim from some queues); ``lanes``: how many connections of this master may claim
    at once (a plain read finds that many times the rows wanted, so that a lane whose first rows
    the other lane locked takes the next ones)."""

    def __init__(self, cursor: Any, queries: dict[str, str], lanes: int, find: Finder | None = None) -> None:
        self._cursor = cursor
        self._q = queries
        self._lanes = max(lanes, 1)
        self._tails = find is None  # a claim from some queues takes no busy share's tail
        self._find = find or self._find_oldest

    def rows(
        self, view: ShareView, params: dict[str, Any], batch: int, *, own_only: bool = False
    ) -> list[tuple[Any, ...]]:
        """The rows a claim of ``params`` (priority, now, limit) takes, locked, for batches of
        ``batch`` rows at most: see the module's docstring. Each is the claim's columns."""
        limit = int(params["limit"])
        rows = self._take(self._find(self._cursor, self._wide(params, limit), view.share), params, limit)
        if own_only:
            return rows
        for slot, reserve in view.steals(batch):
            missing = limit - len(rows)
            if missing <= 0:
                break
            share = (slot, view.of)
            if reserve == 0:
                found = self._find(self._cursor, self._wide(params, missing), share)
            elif self._tails:
                found = self._find_tail(params, missing, share, reserve)
            else:
                continue  # left to its owners
            rows += self._take(found, params, missing)
        return rows

    def _wide(self, params: dict[str, Any], want: int) -> dict[str, Any]:
        return {**params, "limit": want * self._lanes}

    def _find_oldest(self, cursor: Any, params: dict[str, Any], share: tuple[int, int]) -> list[int]:
        cursor.execute(expand_spread(self._q["find_claimable"], share), params)
        return [int(row[0]) for row in cursor.fetchall()]

    def _find_tail(self, params: dict[str, Any], want: int, share: tuple[int, int], reserve: int) -> list[int]:
        cursor = self._cursor
        cursor.execute(expand_spread(self._q["share_boundary"], share), {**params, "reserve": reserve})
        boundary = cursor.fetchone()
        if boundary is None:
            return []  # the owner claims all there is next
        tail = {**self._wide(params, want), "from_try": boundary[0], "from_id": boundary[1]}
        cursor.execute(expand_spread(self._q["find_share_tail"], share), tail)
        return [int(row[0]) for row in cursor.fetchall()]

    def _take(self, ids: list[int], params: dict[str, Any], want: int) -> list[tuple[Any, ...]]:
        """Lock up to ``want`` of ``ids`` (skipping those another transaction holds, and those no
        longer runnable), in their order, a part at a time: a lane takes the rows past the ones
        the other holds without locking more than it takes."""
        taken: list[tuple[Any, ...]] = []
        start = 0
        while len(taken) < want and start < len(ids):
            part = ids[start:start + want - len(taken)]
            start += len(part)
            self._cursor.execute(expand_in(self._q["lock_claimable"], part), params)
            taken.extend(tuple(row[:6]) for row in self._cursor.fetchall())
        return taken
