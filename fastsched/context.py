"""What a running job can ask about itself and say about its end: ``fastsched.current_job()``,
``fastsched.defer()``, ``raise fastsched.Fail("why")`` and ``raise fastsched.Retry(delay=60)``.

    @fastsched.task("Delivery")
    def delivery(target):
        if not reachable(target):
            fastsched.defer()        # run again later, like Friendica's Worker::defer()
            return
        ...

Both only work inside a job run by a pool child; elsewhere they raise ``fastsched.errors.NotInJob``.
A child runs one job at a time, so the state is a pair of module globals the child sets per job
(cheaper than a context variable on the hot path); ``JobContext`` is built only when asked for.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

from fastsched.errors import InvalidInput, NotInJob

__all__ = ["Fail", "JobContext", "Retry", "current_job", "defer"]


class Fail(Exception):
    """Raised by a job: fail it at once, with this reason kept in last_error; no retry.

    ``raise fastsched.Fail("the account is gone")``.
    """

    def __init__(self, reason: str = "failed by the task (fastsched.Fail)") -> None:
        super().__init__(reason)
        self.reason = str(reason)


class Retry(Exception):
    """Raised by a job: run it again later, like ``fastsched.defer(delay)``, counted as a retrial.

    ``delay``: seconds until the next attempt; None for the task's (else the pool's) retry delay.
    Past the retry limit the job is failed, as for defer().
    """

    def __init__(self, delay: float | None = None) -> None:
        self.delay = _check_delay(delay, "Retry")
        super().__init__(f"retry in {self.delay:g}s" if self.delay is not None else "retry later")


def _check_delay(delay: float | None, what: str) -> float | None:
    if delay is None:
        return None
    if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not math.isfinite(delay):
        raise InvalidInput(f"{what}: delay must be None or a finite number of seconds, got {delay!r}")
    if delay < 0:
        raise InvalidInput(f"{what}: delay must not be negative, got {delay!r}")
    return float(delay)


@dataclasses.dataclass(frozen=True)
class JobContext:
    """The running job, as ``current_job()`` returns it."""

    id: int
    command: str
    priority: int
    retrial: int  # how many times it was retried (deferred or failed) before this attempt
    args: tuple[Any, ...]


# Set by fastsched.child_process around each job, through the functions below.
_job: tuple[Any, ...] | None = None  # (id, command, parameter, priority, retrial)
_args: Any = None  # the decoded args of _job
_deferred = False  # defer() was called during this job
_defer_delay: float | None = None  # seconds asked for; None = the pool's retry delay
_retry_limit = -1  # the pool's retry limit (set once per child); < 0: unknown
_retry_limits: dict[str, int] = {}  # command -> its task's retry_limit, where it has one


def current_job() -> JobContext:
    """The job this code is running in. NotInJob outside a job."""
    job = _job
    if job is None:
        raise NotInJob("fastsched.current_job() is only valid inside a job run by a fastsched pool")
    args = _args
    return JobContext(job[0], job[1], job[3], job[4], tuple(args) if isinstance(args, list) else ())


def defer(delay: float | None = None) -> bool:
    """Ask for this job to run again later instead of being marked done (Friendica's Worker::defer).

    ``delay``: seconds until the next attempt; None means the pool's retry delay (by default
    Friendica's ``(retrial+2)^4 + rand(1,30)*retrial`` seconds). The job counts one more retrial and
    may be demoted one priority step, as in Friendica. Return after calling it: the job then ends
    as "deferred". Returns True if another attempt will be made, False if the retry limit is
    reached (the job will then be kept as failed for a person to look at).
    Raises NotInJob outside a job.
    """
    global _deferred, _defer_delay
    job = _job
    if job is None:
        raise NotInJob("fastsched.defer() is only valid inside a job run by a fastsched pool")
    delay = _check_delay(delay, "defer")
    _deferred = True
    _defer_delay = delay
    limit = _retry_limits.get(job[1], _retry_limit)
    return limit < 0 or job[4] + 1 <= limit


# --- the child's side (fastsched.child_process) ---------------------------------------------------
def set_retry_limits(pool_limit: int, task_limits: dict[str, int]) -> None:
    """Once per child: the pool's retry limit and each task's own, for defer()'s answer."""
    global _retry_limit, _retry_limits
    _retry_limit = pool_limit
    _retry_limits = task_limits


def begin_job(job: tuple[Any, ...]) -> None:
    """A job (``protocol.JobToRun`` fields) starts: current_job() names it, its args not yet decoded."""
    global _job, _args
    _job = job
    _args = None


def set_args(args: Any) -> None:
    """The decoded args of the job that started."""
    global _args
    _args = args


def take_deferral() -> tuple[bool, float | None]:
    """Whether the job that ended called defer(), and the delay it asked for; forgotten for the next job."""
    global _deferred
    deferred, _deferred = _deferred, False
    return deferred, _defer_delay


def end_batch() -> None:
    """No job runs: current_job() and defer() raise NotInJob again."""
    global _job, _args
    _job = None
    _args = None
