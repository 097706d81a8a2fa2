"""settle: from what a child reported about one batch to the outcome of each of its jobs. Pure.

A batch ends one way (:class:`Ended`): the child replied, or it died (on its own, killed by us for
a run-time limit, killed by us for another reason, or our claims were taken over). What the master
knows then, a :class:`BatchReport`: how many jobs the reply says started, the notes that arrived,
and for a death the job the progress slot showed. :func:`settle` turns that into a
:class:`Settlement`: job ids done and released, retries and failures decided by
``fastsched.retry_policy``, and what happened to each job that did not simply succeed.

The rules:
- a reply: ``jobs[:processed]`` ended, each as its note says (no note: done); the rest never started
  and are released;
- a death: the jobs before the one the progress slot shows ended, as above; so did that one if its
  note arrived (the child died between two jobs); otherwise it was running: a crash
  (``after_crash``) when the child died on its own, a failed attempt (``after_timeout``) when we
  stopped it for its run-time limit, cancelled (never retried) when we stopped it at an operator's
  request, released without penalty when we killed it for another reason;
  the jobs after it are released; a child that never began the batch releases all of it;
- taken over (LOST): nothing of the batch is ours to write.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import random
from collections.abc import Mapping, Sequence

from fastsched import retry_policy
from fastsched.jobs import ClaimedJob, Failure, Outcomes, Retry
from fastsched.protocol import DEFER, FATAL, Note
from fastsched.tasks import TaskPolicy

__all__ = ["BatchReport", "Ended", "JobEvent", "SettlePolicy", "Settlement", "settle"]


class Ended(enum.Enum):
    REPLIED = "replied"  # the child answered for the batch
    CRASHED = "crashed"  # the child died on its own
    TIMED_OUT = "timed out"  # we stopped the child for the run-time limit of the job at ``stopped``
    CANCELLED = "cancelled"  # we stopped the child because an operator cancelled the job at ``stopped``
    KILLED = "killed"  # we killed the child for another reason (stop, outage): no penalty
    LOST = "lost"  # another master declared us dead and took our claims over


@dataclasses.dataclass(frozen=True)
class BatchReport:
    """What the master knows of a batch when it ends."""

    ended: Ended
    processed: int = 0  # REPLIED: jobs started
    position: int = -1  # a death: the job index the progress slot showed for this batch (-1: not begun)
    notes: Sequence[Note] = ()
    stopped: int = -1  # TIMED_OUT, CANCELLED: the index of the job we stopped
    how: str = ""  # a death: how the child ended ("killed by signal 9 (SIGKILL)")


@dataclasses.dataclass(frozen=True)
class SettlePolicy:
    """The settings the outcome of a job depends on: the pool's, and each task's own (``tasks``:
    command -> TaskPolicy, for the commands whose decorator gave options)."""

    retry_limit: int
    crash_limit: int
    fixed_delay: float | None  # retry_policy.parse_retry_delay(settings.retry_delay)
    max_duration_minutes: Mapping[int, float]
    rng: random.Random = dataclasses.field(default_factory=random.Random)
    tasks: Mapping[str, TaskPolicy] = dataclasses.field(default_factory=dict)

    def retries(self, command: str) -> tuple[int, retry_policy.Delay]:
        """(retry limit, retry delay) for a job of ``command``: its task's, else the pool's."""
        own = self.tasks.get(command)
        if own is None:
            return self.retry_limit, self.fixed_delay
        limit = self.retry_limit if own.retry_limit is None else own.retry_limit
        delay = own.retry_delay
        if delay is None:
            return limit, self.fixed_delay
        if isinstance(delay, str):  # "friendica", the only word a task's retry_delay takes
            return limit, None
        return limit, delay

    def timeout(self, command: str) -> float | None:
        """The task's own run-time limit in seconds, None when its priority's applies."""
        own = self.tasks.get(command)
        return None if own is None else own.timeout


class JobEvent(enum.Enum):
    """What happened to a job that did not simply succeed (for the log and the counters)."""

    RAISED = "raised"
    DEFERRED = "deferred itself"
    BAD_ARGUMENTS = "cannot run"
    CRASHED = "crashed"
    TIMED_OUT = "ran too long"


@dataclasses.dataclass
class Settlement:
    """The outcomes of one batch."""

    outcomes: Outcomes = dataclasses.field(default_factory=Outcomes)
    # (job, what happened, its retry or failure) for every job that did not simply succeed
    decided: list[tuple[ClaimedJob, JobEvent, Retry | Failure]] = dataclasses.field(default_factory=list)

    def count(self, event: JobEvent, outcome: type[Retry | Failure] | None = None) -> int:
        return sum(
            1 for _, what, result in self.decided if what is event and (outcome is None or type(result) is outcome)
        )


def settle(jobs: Sequence[ClaimedJob], report: BatchReport, policy: SettlePolicy, now: dt.datetime) -> Settlement:
    """The outcome of every job of ``jobs`` (one batch, in its order), from ``report``."""
    result = Settlement()
    if report.ended is Ended.LOST or not jobs:
        return result
    if report.ended is Ended.REPLIED:
        _ended(result, jobs, min(max(report.processed, 0), len(jobs)), report.notes, policy, now)
        result.outcomes.released.extend(job.id for job in jobs[report.processed :])
        return result
    position = min(report.position, len(jobs) - 1)
    if position < 0:  # it never began this batch
        result.outcomes.released.extend(job.id for job in jobs)
        return result
    if any(note.job_index == position for note in report.notes):  # it died between two jobs
        _ended(result, jobs, position + 1, report.notes, policy, now)
        result.outcomes.released.extend(job.id for job in jobs[position + 1 :])
        return result
    _ended(result, jobs, position, report.notes, policy, now)
    running = jobs[position]
    if report.ended is Ended.CRASHED:
        outcome = retry_policy.after_crash(running, report.how, now, crash_limit=policy.crash_limit)
        _decide(result, running, JobEvent.CRASHED, outcome)
    elif report.ended is Ended.TIMED_OUT and report.stopped == position:
        minutes = float(policy.max_duration_minutes.get(running.priority, 0))
        limit, delay = policy.retries(running.command)
        outcome = retry_policy.after_timeout(
            running, minutes, now, retry_limit=limit, fixed_delay=delay, rng=policy.rng,
            task_timeout=policy.timeout(running.command),
        )
        _decide(result, running, JobEvent.TIMED_OUT, outcome)
    elif report.ended is Ended.CANCELLED and report.stopped == position:
        result.outcomes.cancelled.append(running.id)
    else:  # killed by us for another reason: no penalty
        result.outcomes.released.append(running.id)
    result.outcomes.released.extend(job.id for job in jobs[position + 1 :])
    return result


def _decide(result: Settlement, job: ClaimedJob, event: JobEvent, outcome: Retry | Failure) -> None:
    if isinstance(outcome, Failure):
        result.outcomes.failed.append(outcome)
    else:
        result.outcomes.retry.append(outcome)
    result.decided.append((job, event, outcome))


def _ended(
    result: Settlement,
    jobs: Sequence[ClaimedJob],
    ended: int,
    notes: Sequence[Note],
    policy: SettlePolicy,
    now: dt.datetime,
) -> None:
    """``jobs[:ended]`` ended: each with a note as its first note says, the others succeeded."""
    if not notes:
        result.outcomes.done.extend([job[0] for job in jobs[:ended]])
        return
    noted: set[int] = set()
    for index, kind, payload in notes:
        if not 0 <= index < ended or index in noted:
            continue
        noted.add(index)
        job = jobs[index]
        limit, delay = policy.retries(job.command)
        if kind == DEFER:
            outcome = retry_policy.after_defer(job, payload, now, retry_limit=limit, fixed_delay=delay, rng=policy.rng)
            _decide(result, job, JobEvent.DEFERRED, outcome)
        elif kind == FATAL:
            _decide(result, job, JobEvent.BAD_ARGUMENTS, retry_policy.bad_arguments(job, str(payload)))
        else:
            outcome = retry_policy.after_error(
                job, str(payload), now, retry_limit=limit, fixed_delay=delay, rng=policy.rng
            )
            _decide(result, job, JobEvent.RAISED, outcome)
    result.outcomes.done.extend(job.id for i, job in enumerate(jobs[:ended]) if i not in noted)
