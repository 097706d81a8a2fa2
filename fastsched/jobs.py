"""What a job is, as stored, as shown to users and as it travels to a child process."""
from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from typing import NamedTuple


class JobState(str, enum.Enum):
    WAITING = "waiting"  # runnable now: unclaimed, next_try has passed
    DEFERRED = "deferred"  # unclaimed, next_try in the future (a delay or a retry)
    RUNNING = "running"  # claimed by a child process (pid and host set)
    DONE = "done"
    FAILED = "failed"  # kept for a person to see: retries exhausted, poison pill, unknown command...
    CANCELLED = "cancelled"  # stopped while running at an operator's request; kept like failed, never retried


# Values of the ``done`` column. Friendica's column is a boolean; failed rows are kept with 2 so
# that every ``NOT done`` query written for Friendica still means "pending".
DONE_PENDING = 0
DONE_OK = 1
DONE_FAILED = 2
DONE_CANCELLED = 3  # last_error says who asked, finished when it ended


@dataclasses.dataclass(frozen=True)
class Job:
    """A job as ``Queue.get()`` returns it. Times are naive UTC datetimes."""

    id: int
    command: str
    args: list[object] | None  # None when the stored parameter is not valid JSON
    parameter: str  # the stored JSON text, verbatim
    priority: int
    state: JobState
    created: dt.datetime
    next_try: dt.datetime
    executed: dt.datetime | None  # when the current or last claim started
    finished: dt.datetime | None
    retrial: int
    crashes: int  # how many times a child died while running it
    pid: int  # child process running it, 0 when unclaimed
    host: str  # host id of the master that owns the claim ('' when unclaimed)
    last_error: str | None
    queue: str = "default"  # the queue it belongs to (pools started with --queues claim only theirs)


class NewJob(NamedTuple):
    """A validated job ready to store (built by the producer API, never by callers)."""

    command: str
    parameter: str  # canonical JSON of the args
    priority: int
    # None: the database server's clock at the insert (a producer's own clock may be off; the
    # claims compare next_try with the server's clock).
    created: dt.datetime | None
    next_try: dt.datetime | None  # None: the server's clock at the insert, plus delay_us
    dedup_hash: bytes | None  # sha1 over command and parameter; None when dedup is off
    force_priority: bool
    queue: str = "default"
    # dedup="waiting": only a duplicate that has not started absorbs this job; a running one gives
    # its dedup key up to it (so a change made while that one runs is processed by this one).
    dedup_waiting: bool = False
    delay_us: int = 0  # microseconds added to the server's clock when next_try is None


class ClaimedJob(NamedTuple):
    """What the master claims and sends to a child: small and picklable."""

    id: int
    command: str
    parameter: str
    priority: int
    retrial: int
    crashes: int


class Retry(NamedTuple):
    """Back to the queue for another attempt."""

    id: int
    next_try: dt.datetime
    priority: int  # possibly demoted
    retrial: int  # the new value
    crashes: int  # the new value
    error: str | None


class Failure(NamedTuple):
    """Kept as failed for a person to see and retry."""

    id: int
    retrial: int
    crashes: int
    error: str


@dataclasses.dataclass
class Outcomes:
    """What the master learned from its children since the last write, written in one transaction."""

    done: list[int] = dataclasses.field(default_factory=list)
    retry: list[Retry] = dataclasses.field(default_factory=list)
    failed: list[Failure] = dataclasses.field(default_factory=list)
    released: list[int] = dataclasses.field(default_factory=list)  # claimed, never started: no penalty
    cancelled: list[int] = dataclasses.field(default_factory=list)  # stopped at an operator's request

    def __bool__(self) -> bool:
        return bool(self.done or self.retry or self.failed or self.released or self.cancelled)

    def __len__(self) -> int:
        return len(self.done) + len(self.retry) + len(self.failed) + len(self.released) + len(self.cancelled)
