"""What the master does with a batch that ended: settle it, count it, tell it, buffer its outcomes.

:class:`OutcomeRecorder` is where a :class:`~fastsched.master.childset.BatchEnded` event becomes
outcomes in the :class:`~fastsched.master.completer.Completer`: ``settle`` decides each job's
outcome, and the recorder counts each in the :class:`~fastsched.master.metrics.PoolMetrics` and
writes the log lines a retry, a failure, a crash or a cancel gets. A job of a command this pool has
not registered never reaches a child: :meth:`OutcomeRecorder.unknown_command` hands it back.
"""
from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

from fastsched import retry_policy
from fastsched.jobs import ClaimedJob, Failure, Outcomes, Retry
from fastsched.master.childset import BatchEnded
from fastsched.master.completer import Completer
from fastsched.master.metrics import PoolMetrics
from fastsched.master.settle import Ended, JobEvent, SettlePolicy, settle

log = logging.getLogger("fastsched.pool")  # the pool's story is one logger, whichever module tells it

SUMMARY_MAX = 300  # characters of an error's last line in a log line


def summary(text: str | None) -> str:
    """The last line of a traceback (the exception and its message), short enough for a log line."""
    if not text:
        return ""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip()[:SUMMARY_MAX] if lines else ""


class OutcomeRecorder:
    """Settles ended batches into ``completer``, counting them in ``metrics``."""

    def __init__(
        self,
        policy: SettlePolicy,
        completer: Completer,
        metrics: PoolMetrics,
        wall: Callable[[], dt.datetime],
    ) -> None:
        self._policy = policy
        self._completer = completer
        self._metrics = metrics
        self._wall = wall

    def batch_ended(self, event: BatchEnded) -> None:
        report = event.report
        if report.ended is Ended.LOST:
            return  # our claims were taken over: nothing of ours to write
        metrics = self._metrics
        jobs = event.flight.jobs
        now = self._wall()
        settlement = settle(jobs, report, self._policy, now)
        outcomes = settlement.outcomes
        for job, what, outcome in settlement.decided:
            if what is JobEvent.CRASHED:
                metrics.jobs_crashed += 1
                log.error(
                    "child %d died (%s) running job %d %s (priority %d): crash %d of %d allowed",
                    event.pid, report.how, job.id, job.command, job.priority, job.crashes + 1,
                    self._policy.crash_limit,
                )
            elif what is JobEvent.TIMED_OUT:
                metrics.jobs_timed_out += 1
            if isinstance(outcome, Failure):
                self._failed(job, outcome)
            else:
                if what is JobEvent.DEFERRED:
                    metrics.jobs_deferred += 1
                elif what is JobEvent.RAISED:
                    metrics.jobs_retried += 1
                self._retried(job, outcome, what.value, now)
        if outcomes.done:
            metrics.jobs_done += len(outcomes.done)
            metrics.jobs_done_by_priority[jobs[0].priority] += len(outcomes.done)
        metrics.jobs_released += len(outcomes.released)
        metrics.jobs_cancelled += len(outcomes.cancelled)
        for job_id in outcomes.cancelled:
            log.warning("job %d cancelled while running (child %d %s): kept as cancelled, never retried",
                        job_id, event.pid, report.how)
        self._completer.add(outcomes, event.flight.rank if event.counted_running else None)

    def unknown_command(self, job: ClaimedJob) -> None:
        """A job of a command this pool has not registered: deferred with the retry delay and its
        retrial counted (a newer pool may have it), failed past the retry limit; never run."""
        policy = self._policy
        now = self._wall()
        outcome = retry_policy.unknown_command(
            job, now, retry_limit=policy.retry_limit, fixed_delay=policy.fixed_delay, rng=policy.rng
        )
        if isinstance(outcome, Failure):
            self._completer.add_failure(outcome)
            self._failed(job, outcome)
        else:
            self._completer.add(Outcomes(retry=[outcome]))
            self._metrics.jobs_retried += 1
            self._retried(job, outcome, "is not registered here", now)

    def _failed(self, job: ClaimedJob, failure: Failure) -> None:
        self._metrics.jobs_failed += 1
        log.warning("job %d %s (priority %d) failed: %s", job.id, job.command, job.priority, summary(failure.error))

    def _retried(self, job: ClaimedJob, retry: Retry, what: str, now: dt.datetime) -> None:
        delay = (retry.next_try - now).total_seconds()
        log.info(
            "job %d %s %s: retrial %d at priority %d in %.1fs%s",
            job.id, job.command, what, retry.retrial, retry.priority, max(delay, 0.0),
            f": {summary(retry.error)}" if retry.error else "",
        )
