"""The job row: one type over the one select list ``job_columns`` (``fastsched/sql/<dialect>/queries.sql``)
that get_job, lock_job and failed_jobs read, and the one place a row becomes a ``Job``.

The claims read the other row type, ``fastsched.jobs.ClaimedJob``, over ``claim_columns``
(``fastsched/sql/common/queries.sql``).
"""
from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any, NamedTuple

from fastsched.backends.base import owner_host
from fastsched.jobs import DONE_CANCELLED, DONE_FAILED, DONE_OK, Job, JobState


def job_state(done: int, pid: int, next_try: dt.datetime, now: dt.datetime) -> JobState:
    """A row's state from its columns (``fastsched.backends.contracts`` lists the meanings)."""
    if done == DONE_OK:
        return JobState.DONE
    if done == DONE_FAILED:
        return JobState.FAILED
    if done == DONE_CANCELLED:
        return JobState.CANCELLED
    if pid:
        return JobState.RUNNING
    return JobState.DEFERRED if next_try > now else JobState.WAITING


def _args(parameter: str) -> list[object] | None:
    try:
        value = json.loads(parameter)
    except ValueError:
        return None
    return value if isinstance(value, list) else None


class JobRow(NamedTuple):
    """A row of ``job_columns``, in its order; times as the driver returns them."""

    id: int
    command: str
    parameter: str
    priority: int
    created: Any
    next_try: Any
    executed: Any  # None: never claimed
    finished: Any  # None: not finished
    retrial: int
    crashes: int
    pid: int
    owner: str  # the claim's owner ("<host>#<instance>"), '' when unclaimed
    last_error: str | None
    done: int
    failed_hash: bytes | None  # a failed job's dedup key, restored by a retry
    queue: str

    def state(self, now: dt.datetime, time: Callable[[Any], dt.datetime]) -> JobState:
        return job_state(self.done, self.pid, time(self.next_try), now)

    def job(self, now: dt.datetime, time: Callable[[Any], dt.datetime]) -> Job:
        """The ``Job``, its state computed against ``now``; ``time``: the dialect's stored time to
        a datetime."""
        next_try = time(self.next_try)
        return Job(
            id=int(self.id),
            command=self.command,
            args=_args(self.parameter),
            parameter=self.parameter,
            priority=int(self.priority),
            state=job_state(self.done, self.pid, next_try, now),
            created=time(self.created),
            next_try=next_try,
            executed=None if self.executed is None else time(self.executed),
            finished=None if self.finished is None else time(self.finished),
            retrial=int(self.retrial),
            crashes=int(self.crashes),
            pid=int(self.pid),
            host=owner_host(self.owner),
            last_error=self.last_error,
            queue=self.queue,
        )
