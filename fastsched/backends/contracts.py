"""The storage contracts, one per consumer: explicit operations, not a generic execute.

Each consumer is typed with the contract of what it uses, so a change to the storage shows which
consumers it touches and a test double (or a new backend) knows what it must provide:

* :class:`ProducerStore` - ``fastsched.queue.Queue``: add, read, cancel, retry, bulk actions, pauses;
* :class:`MasterStore` - the pool master (``fastsched.pool``, ``fastsched.master``): plan counts,
  claims, outcomes, registration, heartbeat, recovery, periodic tasks, maintenance;
* :class:`OperatorStore` - ``fastsched.status``, ``fastsched.explain``, ``fastsched.metrics`` and the
  CLI's operator commands: the schema, statistics, processes, one job's place in the queue.

:class:`Backend` is all three: what ``fastsched.backends.open_backend`` returns. Both backends
(MariaDB/MySQL through pymysql, SQLite through the stdlib) implement every operation with the same
meaning; mypy checks they satisfy each contract (``fastsched.backends.__init__``), and
``tests/test_backend_contract.py`` runs one suite against both on real servers.

Times in and out are naive UTC ``datetime`` objects with microseconds; the caller passes ``now``
so tests can inject time. Driver errors are raised as ``fastsched.errors.DatabaseError`` (or a
subclass) with the driver's error as ``__cause__``.

Row states, from the columns (Friendica's meaning kept):
    waiting   done=0, pid=0, next_try <= now
    deferred  done=0, pid=0, next_try >  now
    running   done=0, pid<>0 (host_id = the number of the owning master's host id, table fastsched_host)
    done      done=1         (purged after the retention period)
    failed    done=2         (kept until a person retries, cancels or purges it)
    cancelled done=3         (stopped while running at an operator's request; kept like failed, never retried)
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from fastsched.backends.base import Batch, PlanCounts, PriorityStats, ProcessInfo, QueueStats
    from fastsched.batching import BatchSizing
    from fastsched.controls import Action, BulkResult, JobFilter, Pause
    from fastsched.dsn import DSN
    from fastsched.jobs import Job, NewJob, Outcomes
    from fastsched.tasks import PeriodicTask

__all__ = ["Backend", "MasterStore", "OperatorStore", "ProducerStore"]


class _Connected(Protocol):
    """What every consumer does with a store: open the schema, read the clock, close."""

    @property
    def dsn(self) -> DSN: ...

    def init_schema(self) -> None:
        """Create the tables if missing and record SCHEMA_VERSION; raise SchemaError for another
        version (an older one is migrated by ``OperatorStore.upgrade_schema`` only)."""
        ...

    def close(self) -> None:
        """Close the connection; the backend reconnects on next use."""
        ...

    def server_now(self) -> dt.datetime:
        """Now by the database server's clock, naive UTC (SQLite: this host's; see fastsched.dbclock)."""
        ...


class _JobReads(Protocol):
    """Reads that a producer and an operator share."""

    def get(self, job_id: int, now: dt.datetime) -> Job:
        """The job, its state computed against ``now``. JobNotFound if no such id."""
        ...

    def failed(self, limit: int = 100) -> list[Job]:
        """Failed jobs, newest first."""
        ...

    def stats(self, now: dt.datetime) -> list[PriorityStats]:
        """One entry per priority, CRITICAL first, all five always present."""
        ...

    def pauses(self) -> list[Pause]:
        """Every pause, with who made it and when."""
        ...

    def actions(self, limit: int = 20) -> list[Action]:
        """The newest lines of the history of operators' actions first."""
        ...


class _ClusterReads(Protocol):
    """Reads that the master plans with and an operator looks at."""

    def plan_counts(
        self, now: dt.datetime, cap: int, alive_after: dt.datetime, queues: Sequence[str] = ()
    ) -> PlanCounts:
        """Waiting counts per priority (each capped at ``cap``, so a million pending rows cost no more
        than a thousand), running workers per priority and active workers cluster-wide, where a master
        is alive if its heartbeat is at or after ``alive_after``. With ``queues`` (a queue set as
        ``validation.queue_set`` makes it): among the jobs of those queues, and the active workers
        of the live masters that serve the same queue set."""
        ...

    def processes(self) -> list[ProcessInfo]:
        """Every registered process, masters first, by host."""
        ...


class ProducerStore(_Connected, _JobReads, Protocol):
    """What ``fastsched.queue.Queue`` needs: add, read, cancel, retry, and the operators' controls
    it offers (bulk retry/cancel/purge, pauses, the history of actions)."""

    def add_many(self, jobs: Sequence[NewJob], *, connection: Any = None) -> list[int]:
        """Insert jobs in few round trips (multi-row inserts); return their ids in input order.

        A job whose dedup_hash equals that of a pending (not done, not failed) job is not inserted:
        its id is the pending job's id, and with force_priority the pending job's priority is set to
        the new one if it is unclaimed. Dedup is atomic (a unique index), never check-then-insert.
        Duplicates within ``jobs`` collapse to one id too. ``connection``: a caller's own open DB-API
        connection (any driver ``backends.callers`` accepts) to enqueue inside its transaction: the
        backend neither commits nor rolls it back, nor creates the schema there. Without it, the
        backend commits.
        """
        ...

    def cancel(self, job_id: int, by: str = "", now: dt.datetime | None = None) -> Job:
        """Delete a waiting, deferred or failed job, or ask the master running a running one to stop
        it (a cancel request in the database, by ``by``, which the job's outcome names); return the
        job as it was.

        JobNotFound if no such id; InvalidState (naming the state) if it is done or cancelled.
        """
        ...

    def retry(self, job_id: int, now: dt.datetime) -> Job:
        """Put a failed job back to waiting (retrial and crashes reset to 0, next_try=now, dedup_hash restored).

        InvalidState if it is not failed; if an identical job is pending already, the failed one is
        deleted and the pending one returned (dedup holds). JobNotFound if no such id.
        """
        ...

    def bulk(
        self,
        action: str,
        job_filter: JobFilter,
        now: dt.datetime,
        *,
        by: str = "",
        dry_run: bool = False,
        include_failed: bool = False,
        failed_only: bool = False,
    ) -> BulkResult:
        """``retry`` (failed jobs), ``cancel`` (pending and failed jobs deleted, running ones asked
        to stop; with failed_only the failed ones only) or ``purge`` (done; with include_failed,
        failed and cancelled) every job matching the filter, in windows of bounded size, each its
        own short transaction; with ``dry_run`` count them and change nothing."""
        ...

    def pause(self, pause: Pause, by: str, now: dt.datetime) -> bool:
        """Store a pause; False if the same pause existed already."""
        ...

    def resume(self, pause: Pause | None) -> int:
        """Delete this pause (None: all of them); how many were deleted."""
        ...

    def record_action(self, by: str, action: str, target: str, jobs: int, now: dt.datetime) -> None:
        """Add a line to the history of operators' actions."""
        ...


class MasterStore(_Connected, _ClusterReads, Protocol):
    """What the pool master needs: plan counts, claim, write outcomes, register, heartbeat,
    recover, periodic tasks and maintenance."""

    @property
    def concurrent_connections(self) -> int:
        """Write transactions the server runs at the same time on connections of their own (1: one
        writer at a time). The master splits big claims over that many, and writes its outcomes
        on a connection of their own, beside the claims, where there is more than one
        (``open_sibling``)."""
        ...

    def open_sibling(self) -> MasterStore:
        """Another backend on the same database, with a connection of its own."""
        ...

    def stats(self, now: dt.datetime) -> list[PriorityStats]:
        """As ``ProducerStore.stats`` (the pool's metrics)."""
        ...

    def claim(
        self,
        wanted: Sequence[int],
        children: Sequence[int],
        host: str,
        sizing: int | BatchSizing,
        now: dt.datetime,
        queues: Sequence[str] = (),
    ) -> list[Batch]:
        """Claim work, in ONE short transaction; it has committed when this returns.

        ``queues``: only jobs of those queues (a pool started with --queues; a queue set as
        ``validation.queue_set`` makes it); () = every queue.

        wanted[r]: how many runnable jobs of priority rank r to claim (oldest next_try first, then id),
        with ``SELECT ... FOR UPDATE SKIP LOCKED`` where the server has it (no global lock). ``sizing``
        (``fastsched.batching.BatchSizing``, or an int: a fixed fetch limit by Friendica's rule) cuts
        each priority's rows into batches: ceil(wanted[r] / sizes[r]) of them at most, each of at most
        sizes[r] jobs, and with estimates, each within the time budget, a command never seen alone.
        Batch i is given to children[i] (priorities in rank order): its rows get pid=children[i],
        host_id=(the number of host), executed=now. Fewer batches than children when less was claimed;
        rows beyond the batches cut are not claimed. Statements per call: a few per priority and per
        batch, never per job.
        """
        ...

    def write_released_outcomes(self, now: dt.datetime, outcomes: Outcomes) -> int:
        """The done, failed and retry outcomes of runs whose claims were released before they were
        written (their master was declared dead): written as ``write_outcomes`` would, but only to
        the jobs that no master has claimed since (``host_id=0 AND done=0``), so that a completed
        job is not run again for a completion that was late. How many were written."""
        ...

    def write_outcomes_and_claim(
        self,
        outcomes: Outcomes,
        wanted: Sequence[int],
        children: Sequence[int],
        host: str,
        sizing: int | BatchSizing,
        now: dt.datetime,
        queues: Sequence[str] = (),
    ) -> list[Batch]:
        """``write_outcomes`` then ``claim``, in ONE transaction and one commit: a claim can take the
        jobs that the retries and releases hand back."""
        ...

    def write_outcomes(self, host: str, now: dt.datetime, outcomes: Outcomes) -> None:
        """Write outcomes, in one transaction, each guarded by ``host_id=(host's number) AND done=0``
        so that a claim another master has recovered is never overwritten: done -> done=1,
        finished=now, dedup_hash=NULL; retry -> pid=0, host_id=0, executed=never,
        next_try/priority/retrial/crashes/last_error as given; failed -> done=2, finished=now,
        dedup_hash=NULL, pid kept, retrial/crashes/last_error as given; released -> pid=0, host_id=0,
        executed=never (nothing else changes)."""
        ...

    def fail_malformed(self, now: dt.datetime) -> int:
        """Fail pending rows a claim would never take: a priority not among the five. Return how many.
        Also hand back rows released by hand (pid set to 0, the claim's host_id left behind)."""
        ...

    def register_master(
        self,
        host: str,
        pid: int,
        workers: int,
        now: dt.datetime | None,
        queues: Sequence[str] = (),
        *,
        instance: str = "",
        machine: str = "",
        check: Callable[[list[ProcessInfo], dt.datetime], None] | None = None,
    ) -> tuple[list[ProcessInfo], int]:
        """Insert or replace this master's process row; ``queues``: those it claims from (() = all).
        ``now`` None, here and in the heartbeat: the server's clock, the one every master's lease is
        measured on (fastsched.dbclock). ``instance``: this start's (its claims are owned by
        "<host>#<instance>"); ``machine``: where ``pid`` means something.

        ``check``: called with the other masters registered with this host id and the server's now,
        in the same transaction and under a lock of the host id (two starts at once take turns); it
        raises (PoolAlreadyRunning) to refuse. Those it lets pass are unregistered and the claims
        without a live owner released. Returns them (none without ``check``) and how many jobs
        were released."""
        ...

    def register_children(self, host: str, master_pid: int, pids: Sequence[int], now: dt.datetime | None) -> None:
        """Insert or replace child rows, and delete this master's child rows not in ``pids``."""
        ...

    def heartbeat(
        self, host: str, master_pid: int, workers: int, now: dt.datetime | None, instance: str = ""
    ) -> bool:
        """Refresh the master's and its children's heartbeat; False if the master's row (of this
        ``instance``) is gone (another master declared it dead and took its claims: stop the
        children at once)."""
        ...

    def unregister(self, host: str, master_pid: int) -> None:
        """Delete the master's row and its children's rows."""
        ...

    def release_claims(self, owner: str, keep_pids: Sequence[int] = ()) -> int:
        """Release the pending claims of ``owner`` ("<host>#<instance>") but those of the children
        ``keep_pids``; how many."""
        ...

    def release_orphans(self) -> int:
        """Release every pending claim whose owner has no registered master; how many."""
        ...

    def recover_expired(
        self, alive_after: dt.datetime, spare: Callable[[str, int, str], bool] | None = None
    ) -> list[tuple[str, int]]:
        """For every master whose heartbeat is older than ``alive_after``, but those ``spare(host,
        pid, machine)`` is true of: release its claims and delete its (and its children's)
        process rows. Return [(host, jobs released)]."""
        ...

    def purge(
        self,
        finished_before: dt.datetime,
        *,
        include_failed: bool = False,
        limit: int = 10_000,
        max_scan: int | None = None,
    ) -> int:
        """Delete up to ``limit`` done (and with include_failed, failed) jobs finished before then,
        in short transactions; return how many. Fewer than ``limit`` means none is left, except
        rows created after the cutoff by a clock ahead of the one that finished them (the purge
        stops at the first rows all created after the cutoff: ids grow with time). A call that
        returns ``limit`` remembers where it stopped, and the next (same include_failed, a cutoff
        no earlier) goes on from there: rows behind that point that grew old in between wait for
        the next walk, one that starts after a call returned fewer than ``limit``.

        ``max_scan``: read at most about that many rows (kept or deleted) in this call, then stop
        and remember the place as above: the pool's maintenance, so that a deep backlog of rows
        older than the cutoff that must stay (pending, failed) costs it a slice per run instead of
        a walk over all of them. Fewer than ``limit`` then does not mean none is left."""
        ...

    def run_periodic(self, entry: PeriodicTask, now: dt.datetime | None = None) -> int | None:
        """Enqueue the periodic task ``entry`` if its slot is due, and move its lease to the next
        slot, in ONE transaction: the id of the job queued (or of the pending duplicate that
        absorbed it), or None when the slot is not due yet or another master took it. A crash
        before the commit leaves the slot due for the next master; after it, the job is queued.

        Slots missed while no master ran are queued once: the lease moves to the first slot after
        ``now``. A period in seconds is queued at once the first time; a cron schedule first at
        its next slot; when its expression changes, at the new one's next slot or the old one's pending
        slot, whichever comes first (two releases at once never hold it off). ``now`` None: the
        server's clock.
        """
        ...

    def take_periodic(self, name: str, now: dt.datetime, period: dt.timedelta) -> bool:
        """True for exactly one caller per period across the cluster: atomically moves the lease
        ``name`` forward to now+period if it is due (or missing)."""
        ...

    def cancel_requests(self, host: str) -> list[tuple[int, str]]:
        """(job id, who asked) of the running jobs claimed by ``host`` that someone asked to stop."""
        ...

    def drop_stale_cancel_requests(self) -> int:
        """Delete the requests whose job is no longer pending; how many."""
        ...

    def park_added(self, after_id: int) -> tuple[int, int]:
        """Set aside jobs added after ``after_id`` that a pause of their command or queue holds (a
        bounded step); (the id to go on from, how many were set aside)."""
        ...


class OperatorStore(_Connected, _JobReads, _ClusterReads, Protocol):
    """What the operator's views need (``fastsched.status``, ``fastsched.explain``, the metrics
    endpoint, the CLI's ``init``, ``status``, ``explain``): the schema, statistics, processes, and
    one job's place in the queue."""

    def upgrade_schema(self, cursor: Any = None) -> int | None:
        """``init_schema``, migrating an older schema to SCHEMA_VERSION first; the version found
        (None: there was no schema). With ``cursor`` (a caller's: Django's migration), every
        statement runs there, in the caller's transaction, and nothing is committed here."""
        ...

    def finished_since(self, since: dt.datetime) -> int:
        """Jobs done since then (for jobs-per-minute)."""
        ...

    def queue_stats(self, now: dt.datetime) -> list[QueueStats]:
        """Waiting, deferred, running and failed jobs per queue that has any, by name."""
        ...

    def handed_back(self, now: dt.datetime, cap: int) -> list[tuple[str, int]]:
        """(command, jobs) of the pending unclaimed jobs whose last error says a pool had no task of
        their command (``unknown command: ...``), among the first ``cap`` waiting and the first
        ``cap`` deferred jobs of each priority."""
        ...

    def prefetched_by_priority(self) -> dict[int, int]:
        """Per priority, the running jobs that are in a batch claimed ahead (prefetched: their child
        runs an earlier batch first)."""
        ...

    def jobs_ahead(self, job_id: int) -> int:
        """Waiting or deferred jobs of the same priority that a claim would take before this one."""
        ...

    def claimed_before(self, job_id: int) -> int:
        """How many rows the job's child holds that were claimed before the job's own batch: some
        means the job is in a prefetched batch, claimed ahead while that child runs an earlier one."""
        ...

    def dedup_holder(self, key: bytes) -> int | None:
        """The id of the pending job that holds dedup key ``key``, or None."""
        ...

    def cancel_request(self, job_id: int) -> tuple[str, dt.datetime] | None:
        """Who asked to stop this job and when; None if nobody did."""
        ...


class Backend(ProducerStore, MasterStore, OperatorStore, Protocol):
    """Every operation: a backend as ``fastsched.backends.open_backend`` returns it."""

    def retry_all_failed(self, now: dt.datetime) -> int:
        """``retry`` every failed job; return how many went back to the queue."""
        ...

    def open_sibling(self) -> Backend:
        """Another backend on the same database, with a connection of its own."""
        ...
