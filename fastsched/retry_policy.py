"""Pure decisions of the pool: what happens to a job after an attempt that did not succeed.

No I/O, no processes, no clock of its own: a job (``ClaimedJob``), ``now`` and the settings go in,
a ``Retry`` or a ``Failure`` comes out. Which priorities get the free worker slots is decided by
``fastsched.core.plan``; this module decides retries, demotion, run-time limits and crash
accounting, with Friendica's numbers:

* retry delay for the new retrial n: ``(n+2)^4 + rand(1,30)*n`` seconds (Worker::defer at HEAD),
  or a fixed number of seconds (``PoolSettings.retry_delay``);
* one-step demotion: n > 3 and priority < MEDIUM -> MEDIUM, elif n > 6 and < LOW -> LOW,
  elif n > 8 and < NEGLIGIBLE -> NEGLIGIBLE;
* past the retry limit the job is failed with its last error and kept for a person
  (Friendica dropped it silently);
* a job whose child died counts a crash, not a retrial, and is failed as a poison pill at the
  crash limit (Friendica retried such jobs forever).
"""
from __future__ import annotations

import datetime as dt
import math
import random
from collections.abc import Callable, Mapping
from typing import Union

from fastsched.errors import ConfigError
from fastsched.jobs import ClaimedJob, Failure, Retry
from fastsched.priority import Priority

__all__ = [
    "FRIENDICA_DELAY",
    "MAX_DELAY",
    "MAX_ERROR_CHARS",
    "after_crash",
    "after_defer",
    "after_error",
    "after_timeout",
    "bad_arguments",
    "demote",
    "describe_priority",
    "parse_retry_delay",
    "retry_delay",
    "run_limit_seconds",
    "truncate_error",
    "unknown_command",
]

FRIENDICA_DELAY = "friendica"  # PoolSettings.retry_delay for Friendica's growing delays
MAX_DELAY = 366 * 86400.0  # seconds: the longest delay a retry or defer() may ask for
MAX_ERROR_CHARS = 8000  # characters of an error kept in last_error (a TEXT column holds 64 KiB)
_MAX_RETRIAL = 127  # the retrial column is a TINYINT
_MAX_CRASHES = 255  # the crashes column is a TINYINT UNSIGNED
_JITTER = (1, 30)  # Friendica's rand(1, 30)


def parse_retry_delay(setting: str) -> float | None:
    """``PoolSettings.retry_delay`` as a fixed delay in seconds, or None for Friendica's formula.

    ConfigError when it is neither "friendica" nor a finite, non-negative number of seconds.
    """
    text = str(setting).strip().lower()
    if text == FRIENDICA_DELAY:
        return None
    try:
        seconds = float(text)
    except ValueError:
        raise ConfigError(
            f"retry_delay must be {FRIENDICA_DELAY!r} or a number of seconds, got {setting!r}"
        ) from None
    if not math.isfinite(seconds) or seconds < 0 or seconds > MAX_DELAY:
        raise ConfigError(f"retry_delay must be between 0 and {MAX_DELAY:g} seconds, got {setting!r}")
    return seconds


Delay = Union[float, Callable[[int], float], None]  # noqa: UP007 - an alias evaluated at run time on 3.10
"""A retry delay: fixed seconds, a task's callable of the new retrial number, or None for Friendica's."""


def retry_delay(new_retrial: int, fixed: Delay, rng: random.Random) -> float:
    """Seconds until the attempt numbered ``new_retrial``: fixed, a task's callable of it, or
    ``(n+2)^4 + rand(1,30)*n``. A callable that raises or returns no finite number of seconds
    gets Friendica's delay instead: a task's bad rule must not lose its job."""
    if callable(fixed):
        try:
            seconds = fixed(new_retrial)
        except Exception:  # noqa: BLE001 - the task's code; its job goes on with the default delay
            seconds = None
        if (
            isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and math.isfinite(seconds)
            and seconds >= 0
        ):
            return float(seconds)
        fixed = None
    if fixed is not None:
        return fixed
    n = max(new_retrial, 0)
    return float((n + 2) ** 4 + rng.randint(*_JITTER) * n)


def demote(priority: int, new_retrial: int) -> int:
    """Friendica's one-step demotion for a job at its ``new_retrial``-th retry."""
    if new_retrial > 3 and priority < Priority.MEDIUM:
        return int(Priority.MEDIUM)
    if new_retrial > 6 and priority < Priority.LOW:
        return int(Priority.LOW)
    if new_retrial > 8 and priority < Priority.NEGLIGIBLE:
        return int(Priority.NEGLIGIBLE)
    return priority


def describe_priority(priority: int) -> str:
    """``20 (HIGH)``, or the bare number for a value outside the five."""
    try:
        return f"{priority} ({Priority(priority).name})"
    except ValueError:
        return str(priority)


def truncate_error(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """``text`` cut to ``limit`` characters, keeping the start and, most useful in a traceback, the end."""
    if len(text) <= limit:
        return text
    marker = f"\n[... {len(text) - limit} characters cut ...]\n"
    head = limit // 4
    return text[:head] + marker + text[len(text) - (limit - head - len(marker)) :]


def _later(now: dt.datetime, seconds: float) -> dt.datetime:
    return now + dt.timedelta(seconds=min(max(seconds, 0.0), MAX_DELAY))


def after_error(
    job: ClaimedJob,
    error: str,
    now: dt.datetime,
    *,
    retry_limit: int,
    fixed_delay: Delay,
    rng: random.Random,
    delay: float | None = None,
) -> Retry | Failure:
    """An attempt failed with ``error`` (a traceback, a time limit): retry later, or fail at the limit.

    ``delay``: seconds the job asked for (``defer(delay)``); None for the configured delay.
    """
    new = job.retrial + 1
    error = truncate_error(error)
    if new > retry_limit:
        return Failure(
            job.id,
            job.retrial,
            job.crashes,
            truncate_error(f"gave up after {job.retrial + 1} attempts (retry limit {retry_limit}); last error: {error}"),
        )
    seconds = retry_delay(new, fixed_delay, rng) if delay is None else delay
    return Retry(job.id, _later(now, seconds), demote(job.priority, new), min(new, _MAX_RETRIAL), job.crashes, error)


def after_defer(
    job: ClaimedJob,
    delay: float | None,
    now: dt.datetime,
    *,
    retry_limit: int,
    fixed_delay: Delay,
    rng: random.Random,
) -> Retry | Failure:
    """The job called ``fastsched.defer(delay)``: run it again later, or fail it at the retry limit."""
    new = job.retrial + 1
    if new > retry_limit:
        return Failure(
            job.id,
            job.retrial,
            job.crashes,
            f"deferred itself {job.retrial + 1} times: retry limit {retry_limit} reached",
        )
    seconds = retry_delay(new, fixed_delay, rng) if delay is None else delay
    return Retry(job.id, _later(now, seconds), demote(job.priority, new), min(new, _MAX_RETRIAL), job.crashes, None)


def after_crash(job: ClaimedJob, how: str, now: dt.datetime, *, crash_limit: int) -> Retry | Failure:
    """The child died while running the job (``how``: "killed by signal 9", "exit code 3"...).

    A crash is not the job's retrial: it goes straight back to the queue with one more crash, and
    at ``crash_limit`` crashes it is failed as a poison pill.
    """
    crashes = min(job.crashes + 1, _MAX_CRASHES)
    if crashes >= crash_limit:
        return Failure(job.id, job.retrial, crashes, f"killed its worker {crashes} times (last: {how}): poison pill")
    return Retry(job.id, now, job.priority, job.retrial, crashes, f"its worker died ({how})")


def run_limit_seconds(max_duration_minutes: Mapping[int, float], priority: int) -> float | None:
    """The run-time limit of a priority in seconds, or None for no limit (missing, 0 or negative)."""
    minutes = max_duration_minutes.get(priority, 0) or 0
    return float(minutes) * 60.0 if minutes > 0 else None


def after_timeout(
    job: ClaimedJob,
    minutes: float,
    now: dt.datetime,
    *,
    retry_limit: int,
    fixed_delay: Delay,
    rng: random.Random,
    task_timeout: float | None = None,
) -> Retry | Failure:
    """The job ran past its run-time limit and its child was killed: a failed attempt. The limit is
    its task's ``timeout`` (``task_timeout`` seconds) if it has one, else its priority's ``minutes``."""
    if task_timeout is not None:
        error = f"exceeded its task's {task_timeout:g} s timeout"
    else:
        error = f"exceeded the {minutes:g}-minute run-time limit for priority {describe_priority(job.priority)}"
    return after_error(job, error, now, retry_limit=retry_limit, fixed_delay=fixed_delay, rng=rng)


def unknown_command_error(command: str) -> str:
    """The last_error of a job handed back for its unknown command (status and explain show it)."""
    return (
        f"unknown command: {command} (no task of that name is registered in the pool that claimed "
        f"it: handed back for a pool that has it)"
    )


def unknown_command(
    job: ClaimedJob, now: dt.datetime, *, retry_limit: int, fixed_delay: Delay, rng: random.Random
) -> Retry | Failure:
    """No task is registered under the job's command in this pool: never imported or called, but
    handed back (a pool one release behind must not destroy the jobs of a newer one): deferred by
    the retry delay with one more retrial, and failed only past the retry limit."""
    return after_error(job, unknown_command_error(job.command), now, retry_limit=retry_limit, fixed_delay=fixed_delay, rng=rng)


def bad_arguments(job: ClaimedJob, error: str) -> Failure:
    """The stored args cannot be passed to the task (not a JSON list, wrong signature): failed at once."""
    return Failure(job.id, job.retrial, job.crashes, truncate_error(error))
