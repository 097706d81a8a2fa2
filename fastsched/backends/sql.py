"""The storage contracts implemented once, on top of each dialect's named queries.

``SQLBackend(dsn, dialect)`` holds the operations of ``fastsched.backends.contracts.Backend``, each
one short transaction of a few statements that is safe to re-run, written on its collaborators:
``connection.Connection`` (the connection, the schema, the transaction runner, which re-runs a
transaction after a deadlock or a dropped connection), ``inserts.Inserter`` (``add_many``) and
``controls.Controls`` (pauses, cancel requests, bulk actions). What differs between databases is
the dialect's (``dialect.Dialect``: ``mysql.MySQLDialect``, ``sqlite.SQLiteDialect``): it connects,
classifies driver errors, converts times and says what the server can do. ``MySQLBackend`` and
``SQLiteBackend`` are SQLBackend on their dialect.

A backend object is not thread-safe: give each thread (and each process) its own. After a fork,
the child opens its own connection and never touches the parent's.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from fastsched.backends.base import (
    Batch,
    PlanCounts,
    PriorityStats,
    ProcessInfo,
    QueueStats,
    claim_owner,
)
from fastsched.backends.connection import Connection
from fastsched.backends.controls import Controls
from fastsched.backends.dialect import Dialect
from fastsched.backends.inserts import IN_CHUNK, Inserter, chunks
from fastsched.backends.rows import JobRow
from fastsched.backends.sessions import CUT_OFF_ATTEMPTS, LOCK_WAIT_TIMEOUT, cut_off, session_prefix
from fastsched.backends.shares import ACTIVE_WINDOW, SharedClaim, ShareKeeper, ShareView, node_row, view_of
from fastsched.backends.sqlfiles import expand_in, expand_pid_cases, expand_queues, expand_spread
from fastsched.batching import BatchSizing, sizing_of
from fastsched.clock import utcnow
from fastsched.controls import RETRY, JobFilter
from fastsched.errors import DatabaseError, InvalidState, JobNotFound
from fastsched.jobs import (
    DONE_CANCELLED,
    DONE_FAILED,
    DONE_OK,
    DONE_PENDING,
    ClaimedJob,
    Job,
    JobState,
    NewJob,
    Outcomes,
)
from fastsched.priority import ALL_PRIORITIES, RANK
from fastsched.validation import dedup_hash, queue_set, queue_set_text

if TYPE_CHECKING:
    from fastsched.controls import Action, BulkResult, Pause
    from fastsched.dsn import DSN
    from fastsched.tasks import PeriodicTask

T = TypeVar("T")

log = logging.getLogger(__name__)

STATS_WINDOW = dt.timedelta(hours=1)  # PriorityStats.done_last_hour
PRIORITIES = tuple(int(p) for p in ALL_PRIORITIES)
MALFORMED_ERROR = "malformed priority: not one of 10, 20, 30, 40, 50, so no claim would ever take it"
ONE_UPDATE_MAX_IDS = 256  # a claim of at most this many jobs marks all its batches in one UPDATE
LEASE_PREFIX = "periodic:"  # fastsched_meta names of take_periodic leases
PURGE_WINDOW_MIN = 1_000  # rows purge reads per window at least, however small its limit

LOCKING_SUFFIX = "FOR UPDATE SKIP LOCKED"  # how a claim's locking read ends (MySQL; see _claim_rows)


def _unlocked(query: str) -> str:
    """A claim's locking read as a plain read (the same rows, no lock taken)."""
    if not query.endswith(LOCKING_SUFFIX):
        raise ValueError(f"a claim query must end with {LOCKING_SUFFIX!r}")
    return query.removesuffix(LOCKING_SUFFIX)


class SQLBackend:
    """Every operation of the contracts, on named queries, on ``dialect``."""

    def __init__(self, dsn: DSN, dialect: Dialect, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.dsn = dsn
        self.dialect = dialect
        self.connection = Connection(dsn, dialect, sleep=sleep)
        self._q = self.connection.queries
        self._to_db_time = dialect.to_db_time
        self._time = dialect.from_db_time
        self._host_ids: dict[str, int] = {}  # fastsched_host numbers, which never change
        self._shares = ShareKeeper()  # this master's record of its node (a cluster's shares)
        self._inserts = Inserter(self.connection)
        self._controls = Controls(self.connection, self._retry_one, self._host_id)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.dsn)!r})"

    @property
    def concurrent_connections(self) -> int:
        return self.dialect.concurrent_connections

    @property
    def conflicts(self) -> int:
        """Transactions re-run after a deadlock or certification failure, since this object was
        made: on Galera, the conflicts between nodes (docs/scaling.md)."""
        return self.connection.conflicts

    def open_sibling(self) -> SQLBackend:
        """Another backend on the same database with a connection of its own (opened on first use)."""
        sibling = type(self)(self.dsn, self.dialect.fresh(), sleep=self.connection.sleep)
        sibling._host_ids = self._host_ids  # the numbers never change: share what is known
        sibling._shares = self._shares  # one master's claims: one record of its node
        sibling.connection.session_prefix = self.connection.session_prefix
        return sibling

    def _transaction(
        self, work: Callable[[Any], T], what: str, *, write: bool = True, single_statement: bool = False
    ) -> T:
        return self.connection.transaction(work, what, write=write, single_statement=single_statement)

    # --- life cycle and schema ----------------------------------------------------------------
    def init_schema(self) -> None:
        self.connection.init_schema()

    def upgrade_schema(self, cursor: Any = None) -> int | None:
        return self.connection.upgrade_schema(cursor)

    def close(self) -> None:
        self.connection.close()

    # --- rows -------------------------------------------------------------------------------
    def _opt_time(self, value: Any) -> dt.datetime | None:
        return None if value is None else self._time(value)

    def _job(self, row: JobRow, now: dt.datetime) -> Job:
        return row.job(now, self._time)

    def _get_row(self, cursor: Any, job_id: int, *, lock: bool) -> JobRow:
        cursor.execute(self._q["lock_job" if lock else "get_job"], {"id": int(job_id)})
        row = cursor.fetchone()
        if row is None:
            raise JobNotFound(f"no job has id {job_id}")
        return JobRow._make(row)

    # --- producer and admin -------------------------------------------------------------------
    def add_many(self, jobs: Sequence[NewJob], *, connection: Any = None) -> list[int]:
        return self._inserts.add_many(jobs, connection=connection)

    def server_now(self) -> dt.datetime:
        def work(cursor: Any) -> dt.datetime:
            cursor.execute(self._q["server_now"], {"now": self._to_db_time(None)})
            return self._time(cursor.fetchone()[0])

        return self._transaction(work, "server_now", write=False)

    def get(self, job_id: int, now: dt.datetime) -> Job:
        return self._transaction(
            lambda cursor: self._job(self._get_row(cursor, job_id, lock=False), now), "get", write=False
        )

    def cancel(self, job_id: int, by: str = "", now: dt.datetime | None = None) -> Job:
        now = now or utcnow()

        def work(cursor: Any) -> Job:
            job = self._job(self._get_row(cursor, job_id, lock=True), now)
            if job.state is JobState.RUNNING:
                self._controls.request_cancel(cursor, job.id, by or "an operator", now)
            elif job.state in (JobState.DONE, JobState.CANCELLED):
                raise InvalidState(
                    f"job {job_id} is {job.state.value}: only a waiting, deferred, running or failed job can be "
                    f"cancelled"
                )
            else:
                cursor.execute(self._q["delete_job"], {"id": job.id})
            return job

        return self._transaction(work, "cancel")

    def _retry_one(self, cursor: Any, job_id: int, now: dt.datetime) -> int:
        """Re-queue one failed job; the id of the job now pending for it.

        The failed job's dedup hash comes back with it, unless an identical job is pending: then
        the failed one is deleted and the pending one's id returned. The re-queue skips the row
        when restoring the hash would collide (an identical job added meanwhile), and looks again.
        """
        row = self._get_row(cursor, job_id, lock=True)
        key = row.failed_hash
        if row.done != DONE_FAILED:
            state = row.state(now, self._time)
            raise InvalidState(f"job {job_id} is {state.value}: only a failed job can be retried")
        params = {
            "id": int(job_id),
            "now": self._to_db_time(now),
            "hash": None if key is None else bytes(key),
        }
        for _ in range(2):
            if key is not None:
                cursor.execute(self._q["lock_pending_by_hash"], params)
                twin = cursor.fetchone()
                if twin is not None:  # an identical job is pending: keep that one (dedup holds)
                    cursor.execute(self._q["delete_job"], params)
                    return int(twin[0])
            cursor.execute(self._q["requeue_failed"], params)
            if cursor.rowcount:
                return int(job_id)
        raise DatabaseError(f"retry of job {job_id} raced with adding an identical job; try again")

    def retry(self, job_id: int, now: dt.datetime) -> Job:
        def work(cursor: Any) -> Job:
            pending = self._retry_one(cursor, job_id, now)
            return self._job(self._get_row(cursor, pending, lock=False), now)

        return self._transaction(work, "retry")

    def retry_all_failed(self, now: dt.datetime) -> int:
        """``retry`` every failed job, in bounded windows (``bulk``); how many were re-queued
        (a failed job merged into an identical pending one counts: it is back in the queue)."""
        return self.bulk(RETRY, JobFilter(), now).total

    def failed(self, limit: int = 100) -> list[Job]:
        def work(cursor: Any) -> list[Job]:
            cursor.execute(self._q["failed_jobs"], {"limit": int(limit)})
            now = utcnow()
            return [self._job(JobRow._make(row), now) for row in cursor.fetchall()]

        return self._transaction(work, "failed", write=False)

    # (max_done, cutoff, id) where the last purge stopped at its limit; None: start at the first id.
    _purge_resume: tuple[int, dt.datetime, int] | None = None

    def purge(
        self,
        finished_before: dt.datetime,
        *,
        include_failed: bool = False,
        limit: int = 10_000,
        max_scan: int | None = None,
    ) -> int:
        limit = int(limit)
        max_done = DONE_CANCELLED if include_failed else DONE_OK  # failed and cancelled are kept alike
        # A call that stopped at the limit may have left old rows in its last window: the next call
        # starts at that window, so a purge in many calls reads the rows it keeps (failed, pending,
        # young) once, not once per call. A lower cutoff could need rows behind it: start over.
        after = 0
        resume, self._purge_resume = self._purge_resume, None
        if resume is not None and resume[0] == max_done and resume[1] <= finished_before:
            after = resume[2]
        params = {
            "before": self._to_db_time(finished_before),
            "max_done": max_done,
            "window": max(limit, PURGE_WINDOW_MIN),
        }

        def work(cursor: Any) -> tuple[int | None, int, int]:
            cursor.execute(self._q["purge_window"], params)
            rows, last, all_young, old = cursor.fetchone()
            if not rows or all_young:
                return None, 0, 0
            if not old:
                return int(last), 0, int(rows)
            cursor.execute(self._q["purge"], {**params, "last": last})
            return int(last), int(cursor.rowcount), int(rows)

        deleted = scanned = 0
        while deleted < limit:
            if max_scan is not None and scanned >= max_scan:
                break
            params["after"] = after
            params["limit"] = limit - deleted
            last, count, rows = self._transaction(work, "purge")
            if last is None:
                return deleted
            deleted += count
            scanned += rows
            if deleted < limit:
                after = last
        self._purge_resume = (max_done, finished_before, after)
        return deleted

    def stats(self, now: dt.datetime) -> list[PriorityStats]:
        """Exact counts per priority from index ranges. ``oldest_waiting_seconds`` is the age
        (now - created) of the job a claim would take next: the head of that priority's queue."""
        params = {"now": self._to_db_time(now), "hour_ago": self._to_db_time(now - STATS_WINDOW)}

        def work(cursor: Any) -> list[Any]:
            cursor.execute(self._q["stats"], params)
            return list(cursor.fetchall())

        found: dict[tuple[str, int], Any] = {}
        for kind, priority, jobs, oldest in self._transaction(work, "stats", write=False):
            found[kind, int(priority)] = self._opt_time(oldest) if kind == "oldest" else int(jobs)
        result = []
        for priority in PRIORITIES:
            oldest = found.get(("oldest", priority))
            result.append(
                PriorityStats(
                    priority=priority,
                    waiting=found.get(("waiting", priority), 0),
                    deferred=found.get(("deferred", priority), 0),
                    running=found.get(("running", priority), 0),
                    failed=found.get(("failed", priority), 0),
                    cancelled=found.get(("cancelled", priority), 0),
                    paused=found.get(("paused", priority), 0),
                    done_last_hour=found.get(("done", priority), 0),
                    oldest_waiting_seconds=None
                    if oldest is None
                    else max(0.0, (now - oldest).total_seconds()),
                )
            )
        return result

    def handed_back(self, now: dt.datetime, cap: int) -> list[tuple[str, int]]:
        def work(cursor: Any) -> list[tuple[str, int]]:
            cursor.execute(self._q["handed_back"], {"now": self._to_db_time(now), "cap": int(cap)})
            return [(str(command), int(jobs)) for command, jobs in cursor.fetchall()]

        return self._transaction(work, "handed_back", write=False)

    def queue_stats(self, now: dt.datetime) -> list[QueueStats]:
        def work(cursor: Any) -> list[Any]:
            cursor.execute(self._q["queue_counts"], {"now": self._to_db_time(now)})
            return list(cursor.fetchall())

        found: dict[str, list[int]] = {}
        for queue, pending, due, failed, running in self._transaction(work, "queue_stats", write=False):
            entry = found.setdefault(str(queue), [0, 0, 0, 0])
            for index, value in enumerate((pending, due, failed, running)):
                entry[index] += int(value or 0)
        return [
            QueueStats(
                queue=name,
                waiting=max(0, due - running),
                deferred=max(0, pending - due),
                running=running,
                failed=failed,
            )
            for name, (pending, due, failed, running) in sorted(found.items())
        ]

    def finished_since(self, since: dt.datetime) -> int:
        def work(cursor: Any) -> int:
            cursor.execute(self._q["finished_since"], {"since": self._to_db_time(since)})
            return int(cursor.fetchone()[0])

        return self._transaction(work, "finished_since", write=False)

    def jobs_ahead(self, job_id: int) -> int:
        def work(cursor: Any) -> int:
            row = self._get_row(cursor, job_id, lock=False)
            if row.done != DONE_PENDING or row.pid:
                return 0  # running, done or failed: nothing is ahead of it in the queue
            cursor.execute(
                self._q["jobs_ahead"], {"priority": row.priority, "next_try": row.next_try, "id": row.id}
            )
            return int(cursor.fetchone()[0])

        return self._transaction(work, "jobs_ahead", write=False)

    def claimed_before(self, job_id: int) -> int:
        def work(cursor: Any) -> int:
            cursor.execute(self._q["claimed_before"], {"id": int(job_id)})
            return int(cursor.fetchone()[0])

        return self._transaction(work, "claimed_before", write=False)

    def dedup_holder(self, key: bytes) -> int | None:
        def work(cursor: Any) -> int | None:
            cursor.execute(expand_in(self._q["ids_by_hash"], [key]))
            rows = cursor.fetchall()
            return int(rows[0][0]) if rows else None

        return self._transaction(work, "dedup_holder", write=False)

    def prefetched_by_priority(self) -> dict[int, int]:
        def work(cursor: Any) -> dict[int, int]:
            cursor.execute(self._q["prefetched_by_priority"])
            return {int(priority): int(count) for priority, count in cursor.fetchall()}

        return self._transaction(work, "prefetched_by_priority", write=False)

    # --- the pool master --------------------------------------------------------------------
    def _host_id(self, host: str) -> int:
        """The number claims write for ``host`` (table fastsched_host), created the first time in a
        transaction of its own: a claim must never name a number whose row could be rolled back."""
        known = self._host_ids.get(host)
        if known is None:

            def work(cursor: Any) -> int:
                cursor.execute(self._q["add_host"], {"host": host})
                cursor.execute(self._q["host_id"], {"host": host})
                return int(cursor.fetchone()[0])

            known = self._host_ids[host] = self._transaction(work, "host_id")
        return known

    def plan_counts(
        self, now: dt.datetime, cap: int, alive_after: dt.datetime, queues: Sequence[str] = ()
    ) -> PlanCounts:
        params = {"now": self._to_db_time(now), "cap": int(cap), "alive_after": self._to_db_time(alive_after)}
        if queues:
            params["queues"] = queue_set_text(queues)
            query = expand_queues(self._q["plan_counts_queues"], queue_set(queues))
        else:
            query = self._q["plan_counts"]

        def work(cursor: Any) -> Sequence[Any]:
            cursor.execute(query, params)
            return cursor.fetchall()  # type: ignore[no-any-return]

        counts = {"waiting": [0] * len(PRIORITIES), "running": [0] * len(PRIORITIES)}
        active = 0
        for kind, priority, count in self._transaction(work, "plan_counts", write=False):
            if kind == "active":
                active = int(count)
            else:
                rank = RANK.get(int(priority))
                if rank is not None:  # a claimed row of a malformed priority plans nothing
                    counts[kind][rank] = int(count)
        return PlanCounts(waiting=counts["waiting"], running=counts["running"], active=active)

    def claim(
        self,
        wanted: Sequence[int],
        children: Sequence[int],
        host: str,
        sizing: int | BatchSizing,
        now: dt.datetime,
        queues: Sequence[str] = (),
    ) -> list[Batch]:
        host_id = self._host_id(host)
        cut = sizing_of(sizing)
        attempts = itertools.count()
        return self._transaction(
            lambda cursor: self._claim(cursor, wanted, children, host_id, cut, now, queues, next(attempts)), "claim"
        )

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
        host_id = self._host_id(host)
        cut = sizing_of(sizing)
        attempts = itertools.count()

        def work(cursor: Any) -> list[Batch]:
            self._write_outcomes(cursor, host, host_id, self._to_db_time(now), outcomes)
            return self._claim(cursor, wanted, children, host_id, cut, now, queues, next(attempts))

        return self._transaction(work, "claim")

    def _claim(
        self,
        cursor: Any,
        wanted: Sequence[int],
        children: Sequence[int],
        host_id: int,
        sizing: BatchSizing,
        now: dt.datetime,
        queues: Sequence[str] = (),
        attempt: int = 0,
    ) -> list[Batch]:
        """The claim's work; ``attempt``: how many times it ran before in this transaction (it lost
        to another transaction, such as another node's claim, and was rolled back)."""
        db_now = self._to_db_time(now)
        jobs: list[ClaimedJob] = []
        split: list[list[int]] = []
        free = len(children)  # batches still to fill: never lock rows no child could take
        view = self._share_view(cursor, host_id, attempt)
        for rank, (priority, count) in enumerate(zip(PRIORITIES, wanted)):
            if count <= 0 or free <= 0:
                continue
            per_batch = sizing.sizes[rank]
            slots = min(free, -(-count // per_batch))  # the slots the plan gave this priority
            params = {"priority": priority, "now": db_now, "limit": min(count, slots * per_batch)}
            rows = list(map(ClaimedJob._make, self._claim_rows(
                cursor, queues, params, view, per_batch, own_only=attempt > 0
            )))
            if not rows:
                continue
            # Rows past the batches cut here were only locked: the commit lets them go, unclaimed.
            start = 0
            for length in sizing.lengths(rank, [row[1] for row in rows], slots):
                split.append([row[0] for row in rows[start:start + length]])
                jobs.extend(rows[start:start + length])
                start += length
            free = len(children) - len(split)
        if not jobs:
            return []
        ids = [job[0] for job in jobs]
        assigned = list(zip(children, split))
        params = {"host_id": host_id, "now": db_now}
        if 1 < len(assigned) and len(ids) <= ONE_UPDATE_MAX_IDS:
            # Small batches for several children (short jobs, LOW and NEGLIGIBLE one by one): one
            # statement for all, a round trip per child less. Every id and pid is an int here.
            cursor.execute(expand_pid_cases(self._q["claim_batches"], assigned), params)
        elif len(ids) == 1:
            cursor.execute(self._q["claim_job"], {"pid": assigned[0][0], "id": ids[0], **params})
        else:
            update = self._q["claim_batch"]
            for pid, batch in assigned:
                cursor.execute(expand_in(update, batch), {"pid": pid, **params})
        batches: list[Batch] = []
        start = 0
        for pid, batch in assigned:
            end = start + len(batch)
            batches.append(Batch(pid, jobs[start:end]))
            start = end
        return batches

    def _share_view(self, cursor: Any, host_id: int, attempt: int) -> ShareView | None:
        """On a cluster (the dialect names the connection's node), the claim's share of the rows
        (fastsched.backends.shares), after recording this master's node when that is due, or when
        the claim runs again: its first run's record was rolled back with it. None: no share."""
        node = self.dialect.claim_node()
        if node is None:
            return None
        if attempt:
            self._shares.forget()
        if self._shares.take_stamp(host_id, node):
            cursor.execute(self._q["record_node"], {"name": node_row(host_id), "node": node})
        cursor.execute(self._q["member_nodes"], {"active": int(ACTIVE_WINDOW * 1_000_000)})
        return view_of(node, ((str(member), bool(lately), int(workers)) for member, lately, workers in cursor.fetchall()))

    def _claim_rows(
        self, cursor: Any, queues: Sequence[str], params: dict[str, Any], view: ShareView | None = None,
        batch: int = 1, *, own_only: bool = False,
    ) -> list[Any]:
        """The rows a claim of one priority takes: the oldest runnable ones (claim_priority, one
        locking read), or, with a ``view`` of the shares (a cluster), those of SharedClaim for
        batches of ``batch`` rows: the oldest of this master's share first (``own_only``: those alone)."""
        if view is None:
            if queues:
                return self._claim_from_queues(cursor, queues, params)
            return self.dialect.read_claim(cursor, self._q, params)
        find = None
        if queues:
            def find(cursor: Any, wide: dict[str, Any], share: tuple[int, int]) -> list[int]:
                return [int(row[0]) for row in self._claim_from_queues(cursor, queues, wide, share, locking=False)]

        claim = SharedClaim(cursor, self._q, self.dialect.concurrent_connections, find)
        return claim.rows(view, params, batch, own_only=own_only)

    def _claim_from_queues(
        self, cursor: Any, queues: Sequence[str], params: dict[str, Any], share: tuple[int, int] | None = None,
        *, locking: bool = True,
    ) -> list[Any]:
        """claim_priority within ``queues``: one claim_queue range per queue, merged oldest next_try
        first (then id) and cut to the limit. The rows of the cut stay locked until the commit, a
        few milliseconds: other masters skip them meanwhile (SKIP LOCKED), nothing waits.
        ``locking`` False: a plain read of ``share`` only (SharedClaim locks what it takes)."""
        query = self._q["claim_priority_queue"]
        query = query if locking else expand_spread(_unlocked(query), share)
        found: list[Any] = []
        for name in queues:
            cursor.execute(query, {**params, "queue": name})
            found.extend(cursor.fetchall())
        if len(queues) > 1:
            found.sort(key=lambda row: (self._time(row[6]), row[0]))
        return [row[:6] for row in found[: params["limit"]]]

    def write_outcomes(self, host: str, now: dt.datetime, outcomes: Outcomes) -> None:
        if outcomes:
            db_now = self._to_db_time(now)
            host_id = self._host_id(host)
            self._transaction(
                lambda cursor: self._write_outcomes(cursor, host, host_id, db_now, outcomes), "write_outcomes"
            )

    def write_released_outcomes(self, now: dt.datetime, outcomes: Outcomes) -> int:
        final = Outcomes(done=outcomes.done, retry=outcomes.retry, failed=outcomes.failed)
        if not final:
            return 0
        db_now = self._to_db_time(now)
        # host_id 0: the released rows (a claim sets a master's number, a pause its own).
        return self._transaction(
            lambda cursor: self._write_outcomes(cursor, "", 0, db_now, final, warn=False), "write_released_outcomes"
        )

    def _write_outcomes(
        self, cursor: Any, host: str, host_id: int, db_now: Any, outcomes: Outcomes, *, warn: bool = True
    ) -> int:
        written = 0
        for ids, name in ((outcomes.done, "complete_jobs"), (outcomes.released, "release_jobs")):
            for part in chunks(ids, IN_CHUNK):
                cursor.execute(expand_in(self._q[name], part), {"host_id": host_id, "now": db_now})
                written += cursor.rowcount
        if outcomes.cancelled:
            written += self._controls.write_cancelled(cursor, host_id, db_now, outcomes.cancelled)
        for retry in outcomes.retry:
            cursor.execute(
                self._q["retry_job"],
                {
                    "id": retry.id,
                    "host_id": host_id,
                    "next_try": self._to_db_time(retry.next_try),
                    "priority": retry.priority,
                    "retrial": retry.retrial,
                    "crashes": retry.crashes,
                    "error": retry.error,
                },
            )
            written += cursor.rowcount
        for failure in outcomes.failed:
            cursor.execute(
                self._q["fail_job"],
                {
                    "id": failure.id,
                    "host_id": host_id,
                    "now": db_now,
                    "retrial": failure.retrial,
                    "crashes": failure.crashes,
                    "error": failure.error,
                },
            )
            written += cursor.rowcount
        if warn and written < len(outcomes):
            log.warning(
                "%d of %d job outcomes not written: those claims no longer belong to host %r "
                "(another master recovered them)",
                len(outcomes) - written,
                len(outcomes),
                host,
            )
        return written

    def fail_malformed(self, now: dt.datetime) -> int:
        params = {"now": self._to_db_time(now), "error": MALFORMED_ERROR}

        def work(cursor: Any) -> int:
            cursor.execute(self._q["repair_unclaimed"])
            cursor.execute(self._q["fail_malformed"], params)
            return int(cursor.rowcount)

        return self._transaction(work, "fail_malformed")

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
        t = self._to_db_time(now)
        listed = queue_set_text(queues)
        host_id = self._host_id(host) if check is not None else 0
        # On a cluster, the master's node is recorded with it, before its first claim: the others
        # leave its share to it from their next claim on (fastsched.backends.shares).
        self.connection.cursor_ready()
        node = self.dialect.claim_node()
        owner_id = self._host_id(claim_owner(host, instance)) if node is not None else 0

        def work(cursor: Any) -> tuple[list[ProcessInfo], int]:
            replaced: list[ProcessInfo] = []
            released = 0
            if check is not None:
                # Under the host id's lock, so that of two starts at once only one can pass.
                cursor.execute(self._q["lock_host"], {"host_id": host_id})
                cursor.fetchall()
                cursor.execute(self._q["host_masters"], {"host": host, "now": self._to_db_time(None)})
                rows = cursor.fetchall()
                replaced = [
                    ProcessInfo(host=host, pid=int(row[0]), role="master", master_pid=0, workers=0,
                                started=self._time(row[1]), heartbeat=self._time(row[1]),
                                machine=row[2], instance=row[3])
                    for row in rows
                    if not (int(row[0]) == pid and row[3] == instance)
                ]
                if replaced:
                    check(replaced, self._time(rows[0][4]))  # raises PoolAlreadyRunning for a live twin
                for info in replaced:
                    self._unregister(cursor, {"host": host, "master_pid": info.pid})
            cursor.execute(
                self._q["register_process"], (host, pid, "master", 0, workers, t, t, listed, instance, machine)
            )
            if node is not None:
                cursor.execute(self._q["record_node"], {"name": node_row(owner_id), "node": node})
            if replaced:
                cursor.execute(self._q["release_host"], {"host_id": host_id})  # a schema-2 master's, by host
                released = int(cursor.rowcount)
                cursor.execute(self._q["release_orphans"])  # what the replaced masters held
                released += int(cursor.rowcount)
            return replaced, released

        registered = self._transaction(work, "register_master")
        # From its next transaction on (before any claim), each of its connections is noted.
        self.connection.session_prefix = session_prefix(host, pid)
        if node is not None:
            self._shares.take_stamp(owner_id, node)  # the first claim need not record it again
        return registered

    def register_children(self, host: str, master_pid: int, pids: Sequence[int], now: dt.datetime | None) -> None:
        t = self._to_db_time(now)
        pids = [int(pid) for pid in pids]

        def work(cursor: Any) -> None:
            key = {"host": host, "master_pid": master_pid}
            if pids:
                cursor.executemany(
                    self._q["register_process"],
                    [(host, pid, "child", master_pid, 0, t, t, "", "", "") for pid in pids],
                )
                cursor.execute(expand_in(self._q["delete_other_children"], pids), key)
            else:
                cursor.execute(self._q["delete_children"], key)

        self._transaction(work, "register_children")

    def heartbeat(
        self, host: str, master_pid: int, workers: int, now: dt.datetime | None, instance: str = ""
    ) -> bool:
        params = {
            "host": host, "master_pid": master_pid, "workers": workers, "now": self._to_db_time(now),
            "instance": instance,
        }

        def work(cursor: Any) -> bool:
            cursor.execute(self._q["heartbeat_master"], params)
            if cursor.rowcount == 0:  # gone, or (MySQL) unchanged because nothing changed
                cursor.execute(self._q["master_exists"], params)
                if cursor.fetchone() is None:
                    return False
            cursor.execute(self._q["heartbeat_children"], params)
            return True

        return self._transaction(work, "heartbeat")

    def unregister(self, host: str, master_pid: int) -> None:
        self._transaction(lambda cursor: self._unregister(cursor, {"host": host, "master_pid": master_pid}), "unregister")

    def _unregister(self, cursor: Any, key: dict[str, Any]) -> None:
        """Delete a master's rows (``key``: host, master_pid) and its children's; on a cluster,
        the record of its node too (it has no share from now on)."""
        if self.dialect.claim_node() is not None:
            cursor.execute(self._q["forget_node"], key)
        if self.dialect.cuts_off_sessions:
            cursor.execute(self._q["forget_sessions"], {"prefix": session_prefix(key["host"], key["master_pid"])})
        cursor.execute(self._q["unregister"], key)

    def processes(self) -> list[ProcessInfo]:
        def work(cursor: Any) -> list[Any]:
            cursor.execute(self._q["processes"])
            return list(cursor.fetchall())

        return [
            ProcessInfo(
                host=row[0],
                pid=int(row[1]),
                role=row[2],
                master_pid=int(row[3]),
                workers=int(row[4]),
                started=self._time(row[5]),
                heartbeat=self._time(row[6]),
                queues=tuple(row[7].split(",")) if row[7] else (),
                instance=row[8],
                machine=row[9],
            )
            for row in self._transaction(work, "processes", write=False)
        ]

    def recover_expired(
        self, alive_after: dt.datetime, spare: Callable[[str, int, str], bool] | None = None
    ) -> list[tuple[str, int]]:
        limit = self._to_db_time(alive_after)

        def expired(cursor: Any) -> list[Any]:
            cursor.execute(self._q["expired_masters"], {"alive_after": limit})
            return list(cursor.fetchall())

        def recover(cursor: Any, key: dict[str, Any]) -> int | None:
            prefix = session_prefix(key["host"], key["master_pid"])
            if not self._lock_expired_master(cursor, key, prefix):
                return None  # it came back to life, or someone else recovered it
            if self.dialect.cuts_off_sessions:
                # Dead by the lease: what its connections still hold (a claim or an outcome it was
                # stopped in) rolls back, and nothing it sends on them later commits.
                cut_off(cursor, self._q, prefix, self.dialect)
            cursor.execute(self._q["release_host"], key)  # a claim of a master of schema 2 (by host)
            released = int(cursor.rowcount)
            self._unregister(cursor, key)
            cursor.execute(self._q["release_orphans"])  # its instance's claims: no live owner now
            return released + int(cursor.rowcount)

        result = []
        for host, master_pid, machine in self._transaction(expired, "recover_expired", write=False):
            if spare is not None and spare(host, int(master_pid), machine):
                continue
            key = {"host": host, "host_id": self._host_id(host), "master_pid": master_pid, "alive_after": limit}
            released = self._transaction(functools.partial(recover, key=key), "recover_expired")
            if released is not None:
                log.warning(
                    "master %s on host %r missed its heartbeat: released %d job(s)",
                    master_pid,
                    host,
                    released,
                )
                result.append((host, released))
        return result

    def _lock_expired_master(self, cursor: Any, key: dict[str, Any], prefix: str) -> bool:
        """Lock the process row of a master whose heartbeat is older than ``key["alive_after"]``;
        False when there is none. The row may be locked by the master itself, stopped or cut off
        in its heartbeat's transaction, for as long as its connection lives: after a short wait
        its connections are cut off and the lock is asked for again. Still locked after
        CUT_OFF_ATTEMPTS waits (its connections could not be killed): False, for the next
        maintenance round, so that this master's own loop, heartbeat included, waits seconds at most."""
        if not self.dialect.cuts_off_sessions:
            cursor.execute(self._q["lock_expired_master"], key)
            return cursor.fetchone() is not None
        cursor.execute(self._q["short_lock_waits"])
        attempt = 1
        try:
            while True:
                try:
                    cursor.execute(self._q["lock_expired_master"], key)
                    return cursor.fetchone() is not None
                except self.dialect.driver_error as exc:
                    if self.dialect.error_code(exc) != LOCK_WAIT_TIMEOUT:
                        raise
                    if attempt == CUT_OFF_ATTEMPTS:
                        log.warning(
                            "master %s on host %r is past its lease but its process row stays locked "
                            "(by a connection that could not be cut off): recovering it later",
                            key["master_pid"], key["host"],
                        )
                        return False
                    cut_off(cursor, self._q, prefix, self.dialect)
                    if not self.dialect.in_transaction(cursor.connection):
                        self.dialect.begin(cursor)  # the server rolled it back (innodb_rollback_on_timeout)
                    attempt += 1
        finally:
            cursor.execute(self._q["usual_lock_waits"])

    def run_periodic(self, entry: PeriodicTask, now: dt.datetime | None = None) -> int | None:
        name = LEASE_PREFIX + entry.name
        schedule = entry.schedule

        def work(cursor: Any) -> int | None:
            cursor.execute(self._q["server_now"], {"now": self._to_db_time(now)})
            at = self._time(cursor.fetchone()[0])
            cursor.execute(self._q["lock_lease"], {"name": name})
            row = cursor.fetchone()
            key = {"name": name, "schedule": schedule}
            if row is None or row[0] is None:
                # The first master to see the task: a period runs now, a cron schedule at its slot.
                due = entry.next_due(at) if entry.cron is not None else at
                cursor.execute(self._q["insert_lease"], {**key, "due": self._to_db_time(due)})
                if not cursor.rowcount:
                    return None  # another master created it meanwhile, and decides this slot
                if due > at:
                    return None
            elif entry.cron is not None and row[1] != schedule and self._time(row[0]) > at:
                # A new cron expression (or zone) runs at its own next slot, or at the pending slot of
                # the schedule it replaces if that comes first: masters of two releases (a rolling
                # deploy) then move the lease in turn without ever putting the task off.
                due = min(self._time(row[0]), entry.next_due(at))
                cursor.execute(self._q["move_lease"], {**key, "due": self._to_db_time(due)})
                return None
            elif self._time(row[0]) > at:
                return None
            cursor.execute(self._q["move_lease"], {**key, "due": self._to_db_time(entry.next_due(at))})
            job = NewJob(entry.name, "[]", int(entry.priority), at, at, dedup_hash(entry.name, "[]", entry.queue), False,
                         entry.queue)
            (job_id,) = self._inserts.insert(cursor, [job], False)
            return job_id

        return self._transaction(work, "run_periodic")

    def release_orphans(self) -> int:
        def work(cursor: Any) -> int:
            cursor.execute(self._q["release_orphans"])
            return int(cursor.rowcount)

        released = int(self._transaction(work, "release_orphans"))
        if released:
            log.warning("released %d job(s) claimed by masters no longer registered", released)
        return released

    def release_claims(self, owner: str, keep_pids: Sequence[int] = ()) -> int:
        owner_id = self._host_id(owner)
        keep = [int(pid) for pid in keep_pids]

        def work(cursor: Any) -> int:
            if keep:
                cursor.execute(expand_in(self._q["release_owner_except"], keep), {"host_id": owner_id})
            else:
                cursor.execute(self._q["release_host"], {"host_id": owner_id})
            return int(cursor.rowcount)

        return int(self._transaction(work, "release_claims"))

    def take_periodic(self, name: str, now: dt.datetime, period: dt.timedelta) -> bool:
        params = {
            "name": LEASE_PREFIX + name,
            "now": self._to_db_time(now),
            "due": self._to_db_time(now + period),
        }

        def work(cursor: Any) -> bool:
            cursor.execute(self._q["advance_lease"], params)
            if cursor.rowcount:
                return True
            cursor.execute(self._q["create_lease"], params)
            return bool(cursor.rowcount)

        return self._transaction(work, "take_periodic")

    # --- operators' controls (controls.Controls) ------------------------------------------------
    def pause(self, pause: Pause, by: str, now: dt.datetime) -> bool:
        return self._controls.pause(pause, by, now)

    def resume(self, pause: Pause | None) -> int:
        return self._controls.resume(pause)

    def pauses(self) -> list[Pause]:
        return self._controls.pauses()

    def park_added(self, after_id: int) -> tuple[int, int]:
        return self._controls.park_added(after_id)

    def record_action(self, by: str, action: str, target: str, jobs: int, now: dt.datetime) -> None:
        self._controls.record_action(by, action, target, jobs, now)

    def actions(self, limit: int = 20) -> list[Action]:
        return self._controls.actions(limit)

    def cancel_request(self, job_id: int) -> tuple[str, dt.datetime] | None:
        return self._controls.cancel_request(job_id)

    def cancel_requests(self, host: str) -> list[tuple[int, str]]:
        return self._controls.cancel_requests(host)

    def drop_stale_cancel_requests(self) -> int:
        return self._controls.drop_stale_cancel_requests()

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
        return self._controls.bulk(
            action, job_filter, now, by=by, dry_run=dry_run, include_failed=include_failed, failed_only=failed_only
        )
