"""The storage contract implemented once, on top of each dialect's named queries.

``SQLBackend`` holds every operation of ``fastsched.backends.base.Backend``; the dialect subclasses
(``mysql.MySQLBackend``, ``sqlite.SQLiteBackend``) only connect, classify driver errors and convert
times. Each operation is one short transaction run by :meth:`SQLBackend._transaction`, which
reconnects after a dropped connection and re-runs the whole transaction after a deadlock or lock
wait timeout: every operation is written to be safe to re-run.

A backend object is not thread-safe: give each thread (and each process) its own. After a fork the
child process opens its own connection and never touches the parent's.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import random
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from fastsched import core
from fastsched.backends.base import SCHEMA_VERSION, Backend, Batch, PlanCounts, PriorityStats, ProcessInfo
from fastsched.backends.sqlfiles import expand_in, load_queries, load_schema
from fastsched.dsn import DSN
from fastsched.errors import DatabaseError, DatabaseUnavailable, InvalidState, JobNotFound, SchemaError
from fastsched.jobs import DONE_FAILED, DONE_OK, ClaimedJob, Job, JobState, NewJob, Outcomes
from fastsched.priority import ALL_PRIORITIES

log = logging.getLogger(__name__)

T = TypeVar("T")

INSERT_CHUNK_ROWS = 1_000  # rows per multi-row INSERT
INSERT_CHUNK_BYTES = 900_000  # bytes per INSERT, worst case; under pymysql's 1,024,000 so it never splits one
IN_CHUNK = 5_000  # ids per ``IN (...)`` list
RETRY_BATCH = 500  # failed jobs re-queued per transaction by retry_all_failed
DEADLOCK_RETRIES = 5  # re-runs of a transaction after a deadlock or lock wait timeout
DEADLOCK_BACKOFF = 0.005  # seconds, doubled on each re-run, with jitter
STATS_WINDOW = dt.timedelta(hours=1)  # PriorityStats.done_last_hour
PRIORITIES = tuple(int(p) for p in ALL_PRIORITIES)
MALFORMED_ERROR = "malformed priority: not one of 10, 20, 30, 40, 50, so no claim would ever take it"
LEASE_PREFIX = "periodic:"  # fastsched_meta names of take_periodic leases

# What a driver error means for the transaction that raised it.
RETRY = "retry"  # deadlock or lock wait timeout: roll back, re-run
DISCONNECTED = "disconnected"  # the connection is gone: reconnect, re-run if it was not committing
FAILED = "failed"  # anything else: roll back, raise DatabaseError

_JOB_COLUMNS = 14  # get_job, lock_job and failed_jobs select these first, then failed_hash


def _state(done: int, pid: int, next_try: dt.datetime, now: dt.datetime) -> JobState:
    if done == DONE_OK:
        return JobState.DONE
    if done == DONE_FAILED:
        return JobState.FAILED
    if pid:
        return JobState.RUNNING
    return JobState.DEFERRED if next_try > now else JobState.WAITING


def _args(parameter: str) -> list[object] | None:
    try:
        value = json.loads(parameter)
    except ValueError:
        return None
    return value if isinstance(value, list) else None


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def _chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class SQLBackend(Backend):
    """Every operation of the contract, on named queries; dialects subclass it with small hooks."""

    dialect: str
    # --- dialect hooks ----------------------------------------------------------------------
    driver_error: type[BaseException]  # the root of the driver's exceptions
    max_statement_bytes: int = INSERT_CHUNK_BYTES

    def _connect(self) -> tuple[Any, bool]:
        """A new connection, set up (isolation, pragmas, server checks); and whether ids of one
        multi-row INSERT are consecutive. Raise DatabaseError (or a subclass) on failure."""
        raise NotImplementedError

    def _classify(self, exc: BaseException) -> str:
        """RETRY, DISCONNECTED or FAILED for a driver error."""
        raise NotImplementedError

    def _is_missing_table(self, exc: BaseException) -> bool:
        """Whether a driver error says a table does not exist (the schema is not created yet)."""
        raise NotImplementedError

    def _begin(self, cursor: Any) -> None:
        """Start a write transaction (MySQL: implicit, autocommit is off)."""

    def _to_db_time(self, value: dt.datetime) -> Any:
        """A datetime as the driver should receive it."""
        return value

    # ``None``: the driver returns datetimes already; else converts a stored time (not NULL).
    _from_db_time: Callable[[Any], dt.datetime] | None = None

    def _job_row(self, job: NewJob) -> tuple[Any, ...]:
        """The add_jobs parameters of a job: command, parameter, priority, created, next_try, dedup_hash."""
        return job[:6]

    def _first_insert_id(self, cursor: Any, rows: int) -> int:
        """The id of the first of ``rows`` rows the last add_jobs inserted (all of them, consecutively)."""
        raise NotImplementedError

    def _caller_cursor(self, connection: Any) -> tuple[Any, bool]:
        """A plain cursor on a caller's connection, and whether its inserts get consecutive ids."""
        raise NotImplementedError

    # --- life cycle -------------------------------------------------------------------------
    def __init__(self, dsn: DSN, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.dsn = dsn
        self._q = load_queries(self.dialect)
        self._sleep = sleep
        self._conn: Any = None
        self._cursor: Any = None
        self._conn_pid = 0  # the process that opened _conn
        self._schema_ok = False  # checked on this connection
        self._consecutive_ids = False  # on this connection

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.dsn)!r})"

    def close(self) -> None:
        conn, self._conn, self._cursor = self._conn, None, None
        if conn is not None and self._conn_pid == os.getpid():
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing a broken connection must not fail
                pass

    def init_schema(self) -> None:
        self._run(self._create_schema, "init_schema")
        self._schema_ok = True

    def _create_schema(self, cursor: Any) -> None:
        for statement in load_schema(self.dialect):
            cursor.execute(statement)
        cursor.execute(self._q["set_schema_version"], {"version": str(SCHEMA_VERSION)})
        self._check_version(cursor)

    def _check_version(self, cursor: Any) -> bool:
        """False when the schema is missing; SchemaError when it is of another version."""
        try:
            cursor.execute(self._q["schema_version"])
        except self.driver_error as exc:
            if not self._is_missing_table(exc):
                raise
            return False
        row = cursor.fetchone()
        if row is None:
            return False
        found = int(row[0])
        if found > SCHEMA_VERSION:
            raise SchemaError(
                f"the database {self.dsn} has fastsched schema version {found}, newer than version "
                f"{SCHEMA_VERSION} of this release: upgrade fastsched"
            )
        if found < SCHEMA_VERSION:
            raise SchemaError(
                f"the database {self.dsn} has fastsched schema version {found}, older than version "
                f"{SCHEMA_VERSION} of this release, and no migration exists for it"
            )
        return True

    # --- connection and transactions --------------------------------------------------------
    def _cursor_ready(self, *, check_schema: bool = True) -> Any:
        """The cursor of an open connection (connecting if needed) whose schema has been checked."""
        if self._conn is None or self._conn_pid != os.getpid():
            self._conn = self._cursor = None  # after a fork: never use (or close) the parent's socket
            self._schema_ok = False
            conn, self._consecutive_ids = self._connect()
            self._conn, self._cursor, self._conn_pid = conn, conn.cursor(), os.getpid()
        if check_schema and not self._schema_ok:
            self._ensure_schema()
        return self._cursor

    def _ensure_schema(self) -> None:
        """Check the schema version once per connection; create the schema if it is missing."""
        if not self._run(self._check_version, "checking the schema version", write=False):
            self._run(self._create_schema, "creating the schema")
        self._schema_ok = True

    def _abort(self) -> None:
        if self._conn is None:
            return
        try:
            self._conn.rollback()
        except Exception:  # noqa: BLE001 - the connection may be gone; the server rolls back then
            self._discard()

    def _discard(self) -> None:
        """Forget a broken connection; the next operation opens a new one."""
        self.close()

    def _run(self, work: Callable[[Any], T], what: str, *, write: bool = True) -> T:
        """Run ``work(cursor)`` in one transaction and commit it; see _transaction."""
        return self._transaction(work, what, write=write, check_schema=False)

    def _transaction(
        self, work: Callable[[Any], T], what: str, *, write: bool = True, check_schema: bool = True
    ) -> T:
        """Run ``work(cursor)`` in one transaction and commit.

        A deadlock or lock wait timeout re-runs the whole transaction (a few times, with backoff).
        A dropped connection reconnects and re-runs it once, unless it dropped while committing (the
        outcome is unknown then: DatabaseUnavailable, and the next operation reconnects). Other
        driver errors roll back and raise DatabaseError with the driver's error as __cause__.
        """
        attempt = 0
        reconnected = False
        while True:
            cursor = self._cursor_ready(check_schema=check_schema)
            committing = False
            try:
                if write:
                    self._begin(cursor)
                result = work(cursor)
                committing = True
                self._conn.commit()
                return result
            except self.driver_error as exc:
                kind = self._classify(exc)
                if kind == DISCONNECTED:
                    self._discard()
                    if not committing and not reconnected:
                        reconnected = True
                        log.info("database connection lost during %s, reconnecting: %s", what, exc)
                        continue
                    raise self._wrap(exc, what) from exc
                self._abort()
                if kind == RETRY and attempt < DEADLOCK_RETRIES:
                    delay = DEADLOCK_BACKOFF * (2**attempt) * (1 + random.random())
                    attempt += 1
                    log.info("%s: %s; re-running the transaction in %.3f s", what, exc, delay)
                    self._sleep(delay)
                    continue
                raise self._wrap(exc, what) from exc
            except BaseException:
                self._abort()
                raise

    def _wrap(self, exc: BaseException, what: str) -> DatabaseError:
        """A fastsched error for a driver error, with the password scrubbed from the message."""
        error = DatabaseUnavailable if self._classify(exc) == DISCONNECTED else DatabaseError
        message = f"{what} failed on {self.dsn}: {exc}"
        if self.dsn.password:
            message = message.replace(self.dsn.password, "***")
        return error(message)

    # --- rows -------------------------------------------------------------------------------
    def _time(self, value: Any) -> dt.datetime:
        return value if self._from_db_time is None else self._from_db_time(value)

    def _opt_time(self, value: Any) -> dt.datetime | None:
        return None if value is None else self._time(value)

    def _job(self, row: Sequence[Any], now: dt.datetime) -> Job:
        job_id, command, parameter, priority, created, next_try, executed, finished = row[:8]
        retrial, crashes, pid, host, last_error, done = row[8:_JOB_COLUMNS]
        next_try = self._time(next_try)
        return Job(
            id=int(job_id),
            command=command,
            args=_args(parameter),
            parameter=parameter,
            priority=int(priority),
            state=_state(done, pid, next_try, now),
            created=self._time(created),
            next_try=next_try,
            executed=self._opt_time(executed),
            finished=self._opt_time(finished),
            retrial=int(retrial),
            crashes=int(crashes),
            pid=int(pid),
            host=host,
            last_error=last_error,
        )

    def _get_row(self, cursor: Any, job_id: int, *, lock: bool) -> Sequence[Any]:
        cursor.execute(self._q["lock_job" if lock else "get_job"], {"id": int(job_id)})
        row = cursor.fetchone()
        if row is None:
            raise JobNotFound(f"no job has id {job_id}")
        return row  # type: ignore[no-any-return]

    # --- producer ---------------------------------------------------------------------------
    def add_many(self, jobs: Sequence[NewJob], *, connection: Any = None) -> list[int]:
        if not jobs:
            return []
        if connection is None:
            return self._transaction(
                lambda cursor: self._add(cursor, jobs, self._consecutive_ids), "add_many"
            )
        self._cursor_ready()  # the schema exists (checked on our own connection, never the caller's)
        cursor, consecutive = self._caller_cursor(connection)
        try:
            return self._add(cursor, jobs, consecutive and self._consecutive_ids)
        except self.driver_error as exc:
            raise self._wrap(exc, "add_many on the caller's connection") from exc

    def _add(self, cursor: Any, jobs: Sequence[NewJob], consecutive: bool) -> list[int]:
        """Insert ``jobs``; their ids in input order.

        Within-call duplicates collapse first (a later force_priority duplicate sets the priority).
        Rows then go in input order (ids ascend with it, so FIFO holds within a call), in chunks of
        one multi-row INSERT each; a chunk holds rows of one kind: without dedup (they always
        insert), with dedup, with dedup and force_priority. A chunk whose rows all inserted has
        consecutive ids when the server says so (SQLite under BEGIN IMMEDIATE; InnoDB with
        autoinc lock mode 0 or 1): no further round trip. Otherwise one SELECT by dedup hash maps
        each row to its id; rows without dedup then take a random placeholder hash for the
        insert, cleared right after.
        """
        rows: list[NewJob] = []
        slot: list[int] = []  # input position -> index in rows
        by_hash: dict[bytes, int] = {}
        for job in jobs:
            key = job.dedup_hash
            if key is None:
                slot.append(len(rows))
                rows.append(job)
                continue
            index = by_hash.get(key)
            if index is None:
                by_hash[key] = index = len(rows)
                rows.append(job)
            elif job.force_priority:
                rows[index] = rows[index]._replace(priority=job.priority, force_priority=True)
            slot.append(index)

        ids = [0] * len(rows)
        for kind, chunk in self._insert_chunks(rows):
            self._insert_chunk(cursor, rows, chunk, kind, consecutive, ids)
        return [ids[i] for i in slot]

    def _insert_chunks(self, rows: list[NewJob]) -> list[tuple[str, list[int]]]:
        """Split rows, in order, into chunks of one kind, at most INSERT_CHUNK_ROWS rows and about
        max_statement_bytes bytes (a worst-case estimate: 4 bytes per character, escaped)."""
        chunks: list[tuple[str, list[int]]] = []
        chunk: list[int] = []
        chunk_kind = ""
        size = 0
        for index, job in enumerate(rows):
            kind = "plain" if job.dedup_hash is None else "forced" if job.force_priority else "dedup"
            row_bytes = 4 * (len(job.parameter) + len(job.command)) + 200
            if chunk and (
                kind != chunk_kind
                or len(chunk) >= INSERT_CHUNK_ROWS
                or size + row_bytes > self.max_statement_bytes
            ):
                chunks.append((chunk_kind, chunk))
                chunk, size = [], 0
            chunk.append(index)
            chunk_kind = kind
            size += row_bytes
        if chunk:
            chunks.append((chunk_kind, chunk))
        return chunks

    def _insert_chunk(
        self, cursor: Any, rows: list[NewJob], chunk: list[int], kind: str, consecutive: bool, ids: list[int]
    ) -> None:
        params = [self._job_row(rows[i]) for i in chunk]
        placeholders: list[bytes] = []
        if kind == "plain" and not consecutive:
            placeholders = [os.urandom(20) for _ in chunk]
            params = [row[:5] + (key,) for row, key in zip(params, placeholders)]
        cursor.executemany(self._q["add_jobs_force_priority" if kind == "forced" else "add_jobs"], params)
        if consecutive and kind != "forced" and cursor.rowcount == len(chunk):
            first = self._first_insert_id(cursor, len(chunk))
            for offset, index in enumerate(chunk):
                ids[index] = first + offset
            return
        keys = placeholders or [rows[i].dedup_hash for i in chunk]
        found: dict[bytes, int] = {}
        for part in _chunks(keys, IN_CHUNK):
            cursor.execute(expand_in(self._q["ids_by_hash"], part))  # type: ignore[arg-type]
            found.update((bytes(key), int(job_id)) for job_id, key in cursor.fetchall())
        for index, key in zip(chunk, keys):
            job_id = found.get(key)  # type: ignore[arg-type]
            if job_id is None:  # only possible on a caller's autocommit connection, in a race
                raise DatabaseError("a job was finished before add_many could read its id back")
            ids[index] = job_id
        if placeholders:
            for part in _chunks([ids[i] for i in chunk], IN_CHUNK):
                cursor.execute(expand_in(self._q["clear_hashes"], part))

    def get(self, job_id: int, now: dt.datetime) -> Job:
        return self._transaction(
            lambda cursor: self._job(self._get_row(cursor, job_id, lock=False), now), "get", write=False
        )

    def cancel(self, job_id: int) -> Job:
        def work(cursor: Any) -> Job:
            job = self._job(self._get_row(cursor, job_id, lock=True), _utcnow())
            if job.state in (JobState.RUNNING, JobState.DONE):
                raise InvalidState(
                    f"job {job_id} is {job.state.value}: only a waiting, deferred or failed job can be cancelled"
                )
            cursor.execute(self._q["delete_job"], {"id": job.id})
            return job

        return self._transaction(work, "cancel")

    def _retry_one(self, cursor: Any, job_id: int, now: dt.datetime) -> int:
        """Re-queue one failed job; the id of the job now pending for it."""
        row = self._get_row(cursor, job_id, lock=True)
        done, key = row[_JOB_COLUMNS - 1], row[_JOB_COLUMNS]
        if done != DONE_FAILED:
            state = _state(done, row[10], self._time(row[5]), now)
            raise InvalidState(f"job {job_id} is {state.value}: only a failed job can be retried")
        if key is not None:
            cursor.execute(self._q["lock_pending_by_hash"], {"hash": bytes(key)})
            twin = cursor.fetchone()
            if twin is not None:  # an identical job is pending: keep that one (dedup holds)
                cursor.execute(self._q["delete_job"], {"id": int(job_id)})
                return int(twin[0])
        cursor.execute(self._q["requeue_failed"], {"id": int(job_id), "now": self._to_db_time(now)})
        return int(job_id)

    def retry(self, job_id: int, now: dt.datetime) -> Job:
        def work(cursor: Any) -> Job:
            pending = self._retry_one(cursor, job_id, now)
            return self._job(self._get_row(cursor, pending, lock=False), now)

        return self._transaction(work, "retry")

    def retry_all_failed(self, now: dt.datetime) -> int:
        def batch(cursor: Any, after: int) -> list[int]:
            cursor.execute(self._q["failed_ids"], {"after": after, "limit": RETRY_BATCH})
            ids = [int(row[0]) for row in cursor.fetchall()]
            for job_id in ids:
                try:
                    self._retry_one(cursor, job_id, now)
                except (JobNotFound, InvalidState):
                    pass  # cancelled or retried meanwhile
            return ids

        total, after = 0, 0
        while True:
            ids = self._transaction(lambda cursor: batch(cursor, after), "retry_all_failed")
            total += len(ids)
            if len(ids) < RETRY_BATCH:
                return total
            after = ids[-1]

    def failed(self, limit: int = 100) -> list[Job]:
        def work(cursor: Any) -> list[Job]:
            cursor.execute(self._q["failed_jobs"], {"limit": int(limit)})
            now = _utcnow()
            return [self._job(row, now) for row in cursor.fetchall()]

        return self._transaction(work, "failed", write=False)

    def purge(self, finished_before: dt.datetime, *, include_failed: bool = False, limit: int = 10_000) -> int:
        params = {
            "before": self._to_db_time(finished_before),
            "max_done": DONE_FAILED if include_failed else DONE_OK,
            "limit": int(limit),
        }

        def work(cursor: Any) -> int:
            cursor.execute(self._q["purge"], params)
            return int(cursor.rowcount)

        return self._transaction(work, "purge")

    def stats(self, now: dt.datetime) -> list[PriorityStats]:
        params = {"now": self._to_db_time(now), "hour_ago": self._to_db_time(now - STATS_WINDOW)}

        def work(cursor: Any) -> list[Any]:
            cursor.execute(self._q["stats"], params)
            return list(cursor.fetchall())

        found = {int(row[0]): row for row in self._transaction(work, "stats", write=False)}
        result = []
        for priority in PRIORITIES:
            row = found.get(priority)
            if row is None:
                result.append(PriorityStats(priority, 0, 0, 0, 0, 0, None))
                continue
            oldest = self._opt_time(row[6])
            result.append(
                PriorityStats(
                    priority=priority,
                    waiting=int(row[1] or 0),
                    deferred=int(row[2] or 0),
                    running=int(row[3] or 0),
                    failed=int(row[4] or 0),
                    done_last_hour=int(row[5] or 0),
                    oldest_waiting_seconds=None if oldest is None else max(0.0, (now - oldest).total_seconds()),
                )
            )
        return result

    def finished_since(self, since: dt.datetime) -> int:
        def work(cursor: Any) -> int:
            cursor.execute(self._q["finished_since"], {"since": self._to_db_time(since)})
            return int(cursor.fetchone()[0])

        return self._transaction(work, "finished_since", write=False)

    def jobs_ahead(self, job_id: int) -> int:
        def work(cursor: Any) -> int:
            row = self._get_row(cursor, job_id, lock=False)
            if row[_JOB_COLUMNS - 1] != 0 or row[10]:
                return 0  # running, done or failed: nothing is ahead of it in the queue
            cursor.execute(self._q["jobs_ahead"], {"priority": row[3], "next_try": row[5], "id": row[0]})
            return int(cursor.fetchone()[0])

        return self._transaction(work, "jobs_ahead", write=False)

    # --- the pool master --------------------------------------------------------------------
    def plan_counts(self, now: dt.datetime, cap: int, alive_after: dt.datetime) -> PlanCounts:
        params = {"now": self._to_db_time(now), "cap": int(cap), "alive_after": self._to_db_time(alive_after)}

        def work(cursor: Any) -> Sequence[Any]:
            cursor.execute(self._q["plan_counts"], params)
            return cursor.fetchone()  # type: ignore[no-any-return]

        row = self._transaction(work, "plan_counts", write=False)
        return PlanCounts(waiting=[int(v) for v in row[0:5]], running=[int(v) for v in row[5:10]], active=int(row[10]))

    def claim(
        self,
        wanted: Sequence[int],
        children: Sequence[int],
        host: str,
        fetch_limit: int,
        now: dt.datetime,
        outcomes: Outcomes | None = None,
    ) -> list[Batch]:
        return self._transaction(
            lambda cursor: self._claim(cursor, wanted, children, host, fetch_limit, now, outcomes), "claim"
        )

    def _claim(
        self,
        cursor: Any,
        wanted: Sequence[int],
        children: Sequence[int],
        host: str,
        fetch_limit: int,
        now: dt.datetime,
        outcomes: Outcomes | None,
    ) -> list[Batch]:
        db_now = self._to_db_time(now)
        if outcomes:
            self._write_outcomes(cursor, host, db_now, outcomes)
        jobs: list[ClaimedJob] = []
        free = len(children)  # batches still to fill: never lock rows no child could take
        parse = self._from_db_time
        query = self._q["claim_priority"]
        for priority, count in zip(PRIORITIES, wanted):
            if count <= 0 or free <= 0:
                continue
            per_batch = fetch_limit if priority <= core.BATCHED_UP_TO else 1
            cursor.execute(query, {"priority": priority, "now": db_now, "limit": min(count, free * per_batch)})
            rows = cursor.fetchall()
            if not rows:
                continue
            if parse is None:
                jobs.extend(map(ClaimedJob._make, rows))
            else:
                jobs.extend([ClaimedJob(r[0], r[1], r[2], r[3], r[4], r[5], parse(r[6])) for r in rows])
            free -= -(-len(rows) // per_batch)
        if not jobs:
            return []
        ids = [job[0] for job in jobs]
        split = core.batch_ids(ids, [job[3] for job in jobs], fetch_limit)
        batches: list[Batch] = []
        update = self._q["claim_batch"]
        start = 0
        for pid, batch in zip(children, split):
            cursor.execute(expand_in(update, batch), {"pid": pid, "host": host, "now": db_now})
            end = start + len(batch)
            batches.append(Batch(pid, jobs[start:end]))
            start = end
        return batches

    def write_outcomes(self, host: str, now: dt.datetime, outcomes: Outcomes) -> None:
        if outcomes:
            db_now = self._to_db_time(now)
            self._transaction(lambda cursor: self._write_outcomes(cursor, host, db_now, outcomes), "write_outcomes")

    def _write_outcomes(self, cursor: Any, host: str, db_now: Any, outcomes: Outcomes) -> None:
        written = 0
        for ids, name in ((outcomes.done, "complete_jobs"), (outcomes.released, "release_jobs")):
            for part in _chunks(ids, IN_CHUNK):
                cursor.execute(expand_in(self._q[name], part), {"host": host, "now": db_now})
                written += cursor.rowcount
        for retry in outcomes.retry:
            cursor.execute(
                self._q["retry_job"],
                {
                    "id": retry.id,
                    "host": host,
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
                    "host": host,
                    "now": db_now,
                    "retrial": failure.retrial,
                    "crashes": failure.crashes,
                    "error": failure.error,
                },
            )
            written += cursor.rowcount
        if written < len(outcomes):
            log.warning(
                "%d of %d job outcomes not written: those claims no longer belong to host %r "
                "(another master recovered them)", len(outcomes) - written, len(outcomes), host
            )

    def fail_jobs(self, job_ids: Sequence[int], error: str, now: dt.datetime) -> int:
        if not job_ids:
            return 0
        params = {"now": self._to_db_time(now), "error": error}

        def work(cursor: Any) -> int:
            count = 0
            for part in _chunks(list(job_ids), IN_CHUNK):
                cursor.execute(expand_in(self._q["fail_pending"], part), params)
                count += cursor.rowcount
            return count

        return self._transaction(work, "fail_jobs")

    def fail_malformed(self, now: dt.datetime) -> int:
        params = {"now": self._to_db_time(now), "error": MALFORMED_ERROR}

        def work(cursor: Any) -> int:
            cursor.execute(self._q["fail_malformed"], params)
            return int(cursor.rowcount)

        return self._transaction(work, "fail_malformed")

    def register_master(self, host: str, pid: int, workers: int, now: dt.datetime) -> None:
        t = self._to_db_time(now)
        self._transaction(
            lambda cursor: cursor.execute(self._q["register_process"], (host, pid, "master", 0, workers, t, t)),
            "register_master",
        )

    def register_children(self, host: str, master_pid: int, pids: Sequence[int], now: dt.datetime) -> None:
        t = self._to_db_time(now)
        pids = [int(pid) for pid in pids]

        def work(cursor: Any) -> None:
            key = {"host": host, "master_pid": master_pid}
            if pids:
                cursor.executemany(
                    self._q["register_process"], [(host, pid, "child", master_pid, 0, t, t) for pid in pids]
                )
                cursor.execute(expand_in(self._q["delete_other_children"], pids), key)
            else:
                cursor.execute(self._q["delete_children"], key)

        self._transaction(work, "register_children")

    def heartbeat(self, host: str, master_pid: int, workers: int, now: dt.datetime) -> bool:
        params = {"host": host, "master_pid": master_pid, "workers": workers, "now": self._to_db_time(now)}

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
        self._transaction(
            lambda cursor: cursor.execute(self._q["unregister"], {"host": host, "master_pid": master_pid}),
            "unregister",
        )

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
            )
            for row in self._transaction(work, "processes", write=False)
        ]

    def recover_host(self, host: str) -> int:
        def work(cursor: Any) -> int:
            cursor.execute(self._q["release_host"], {"host": host})
            released = int(cursor.rowcount)
            cursor.execute(self._q["delete_host_processes"], {"host": host})
            return released

        released = self._transaction(work, "recover_host")
        if released:
            log.warning("released %d job(s) still claimed by host %r", released, host)
        return released

    def recover_expired(self, alive_after: dt.datetime) -> list[tuple[str, int]]:
        limit = self._to_db_time(alive_after)

        def expired(cursor: Any) -> list[Any]:
            cursor.execute(self._q["expired_masters"], {"alive_after": limit})
            return list(cursor.fetchall())

        def recover(cursor: Any, host: str, master_pid: int) -> int | None:
            key = {"host": host, "master_pid": master_pid, "alive_after": limit}
            cursor.execute(self._q["lock_expired_master"], key)
            if cursor.fetchone() is None:
                return None  # it came back to life, or someone else recovered it
            cursor.execute(self._q["release_host"], key)
            released = int(cursor.rowcount)
            cursor.execute(self._q["unregister"], key)
            return released

        result = []
        for host, master_pid in self._transaction(expired, "recover_expired", write=False):
            released = self._transaction(lambda cursor: recover(cursor, host, master_pid), "recover_expired")
            if released is not None:
                log.warning("master %s on host %r missed its heartbeat: released %d job(s)", master_pid, host, released)
                result.append((host, released))
        return result

    def take_periodic(self, name: str, now: dt.datetime, period: dt.timedelta) -> bool:
        params = {"name": LEASE_PREFIX + name, "now": self._to_db_time(now), "due": self._to_db_time(now + period)}

        def work(cursor: Any) -> bool:
            cursor.execute(self._q["advance_lease"], params)
            if cursor.rowcount:
                return True
            cursor.execute(self._q["create_lease"], params)
            return bool(cursor.rowcount)

        return self._transaction(work, "take_periodic")

