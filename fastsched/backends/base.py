"""What crosses the storage boundary: the rows and counts the contracts return, and the schema
version. The contracts themselves, one per consumer, are in ``fastsched.backends.contracts``;
``Backend`` (all of them) is re-exported here.
"""
from __future__ import annotations

import dataclasses
import datetime as dt

from fastsched.backends.contracts import Backend
from fastsched.jobs import ClaimedJob

__all__ = [
    "OWNER_MARK", "SCHEMA_VERSION", "Backend", "Batch", "PlanCounts", "PriorityStats", "ProcessInfo",
    "QueueStats", "claim_owner", "owner_host",
]

SCHEMA_VERSION = 3


@dataclasses.dataclass(frozen=True)
class PlanCounts:
    """What the scheduler needs each cycle, read in one statement."""

    waiting: list[int]  # per priority rank (0=CRITICAL..4=NEGLIGIBLE), each capped at the cap asked for
    running: list[int]  # per rank: distinct (host, pid) workers holding a pending claim, cluster-wide
    active: int  # the workers of all live masters (sum of their ``workers``), cluster-wide
    # With queues (plan_counts(queues=...)): waiting and running among those queues' jobs, active
    # the workers of the live masters serving the same queue set.


@dataclasses.dataclass(frozen=True)
class QueueStats:
    """The pending and failed jobs of one queue (``Backend.queue_stats``)."""

    queue: str
    waiting: int
    deferred: int
    running: int
    failed: int


@dataclasses.dataclass(frozen=True)
class PriorityStats:
    priority: int
    waiting: int
    deferred: int
    running: int
    failed: int
    done_last_hour: int
    oldest_waiting_seconds: float | None  # age of the oldest waiting job (now - created), None if none waits
    cancelled: int = 0  # jobs stopped at an operator's request, kept like failed ones
    paused: int = 0  # pending jobs a pause of their command or queue has set aside (not in waiting/deferred)


OWNER_MARK = "#"  # a claim's owner is "<host id>#<instance>" (the queries' release_orphans spell it too)


def claim_owner(host: str, instance: str) -> str:
    """The owner of the claims of the master ``instance`` of ``host`` (a fastsched_host name); a
    master without an instance (schema version 2) owns its claims by its host id."""
    return f"{host}{OWNER_MARK}{instance}" if instance else host


def owner_host(owner: str) -> str:
    """The host id of a claim's owner (a claim of schema version 2 names the host alone)."""
    host, mark, _ = owner.rpartition(OWNER_MARK)
    return host if mark else owner


@dataclasses.dataclass(frozen=True)
class ProcessInfo:
    host: str
    pid: int
    role: str  # "master" or "child"
    master_pid: int
    workers: int
    started: dt.datetime
    heartbeat: dt.datetime
    queues: tuple[str, ...] = ()  # for a master: the queues it claims from; () = every queue
    instance: str = ""  # for a master: one per start; its claims are owned by "<host>#<instance>"
    machine: str = ""  # for a master: where its pid means something (boot id and PID namespace)


@dataclasses.dataclass(frozen=True)
class Batch:
    """A claimed batch: all of one priority, for one child."""

    pid: int
    jobs: list[ClaimedJob]
