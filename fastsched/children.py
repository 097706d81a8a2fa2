"""The pool master's children: their handles, spawning, and what their replies and deaths mean.

A child runs ``fastsched.child.child_main``; the master keeps one :class:`Child` per pid and learns
what happened from the child's pipe (replies and notes), its progress slot (which job of which batch
it is on) and its sentinel (death). Every batch a child held ends here as outcomes: done, retried,
failed or released, with crash and run-time-limit penalties decided by ``fastsched.scheduler``.
"""
from __future__ import annotations

import collections
import datetime as dt
import logging
import os
import random
import signal
from collections.abc import Callable
from typing import Any

from fastsched import child as child_mod
from fastsched import scheduler
from fastsched.config import PoolSettings
from fastsched.errors import DatabaseError
from fastsched.jobs import ClaimedJob, Failure, Outcomes, Retry

log = logging.getLogger("fastsched.pool")  # the pool's story is one logger, whichever module tells it

CHILD_EXIT_WAIT = 5.0  # seconds a child asked to exit may take before it is killed
EWMA_WEIGHT = 0.2  # weight of the newest sample in the running averages of claim and batch times

# Why the master killed a child (None: it died on its own).
KILL_TIMEOUT = "timeout"  # SIGTERM/SIGKILL for a run-time limit
KILL_OPERATOR = "operator"  # second stop request or the shutdown grace ran out: release, no penalty
KILL_DB = "db"  # the database was unreachable too long: release, no penalty
KILL_LOST = "lost"  # another master declared us dead and took our claims: forget everything

class Child:
    """A child process, its pipe, its progress slot and the batches sent to it, oldest first."""

    __slots__ = (
        "conn",
        "dispatched",
        "exiting",
        "inflight",
        "kill_at",
        "kill_reason",
        "notes",
        "pid",
        "process",
        "progress",
        "term_job",
    )

    def __init__(self, process: Any, conn: Any, progress: Any) -> None:
        self.process = process
        self.pid: int = process.pid
        self.conn = conn
        self.progress = progress
        # (seq, jobs, rank) per batch sent and not yet answered
        self.inflight: collections.deque[tuple[int, list[ClaimedJob], int]] = collections.deque()
        self.notes: list[tuple[int, int, Any]] = []  # (index, kind, payload) for the oldest batch
        self.kill_reason: str | None = None
        self.term_job: tuple[int, int] | None = None  # (seq, index) of the job over its time limit
        self.kill_at = 0.0  # monotonic time of the SIGKILL that follows the SIGTERM
        self.exiting = False  # asked to exit (None sent)
        self.dispatched = 0.0  # monotonic time the newest batch was sent


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "exit status unknown"
    if code < 0:
        try:
            return f"killed by signal {-code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"killed by signal {-code}"
    if code == child_mod.EXIT_TERMINATED:
        return "terminated by the master"
    return f"exit code {code}"


def _summary(text: str | None) -> str:
    """The last line of a traceback (the exception and its message), short enough for a log line."""
    if not text:
        return ""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip()[:300] if lines else ""


class ChildrenMixin:
    """The part of :class:`fastsched.pool.Pool` that spawns children and settles their batches."""

    # Set by Pool.__init__ (and the pool's other parts); declared for the type checker.
    settings: PoolSettings
    metrics: dict[str, Any]
    _children: dict[int, Child]
    _mp: Any
    _stop_flag: Any
    _tasks: dict[str, Any]
    _children_dirty: bool
    _db_down: bool
    _backend: Any
    _host: str
    _pid: int
    _outcomes: Outcomes
    _finished_ranks: list[int]
    _stopping: bool
    _forced: bool
    _watchdog_killed: set[int]
    _clock: Callable[[], dt.datetime]
    _rng: random.Random
    _fixed_delay: float | None
    _limits: dict[int, float | None]
    _batch_ewma: float
    _timed: Callable[..., Any]
    _db_failed: Callable[[DatabaseError], None]

    def _spawn(self) -> Child:
        parent_conn, child_conn = self._mp.Pipe(duplex=True)
        progress = self._mp.RawArray("d", 3)
        progress[child_mod.PROGRESS_SEQ] = -1.0
        progress[child_mod.PROGRESS_INDEX] = -1.0
        process = self._mp.Process(
            target=child_mod.child_main,
            args=(child_conn, progress, self._stop_flag, os.getpid(), self.settings.retry_limit, self._tasks),
            name="fastsched-child",
        )
        process.start()
        child_conn.close()
        child = Child(process, parent_conn, progress)
        self._children[child.pid] = child
        self._children_dirty = True
        self.metrics["children_started"] += 1
        return child

    def _replace(self, count: int) -> None:
        for _ in range(count):
            self._spawn()
        log.info("children now: %s", sorted(self._children))
        self._register_children()

    def _register_children(self) -> None:
        if self._db_down or self._backend is None:
            return
        try:
            self._timed(self._backend.register_children, self._host, self._pid, sorted(self._children), self._clock())
            self._children_dirty = False
        except DatabaseError as exc:
            self._db_failed(exc)

    def _busy(self) -> list[Child]:
        return [c for c in self._children.values() if c.inflight]

    def _send(self, child: Child, message: Any) -> bool:
        try:
            child.conn.send(message)
            return True
        except (OSError, ValueError):
            return False  # it died: its sentinel will tell

    def _death_reason(self, child: Child) -> str | None:
        if child.kill_reason is not None:
            return child.kill_reason
        if self._forced:
            return KILL_OPERATOR
        if child.pid in self._watchdog_killed:
            return KILL_DB
        return None

    def _add_failure(self, failure: Failure, job: ClaimedJob) -> None:
        self._outcomes.failed.append(failure)
        self.metrics["jobs_failed"] += 1
        log.warning(
            "job %d %s (priority %d) failed: %s", job.id, job.command, job.priority, _summary(failure.error)
        )

    def _add_retry(self, retry: Retry, job: ClaimedJob, what: str) -> None:
        self._outcomes.retry.append(retry)
        delay = (retry.next_try - self._clock()).total_seconds()
        log.info(
            "job %d %s %s: retrial %d at priority %d in %.1fs%s",
            job.id, job.command, what, retry.retrial, retry.priority, max(delay, 0.0),
            f": {_summary(retry.error)}" if retry.error else "",
        )

    def _resolve(self, job: ClaimedJob, outcome: Retry | Failure, what: str) -> None:
        if isinstance(outcome, Failure):
            self._add_failure(outcome, job)
        else:
            self._add_retry(outcome, job, what)

    def _receive(self, child: Child) -> None:
        """Read every message waiting in the child's pipe."""
        conn = child.conn
        while True:
            try:
                if not conn.poll(0):
                    return
                message = conn.recv()
            except (EOFError, OSError):
                return  # the child died, maybe mid-message: its sentinel will tell
            except Exception as exc:  # noqa: BLE001 - a garbled message: the child is broken
                log.error("child %d sent an unreadable message (%s): killing it", child.pid, exc)
                signal_pid(child.pid, signal.SIGKILL)
                return
            if not child.inflight or child.inflight[0][0] != message[1]:
                log.error("child %d sent a message for batch %s it was not running: ignored", child.pid, message[1])
            elif message[0] == child_mod.DONE:
                self._on_reply(child, message[2], message[3])
            else:
                child.notes.append(message[2:])

    def _on_reply(self, child: Child, processed: int, seconds: float) -> None:
        """The child finished its oldest batch: ``processed`` jobs started, the notes say which did not succeed."""
        _, jobs, rank = child.inflight.popleft()
        self.metrics["job_seconds"] += seconds
        # The child's own timing: the master may read the reply late (it was busy in the database).
        ewma = self._batch_ewma
        self._batch_ewma = seconds if ewma <= 0 else ewma * (1 - EWMA_WEIGHT) + seconds * EWMA_WEIGHT
        notes = child.notes
        if not notes and processed == len(jobs):
            self._outcomes.done.extend([job[0] for job in jobs])
            self.metrics["jobs_done"] += processed
            self.metrics["jobs_done_by_priority"][jobs[0].priority] += processed
        else:
            child.notes = []
            self._settle(jobs, processed, notes)
        self._finished_ranks.append(rank)
        if self._stopping and not child.inflight and not child.exiting:
            child.exiting = True
            self._send(child, None)

    def _settle(self, jobs: list[ClaimedJob], ended: int, notes: list[tuple[int, int, Any]]) -> None:
        """``jobs[:ended]`` ended: each with a note as the note says, the others succeeded."""
        settings = self.settings
        metrics = self.metrics
        now = self._clock()
        noted = set()
        for index, kind, payload in notes:
            if not 0 <= index < len(jobs) or index in noted:
                continue
            job = jobs[index]
            noted.add(index)
            if kind == child_mod.DEFER:
                outcome = scheduler.after_defer(
                    job, payload, now, retry_limit=settings.retry_limit, fixed_delay=self._fixed_delay, rng=self._rng
                )
                if isinstance(outcome, Retry):
                    metrics["jobs_deferred"] += 1
                self._resolve(job, outcome, "deferred itself")
            elif kind == child_mod.FATAL:
                self._add_failure(scheduler.bad_arguments(job, str(payload)), job)
            else:
                outcome = scheduler.after_error(
                    job, str(payload), now,
                    retry_limit=settings.retry_limit, fixed_delay=self._fixed_delay, rng=self._rng,
                )
                if isinstance(outcome, Retry):
                    metrics["jobs_retried"] += 1
                self._resolve(job, outcome, "raised")
        done = [jobs[i][0] for i in range(ended) if i not in noted]
        self._outcomes.done.extend(done)
        metrics["jobs_done"] += len(done)
        if done:
            metrics["jobs_done_by_priority"][jobs[0].priority] += len(done)
        if ended < len(jobs):
            self._outcomes.released.extend([job[0] for job in jobs[ended:]])
            metrics["jobs_released"] += len(jobs) - ended

    def _on_death(self, child: Child, reason: str | None) -> None:
        """A child is gone: settle its batches at once (nothing waits for a dead child)."""
        if reason != KILL_LOST:
            self._receive(child)  # its last messages may be in the pipe: they count
        child.process.join(CHILD_EXIT_WAIT)
        how = _describe_exit(child.process.exitcode)
        self._children.pop(child.pid, None)
        self._children_dirty = True
        self.metrics["children_died"] += 1
        try:
            child.conn.close()
        except OSError:
            pass
        flights = list(child.inflight)
        child.inflight.clear()
        notes, child.notes = child.notes, []
        self._watchdog_killed.discard(child.pid)
        if not flights:
            if not child.exiting and reason is None:
                log.warning("child %d died while idle (%s)", child.pid, how)
            return
        if reason == KILL_LOST:
            return  # our claims were taken over: nothing of ours to write
        seq, jobs, rank = flights[0]
        self._finished_ranks.append(rank)
        index = -1
        if int(child.progress[child_mod.PROGRESS_SEQ]) == seq:
            index = min(int(child.progress[child_mod.PROGRESS_INDEX]), len(jobs) - 1)
        released: list[int] = []
        for _, later, _ in flights[1:]:
            released.extend(job[0] for job in later)
        if index >= 0 and any(note[0] == index for note in notes):
            # The job it was on had ended (its note arrived): it died between two jobs.
            self._settle(jobs, index + 1, notes)
        else:
            self._settle(jobs, max(index, 0), notes)
            if index >= 0:
                self._running_died(child, reason, how, seq, index, jobs[index], released)
        if released:
            self._outcomes.released.extend(released)
            self.metrics["jobs_released"] += len(released)
        if reason is None and index < 0:
            log.warning("child %d died (%s) before starting its batch: its %d jobs are released", child.pid, how, len(jobs))

    def _running_died(
        self, child: Child, reason: str | None, how: str, seq: int, index: int, job: ClaimedJob, released: list[int]
    ) -> None:
        """The job ``job`` (batch ``seq``, position ``index``) was running when its child died."""
        settings = self.settings
        now = self._clock()
        # _settle released jobs[index:]; take the running one back to decide it here.
        self._outcomes.released.remove(job[0])
        self.metrics["jobs_released"] -= 1
        if reason is None and child.term_job is None:
            self.metrics["jobs_crashed"] += 1
            log.error(
                "child %d died (%s) running job %d %s (priority %d): crash %d of %d allowed",
                child.pid, how, job.id, job.command, job.priority, job.crashes + 1, settings.crash_limit,
            )
            self._resolve(job, scheduler.after_crash(job, how, now, crash_limit=settings.crash_limit), "crashed")
        elif reason == KILL_TIMEOUT and child.term_job == (seq, index):
            self.metrics["jobs_timed_out"] += 1
            minutes = settings.max_duration_minutes.get(job.priority, 0)
            outcome = scheduler.after_timeout(
                job, float(minutes), now, retry_limit=settings.retry_limit, fixed_delay=self._fixed_delay, rng=self._rng
            )
            self._resolve(job, outcome, "ran too long")
        else:
            released.append(job[0])  # killed by us for another reason: no penalty

    def _kill_children(self, reason: str) -> None:
        """SIGKILL every child and settle what they held, for ``reason``."""
        children = list(self._children.values())
        for child in children:
            child.kill_reason = reason
            try:
                os.kill(child.pid, signal.SIGKILL)
            except OSError:
                pass
        for child in children:
            self._on_death(child, reason)

    def _check_limits(self, mono: float) -> None:
        for child in list(self._children.values()):
            if child.kill_reason == KILL_TIMEOUT:
                if mono >= child.kill_at and child.kill_at > 0:
                    child.kill_at = 0.0
                    log.warning("child %d ignored SIGTERM for %gs: SIGKILL", child.pid, self.settings.kill_grace)
                    signal_pid(child.pid, signal.SIGKILL)
                continue
            if not child.inflight or child.kill_reason is not None:
                continue
            seq, jobs, _ = child.inflight[0]
            limit = self._limits.get(jobs[0].priority)
            if limit is None:
                continue
            progress = child.progress
            if int(progress[child_mod.PROGRESS_SEQ]) != seq:
                continue
            index = int(progress[child_mod.PROGRESS_INDEX])
            if not 0 <= index < len(jobs):
                continue
            elapsed = mono - progress[child_mod.PROGRESS_START]
            if elapsed <= limit:
                continue
            job = jobs[index]
            child.kill_reason = KILL_TIMEOUT
            child.term_job = (seq, index)
            child.kill_at = mono + self.settings.kill_grace
            log.warning(
                "job %d %s has run %.1fs, over the %g-minute limit of priority %s: SIGTERM to child %d",
                job.id, job.command, elapsed, self.settings.max_duration_minutes.get(job.priority, 0),
                scheduler.describe_priority(job.priority), child.pid,
            )
            signal_pid(child.pid, signal.SIGTERM)
            if self.settings.kill_grace <= 0:
                child.kill_at = 0.0
                signal_pid(child.pid, signal.SIGKILL)


def signal_pid(pid: int, signum: int) -> None:
    """Send ``signum`` to ``pid``; a process already gone is no error."""
    try:
        os.kill(pid, signum)
    except OSError:
        pass
