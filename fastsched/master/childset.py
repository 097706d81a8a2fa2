"""The master's view of its children: spawn, send, receive, deaths, run-time limits.

A child runs ``fastsched.child_process.child_main``; :class:`ChildSet` keeps one :class:`Child` per
pid and learns what happened from the child's pipe (replies and notes), its progress slot (which
job of which batch it is on) and its sentinel (death). It reports what it learned as events, a
batch that ended (:class:`BatchEnded`, with the :class:`~fastsched.master.settle.BatchReport` for
``settle``) and a child that is gone (:class:`ChildGone`); it holds no database and decides no
outcome.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import math
import multiprocessing.connection
import os
import signal
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from fastsched import child_process, protocol
from fastsched.jobs import ClaimedJob
from fastsched.master.settle import BatchReport, Ended
from fastsched.priority import RANK, rank_or_medium
from fastsched.protocol import Note, NoteMessage, Reply
from fastsched.retry_policy import describe_priority

log = logging.getLogger("fastsched.pool")  # the pool's story is one logger, whichever module tells it

CHILD_EXIT_WAIT = 5.0  # seconds a child asked to exit may take before it is killed
LIMIT_CHECK_INTERVAL = 0.1  # seconds between run-time-limit checks while a limited job runs

# Why the master killed a child (None: it died on its own).
KILL_TIMEOUT = "timeout"  # SIGTERM/SIGKILL for a run-time limit
KILL_OPERATOR = "operator"  # second stop request or the shutdown grace ran out: release, no penalty
KILL_DB = "db"  # the database was unreachable too long: release, no penalty
KILL_LOST = "lost"  # another master declared us dead and took our claims: forget everything
KILL_CANCEL = "cancel"  # SIGTERM/SIGKILL because an operator cancelled the running job
STOPPING_ONE_JOB = (KILL_TIMEOUT, KILL_CANCEL)  # SIGTERM for one job, then SIGKILL kill_grace later


class Flight(NamedTuple):
    """A batch sent to a child and not yet answered: the master's end of a ``BatchMessage``."""

    seq: int
    jobs: list[ClaimedJob]
    rank: int  # of the batch's priority
    expected: float | None = None  # seconds it is expected to run (None: a command never seen)


@dataclasses.dataclass(frozen=True)
class BatchEnded:
    pid: int
    flight: Flight
    report: BatchReport
    seconds: float  # the batch's run time as the child measured it (0 when it died)
    # Its rows made the child count as a running worker in plan_counts until its outcomes are
    # written (a reply, or the batch a dead child was on; not the ones queued behind it).
    counted_running: bool = True
    timings: tuple[tuple[str, int, float], ...] = ()  # (command, jobs, seconds) from the reply


@dataclasses.dataclass(frozen=True)
class ChildGone:
    pid: int
    how: str  # "exit code 0", "killed by signal 9 (SIGKILL)"
    reason: str | None  # KILL_* or None (it died on its own)
    # It reached --max-jobs-per-child or --max-memory-per-child, finished its batch and exited
    # when asked: replaced, not a death of any job.
    retired: bool = False


Event = BatchEnded | ChildGone


class Child:
    """One child process, its pipe, its progress slot and the batches sent to it, oldest first."""

    __slots__ = (
        "conn", "exiting", "inflight", "jobs_sent", "kill_at", "kill_reason", "notes", "pid", "process", "progress",
        "retiring", "revoked", "running_since", "sent_at", "term_job",
    )

    def __init__(self, process: Any, conn: Any, progress: Any) -> None:
        self.process = process
        self.pid: int = process.pid
        self.conn = conn
        self.progress = progress
        self.inflight: collections.deque[Flight] = collections.deque()
        self.notes: list[Note] = []  # for the oldest batch in flight
        self.kill_reason: str | None = None
        self.term_job: tuple[int, int] | None = None  # (seq, index) of the job over its time limit
        self.kill_at = 0.0  # monotonic time of the SIGKILL that follows the SIGTERM
        self.exiting = False  # asked to exit (None sent)
        self.retiring = False  # reached a per-child limit: no batch more; asked to exit once idle
        self.jobs_sent = 0  # jobs given to it
        self.sent_at = 0.0  # monotonic time the newest batch was sent
        self.running_since = 0.0  # monotonic time the oldest batch in flight began (about)
        self.revoked = -1  # the seq of a prefetched batch taken back (PROGRESS_REVOKE), -1: none

    @property
    def prefetched(self) -> int:
        """Batches sent ahead, behind the one running, not taken back: 0 or 1."""
        extra = len(self.inflight) - 1
        if extra > 0 and any(flight.seq == self.revoked for flight in self.inflight):
            extra -= 1
        return max(extra, 0)

    @property
    def free(self) -> bool:
        """Ready for a batch."""
        return not self.inflight and not self.exiting and not self.retiring and self.kill_reason is None

    def position(self, seq: int) -> int:
        """The index of the job of batch ``seq`` the progress slot shows, or -1 (not begun)."""
        progress = self.progress
        if int(progress[protocol.PROGRESS_SEQ]) != seq:
            return -1
        return int(progress[protocol.PROGRESS_INDEX])


def describe_exit(code: int | None) -> str:
    if code is None:
        return "exit status unknown"
    if code < 0:
        try:
            return f"killed by signal {-code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"killed by signal {-code}"
    if code == protocol.EXIT_TERMINATED:
        return "terminated by the master"
    return f"exit code {code}"


def resident_mb(pid: int) -> float | None:
    """The resident memory of process ``pid`` in MB (2**20 bytes), from /proc; None where unknown."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as file:
            pages = int(file.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def signal_pid(pid: int, signum: int) -> None:
    """Send ``signum`` to ``pid``; a process already gone is no error."""
    try:
        os.kill(pid, signum)
    except OSError:
        pass


class ChildSet:
    """The children of one master, keyed by pid.

    ``limits``: the run-time limit in seconds per priority (None: none); ``mono``: the monotonic
    clock the children stamp their progress with.
    """

    def __init__(
        self,
        mp: Any,
        *,
        tasks: Mapping[str, Callable[..., Any]],
        retry_limit: int,
        limits: Mapping[int, float | None],
        max_duration_minutes: Mapping[int, float],
        kill_grace: float,
        mono: Callable[[], float],
        cancel_grace: float | None = None,
        timeouts: Callable[[str], float | None] = lambda command: None,
        max_jobs: int = 0,
        max_memory_mb: float = 0.0,
        fence: Any = None,
    ) -> None:
        self._mp = mp
        # The children's fence (protocol.py): the time until which this master's lease is good,
        # published by the Lease after each heartbeat; None: children unfenced (in-process tests).
        self._fence = fence
        self._tasks = tasks
        self._retry_limit = retry_limit
        self._limits = limits
        self._timeouts = timeouts  # command -> its task's own run-time limit in seconds, or None
        self._max_jobs = max_jobs  # a child that started this many jobs is replaced; 0: never
        self._max_memory_mb = max_memory_mb  # ... or whose resident memory passed this; 0: never
        self._max_duration_minutes = max_duration_minutes
        self._kill_grace = kill_grace
        # A job cancelled while it runs: SIGKILL this long after its SIGTERM (None: kill_grace).
        self._cancel_grace = kill_grace if cancel_grace is None else cancel_grace
        self._mono = mono
        self._children: dict[int, Child] = {}
        self._stop_flag: Any = None
        self._seq = 0
        self._exit_when_idle = False
        self._stop_raised = False  # the shared stop flag is (to be) set
        self._forced = False  # set from a signal handler: every death is ours, no penalty
        self._killed_by_watchdog: set[int] = set()  # written by the watchdog thread
        self._watchdog_lock = threading.Lock()
        self._next_limit_check = 0.0
        self.generation = 0  # grows whenever a child is spawned or gone: the process table is stale

    # --- membership -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._children)

    def pids(self) -> list[int]:
        return sorted(self._children)

    def child(self, pid: int) -> Child:
        """The child ``pid`` (KeyError: not one of ours)."""
        return self._children[pid]

    def free(self) -> list[Child]:
        return [child for child in self._children.values() if child.free]

    def busy(self) -> int:
        return sum(1 for child in self._children.values() if child.inflight)

    def busy_pids(self) -> list[int]:
        return sorted(pid for pid, child in self._children.items() if child.inflight)

    def busy_by_rank(self) -> list[int]:
        """Our busy children per rank, as plan_counts counts them (distinct (host, pid) per priority):
        a child holding a batch sent ahead counts at that batch's priority too, as a running one
        (one not taken back)."""
        own = [0] * len(RANK)
        for child in self._children.values():
            if child.inflight:
                for rank in {flight.rank for flight in child.inflight if flight.seq != child.revoked}:
                    own[rank] += 1
        return own

    def sole_batches_sent_at(self) -> list[float]:
        """When each busy child holding exactly one batch got it (the coalescing waits)."""
        return [child.sent_at for child in self._children.values() if len(child.inflight) == 1]

    def usable(self) -> int:
        """Children not being killed."""
        return sum(1 for child in self._children.values() if child.kill_reason is None)

    def spawn(self, count: int = 1) -> None:
        """Fork ``count`` children (before the first, the shared stop flag)."""
        if self._stop_flag is None:
            self._stop_flag = self._mp.RawArray("i", 1)
            if self._stop_raised:
                self._stop_flag[0] = 1
        for _ in range(count):
            parent_conn, child_conn = self._mp.Pipe(duplex=True)
            progress = self._mp.RawArray("d", protocol.PROGRESS_SLOTS)
            progress[protocol.PROGRESS_SEQ] = -1.0
            progress[protocol.PROGRESS_INDEX] = -1.0
            progress[protocol.PROGRESS_REVOKE] = -1.0
            process = self._mp.Process(
                target=child_process.child_main,
                args=(child_conn, progress, self._stop_flag, os.getpid(), self._retry_limit, self._tasks, self._fence),
                name="fastsched-child",
            )
            process.start()
            child_conn.close()
            child = Child(process, parent_conn, progress)
            self._children[child.pid] = child
            self.generation += 1

    # --- batches --------------------------------------------------------------------------------
    def send(self, pid: int, jobs: list[ClaimedJob], expected: float | None = None) -> None:
        """Send a batch (all of one priority) to the child ``pid``: it runs it now, or after the
        one it runs (a prefetched batch, read from its pipe the moment it replies). ``expected``:
        the seconds it is expected to run, None when unknown."""
        child = self._children[pid]
        self._seq += 1
        seq = self._seq
        child.sent_at = now = self._mono()
        if not child.inflight:
            child.running_since = now
        child.jobs_sent += len(jobs)
        if self._max_jobs and child.jobs_sent >= self._max_jobs and not child.retiring:
            self._retire(child, f"it was given {child.jobs_sent} jobs (--max-jobs-per-child {self._max_jobs})")
        child.inflight.append(Flight(seq, jobs, rank_or_medium(jobs[0].priority), expected))
        self._send(child, protocol.BatchMessage(seq, [job[:5] for job in jobs]))

    def prefetchable(self, mono: float, lead: float, late: float) -> list[Child]:
        """Busy children about to finish, to be given their next batch now: each runs one batch
        expected to end within ``lead`` seconds (or that is overdue by ``late`` seconds at most: a
        batch much later than its estimate may run on, and must not hold a prefetched one behind
        it), and holds no prefetched batch yet. A batch of a command never seen is never expected
        to end: nothing is prefetched behind it."""
        ready = []
        for child in self._children.values():
            if not child.inflight or child.prefetched or child.exiting or child.retiring or child.kill_reason is not None:
                continue
            expected = child.inflight[0].expected
            if expected is None:
                continue
            end = child.running_since + expected
            if end - lead <= mono <= end + late:
                ready.append(child)
        return ready

    def next_prefetch(self, mono: float, lead: float) -> float:
        """The monotonic time, after ``mono``, the next busy child may be given its next batch (see
        prefetchable); infinity when none will. A child that may be given one now was offered it by
        this cycle's claim: when nothing was left for it, the next wake-up or poll offers it again."""
        due = math.inf
        for child in self._children.values():
            if len(child.inflight) != 1 or child.exiting or child.retiring or child.kill_reason is not None:
                continue
            expected = child.inflight[0].expected
            if expected is not None:
                at = child.running_since + expected - lead
                if mono < at < due:
                    due = at
        return due

    def revocable(self) -> list[Child]:
        """Children holding a prefetched batch below CRITICAL that they have not begun, none taken
        back yet: waiting CRITICAL work may take their place."""
        found = []
        for child in self._children.values():
            if child.prefetched != 1 or child.kill_reason is not None or child.exiting:
                continue
            if any(flight.seq == child.revoked for flight in child.inflight):
                continue
            later = child.inflight[-1]
            if later.rank > 0 and child.position(later.seq) < 0:
                found.append(child)
        return found

    def revoke(self, child: Child) -> Flight:
        """Take back the child's prefetched batch: it starts no job of it and replies at once (its
        jobs are released when the reply is settled; a job it began meanwhile ends first)."""
        later = child.inflight[-1]
        child.revoked = later.seq
        child.progress[protocol.PROGRESS_REVOKE] = float(later.seq)
        return later

    def prefetched(self) -> list[tuple[int, Flight]]:
        """(pid, batch) of every batch sent ahead of its child's running one, not taken back."""
        return [
            (child.pid, child.inflight[-1]) for child in self._children.values()
            if child.prefetched and child.inflight[-1].seq != child.revoked
        ]

    def _send(self, child: Child, message: Any) -> None:
        try:
            child.conn.send(message)
        except (OSError, ValueError):
            pass  # it died: its sentinel will tell

    def raise_stop_flag(self) -> None:
        """Every child finishes its current job and reports the rest of its batch as unstarted.
        Safe in a signal handler."""
        self._stop_raised = True
        if self._stop_flag is not None:
            self._stop_flag[0] = 1

    def exit_when_idle(self) -> None:
        """Stop: the stop flag is raised, the idle children exit now and the busy ones once their
        batches are answered."""
        self._exit_when_idle = True
        self.raise_stop_flag()
        for child in self._children.values():
            if not child.inflight and not child.exiting:
                child.exiting = True
                self._send(child, None)

    # --- waiting and what it brings ---------------------------------------------------------------
    def wait_objects(self) -> list[Any]:
        """What to wait on: the pipes of the busy children and every child's sentinel."""
        objects: list[Any] = []
        for child in self._children.values():
            if child.inflight:
                objects.append(child.conn)
            objects.append(child.process.sentinel)
        return objects

    def collect(self) -> list[Event]:
        """Events from what the children have already reported (no wait)."""
        return self.handle(multiprocessing.connection.wait(self.wait_objects(), 0))

    def handle(self, ready: Iterable[Any]) -> list[Event]:
        """Events from the objects of :meth:`wait_objects` that are ready."""
        events: list[Event] = []
        died: list[Child] = []
        by_conn = {child.conn: child for child in self._children.values() if child.inflight}
        by_sentinel = {child.process.sentinel: child for child in self._children.values()}
        for obj in ready:
            child = by_conn.get(obj)
            if child is not None:
                self._receive(child, events)
            elif isinstance(obj, int) and obj in by_sentinel:
                died.append(by_sentinel[obj])
        for child in died:
            if child.pid in self._children:
                self._gone(child, self._death_reason(child), events)
        return events

    def _receive(self, child: Child, events: list[Event]) -> None:
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
            if not isinstance(message, (Reply, NoteMessage)):
                log.error("child %d sent a message that is neither a reply nor a note: killing it", child.pid)
                signal_pid(child.pid, signal.SIGKILL)
                return
            if not child.inflight or child.inflight[0].seq != message.seq:
                log.error("child %d sent a message for batch %s it was not running: ignored", child.pid, message.seq)
            elif isinstance(message, Reply):
                flight = child.inflight.popleft()
                if child.inflight:
                    child.running_since = self._mono()  # the batch sent ahead begins now
                notes, child.notes = child.notes, []
                report = BatchReport(Ended.REPLIED, processed=int(message.processed), notes=notes)
                timings = tuple(message.timings)
                events.append(BatchEnded(child.pid, flight, report, float(message.seconds), timings=timings))
                if not child.inflight and not child.exiting and self._exit_when_idle:
                    child.exiting = True
                    self._send(child, None)
                else:
                    self._retire_if_spent(child)
            else:
                child.notes.append(Note(message.job_index, message.kind, message.payload))

    def _death_reason(self, child: Child) -> str | None:
        if child.kill_reason is not None:
            return child.kill_reason
        if self._forced:
            return KILL_OPERATOR
        with self._watchdog_lock:
            if child.pid in self._killed_by_watchdog:
                return KILL_DB
        if child.progress[protocol.PROGRESS_FENCED]:
            log.error("child %d killed itself at its fence: no successful heartbeat for half the lease", child.pid)
            return KILL_DB
        if self._fence is not None and self._mono() >= self._fence[0]:
            return KILL_DB  # it fenced itself: our lease may have run out (no penalty, as for an outage)
        return None

    def _gone(self, child: Child, reason: str | None, events: list[Event]) -> None:
        """A child is gone: report its batches at once (nothing waits for a dead child)."""
        if reason != KILL_LOST:
            self._receive(child, events)  # its last messages may be in the pipe: they count
        child.process.join(CHILD_EXIT_WAIT)
        how = describe_exit(child.process.exitcode)
        self._children.pop(child.pid, None)
        self.generation += 1
        try:
            child.conn.close()
        except OSError:
            pass
        with self._watchdog_lock:
            self._killed_by_watchdog.discard(child.pid)
        flights = list(child.inflight)
        child.inflight.clear()
        notes, child.notes = child.notes, []
        if not flights:
            if not child.exiting and reason is None:
                log.warning("child %d died while idle (%s)", child.pid, how)
        elif reason == KILL_LOST:
            for flight in flights:
                events.append(BatchEnded(child.pid, flight, BatchReport(Ended.LOST, how=how), 0.0))
        else:
            first = flights[0]
            position = child.position(first.seq)
            if reason is None:
                ended = Ended.CRASHED
            elif reason == KILL_TIMEOUT:
                ended = Ended.TIMED_OUT
            elif reason == KILL_CANCEL:
                ended = Ended.CANCELLED
            else:
                ended = Ended.KILLED
            stopped = -1
            if child.term_job is not None and child.term_job[0] == first.seq:
                stopped = child.term_job[1]
            report = BatchReport(ended, position=position, notes=notes, stopped=stopped, how=how)
            events.append(BatchEnded(child.pid, first, report, 0.0))
            for later in flights[1:]:
                events.append(BatchEnded(child.pid, later, BatchReport(Ended.KILLED, how=how), 0.0, False))
            if reason is None and position < 0:
                log.warning(
                    "child %d died (%s) before starting its batch: its %d jobs are released",
                    child.pid, how, len(first.jobs),
                )
        events.append(ChildGone(child.pid, how, reason, retired=child.retiring and not flights and reason is None))

    def _retire_if_spent(self, child: Child) -> None:
        """After a reply: a child past --max-memory-per-child gets no batch more, and one that is
        retiring (that limit, or --max-jobs-per-child reached when it was given its batches) is
        asked to exit once idle (Celery's worker_max_memory_per_child, worker_max_tasks_per_child).
        It has finished its batches: its exit is no crash, and the pool spawns another."""
        if not child.retiring and self._max_memory_mb:
            used = resident_mb(child.pid)
            if used is not None and used > self._max_memory_mb:
                self._retire(child, f"it uses {used:.0f} MB (--max-memory-per-child {self._max_memory_mb:g})")
        if child.retiring and not child.inflight and not child.exiting:
            child.exiting = True
            self._send(child, None)

    def _retire(self, child: Child, why: str) -> None:
        log.info("child %d is replaced once its batch is done: %s", child.pid, why)
        child.retiring = True

    # --- killing ----------------------------------------------------------------------------------
    def kill_all(self, reason: str) -> list[Event]:
        """SIGKILL every child for ``reason`` and report what they held."""
        children = list(self._children.values())
        for child in children:
            child.kill_reason = reason
            signal_pid(child.pid, signal.SIGKILL)
        events: list[Event] = []
        for child in children:
            self._gone(child, reason, events)
        return events

    def kill_now(self) -> None:
        """SIGKILL every child, safe in a signal handler; their deaths are reported as ours."""
        self._forced = True
        for pid in list(self._children):
            signal_pid(pid, signal.SIGKILL)

    def kill_from_watchdog(self) -> list[int]:
        """SIGKILL every child from the watchdog thread (the loop is stuck); the loop reports the
        deaths as ours (KILL_DB) when it gets going again. Returns the pids."""
        pids = list(self._children)
        with self._watchdog_lock:
            self._killed_by_watchdog.update(pids)
        for pid in pids:
            signal_pid(pid, signal.SIGKILL)
        return pids

    def finish(self) -> list[Event]:
        """Let every child go (asked to exit, killed after CHILD_EXIT_WAIT) and report them."""
        self.exit_when_idle()
        deadline = self._mono() + CHILD_EXIT_WAIT
        events: list[Event] = []
        for child in list(self._children.values()):
            child.process.join(max(deadline - self._mono(), 0.0))
            if child.process.exitcode is None:
                child.kill_reason = KILL_OPERATOR
                signal_pid(child.pid, signal.SIGKILL)
            self._gone(child, child.kill_reason or KILL_OPERATOR, events)
        return events

    def close(self) -> None:
        """Whatever happened, leave no child behind (a live child would hold claims nobody tracks)."""
        for child in list(self._children.values()):
            signal_pid(child.pid, signal.SIGKILL)
            child.process.join(CHILD_EXIT_WAIT)
            try:
                child.conn.close()
            except OSError:
                pass
        self._children.clear()

    # --- run-time limits ----------------------------------------------------------------------------
    def next_limit_check(self) -> float:
        """When :meth:`check_limits` has something to do: a SIGKILL due, or a limited job running."""
        due = math.inf
        for child in self._children.values():
            if child.kill_reason in STOPPING_ONE_JOB:
                if child.kill_at > 0:
                    due = min(due, child.kill_at)
            elif child.inflight and self._limited(child.inflight[0].jobs):
                due = min(due, self._next_limit_check)
        return due

    def _limited(self, jobs: Sequence[ClaimedJob]) -> bool:
        return self._limits.get(jobs[0].priority) is not None or any(
            self._timeouts(job.command) is not None for job in jobs
        )

    def _limit_of(self, job: ClaimedJob) -> float | None:
        """The job's run-time limit in seconds: its task's timeout, else its priority's."""
        own = self._timeouts(job.command)
        return own if own is not None else self._limits.get(job.priority)

    def check_limits(self, mono: float) -> None:
        """SIGTERM a child whose job ran past its priority's limit, SIGKILL it kill_grace later."""
        self._next_limit_check = mono + LIMIT_CHECK_INTERVAL
        for child in list(self._children.values()):
            if child.kill_reason in STOPPING_ONE_JOB:
                if mono >= child.kill_at and child.kill_at > 0:
                    child.kill_at = 0.0
                    grace = self._cancel_grace if child.kill_reason == KILL_CANCEL else self._kill_grace
                    log.warning("child %d ignored SIGTERM for %gs: SIGKILL", child.pid, grace)
                    signal_pid(child.pid, signal.SIGKILL)
                continue
            if not child.inflight or child.kill_reason is not None:
                continue
            seq, jobs = child.inflight[0].seq, child.inflight[0].jobs
            index = child.position(seq)
            if not 0 <= index < len(jobs):
                continue
            job = jobs[index]
            limit = self._limit_of(job)
            if limit is None:
                continue
            elapsed = mono - child.progress[protocol.PROGRESS_START]
            if elapsed <= limit:
                continue
            child.kill_reason = KILL_TIMEOUT
            child.term_job = (seq, index)
            child.kill_at = mono + self._kill_grace
            own = self._timeouts(job.command)
            log.warning(
                "job %d %s has run %.1fs, over %s: SIGTERM to child %d",
                job.id, job.command, elapsed,
                f"its task's {own:g} s timeout" if own is not None else
                f"the {self._max_duration_minutes.get(job.priority, 0):g}-minute limit of priority "
                f"{describe_priority(job.priority)}",
                child.pid,
            )
            child.progress[protocol.PROGRESS_TERM] = 1.0  # the master's word: the child honours this SIGTERM
            signal_pid(child.pid, signal.SIGTERM)
            if self._kill_grace <= 0:
                child.kill_at = 0.0
                signal_pid(child.pid, signal.SIGKILL)

    # --- cancelling a running job ---------------------------------------------------------------------
    def cancel_job(self, job_id: int, by: str) -> bool:
        """Stop the child running job ``job_id`` now: SIGTERM (the master's word, PROGRESS_TERM),
        SIGKILL kill_grace later (:meth:`check_limits`). Its batch then ends CANCELLED: that job
        cancelled, the jobs before it as they ended, the rest released. True when a child of ours is
        on that job (or already being stopped for it); False when none is running it now (it has
        not begun, or it is over)."""
        for child in self._children.values():
            if not child.inflight:
                continue
            seq, jobs = child.inflight[0].seq, child.inflight[0].jobs
            stopping = child.term_job if child.kill_reason == KILL_CANCEL else None
            if stopping is not None and stopping[0] == seq and jobs[stopping[1]].id == job_id:
                return True
            if child.kill_reason is not None:
                continue
            index = child.position(seq)
            if not 0 <= index < len(jobs) or jobs[index].id != job_id:
                continue
            job = jobs[index]
            child.kill_reason = KILL_CANCEL
            child.term_job = (seq, index)
            grace = self._cancel_grace
            child.kill_at = self._mono() + grace if grace > 0 else 0.0
            log.warning(
                "job %d %s cancelled by %s while running: SIGTERM to child %d (SIGKILL after %gs); the rest "
                "of its batch is released", job.id, job.command, by, child.pid, grace,
            )
            child.progress[protocol.PROGRESS_TERM] = 1.0  # the master's word: the child honours this SIGTERM
            signal_pid(child.pid, signal.SIGTERM)
            if grace <= 0:
                signal_pid(child.pid, signal.SIGKILL)
            return True
        return False
