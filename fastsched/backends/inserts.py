"""add_many: multi-row INSERTs with atomic dedup, and the ids read back in input order.

The cheap path is the common one: a chunk of rows goes out as ONE multi-row INSERT; when every row
inserted (the affected-row count says so) and the server hands one statement consecutive ids
(SQLite under BEGIN IMMEDIATE; InnoDB with innodb_autoinc_lock_mode 0 or 1), the ids follow from
the first one without another round trip. Otherwise one ``SELECT id, dedup_hash ... IN (...)`` maps
each row to its id: a duplicate of a pending job resolves to that job (the unique index on
dedup_hash decides, atomically), and rows without dedup carry a random placeholder hash for the
insert, cleared right after.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from fastsched.backends import callers
from fastsched.backends.connection import Connection
from fastsched.backends.sqlfiles import HASH_BYTES, expand_in
from fastsched.errors import DatabaseError, SchemaError
from fastsched.jobs import NewJob

INSERT_CHUNK_ROWS = 1_000  # rows per multi-row INSERT
# Bytes per INSERT, worst case: far under any max_allowed_packet (MariaDB's default is 16 MiB).
INSERT_CHUNK_BYTES = 900_000
IN_CHUNK = 5_000  # ids (or hashes) per IN list

# Kinds of rows; one INSERT holds one kind.
PLAIN = "plain"  # dedup off (dedup_hash NULL): always inserts
DEDUP = "dedup"  # a duplicate of a pending job is a no-op: affected rows count the inserted ones
FORCED = "forced"  # a duplicate sets the pending job's priority if unclaimed: always read back


def chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


class Inserter:
    """The producer's write path: ``add_many``, on a connection (and its dialect's hooks)."""

    def __init__(self, db: Connection) -> None:
        self._db = db
        self._q = db.queries
        self._dialect = db.dialect
        self._caller_consecutive_ids: bool | None = None  # on the callers' server, once checked

    def add_many(self, jobs: Sequence[NewJob], *, connection: Any = None) -> list[int]:
        """Insert jobs in few round trips (multi-row inserts); return their ids in input order.

        See ``contracts.ProducerStore.add_many``. With ``connection``, the rows go through the caller's own
        connection, inside its transaction, and nothing is committed or rolled back here.
        """
        if not jobs:
            return []
        if connection is None and len(jobs) == 1 and not jobs[0].force_priority and not jobs[0].dedup_waiting:
            job_id = self._db.transaction(
                lambda cursor: self._insert_alone(cursor, jobs[0]), "add", single_statement=True
            )
            if job_id:
                return [job_id]
            # It met a pending duplicate. Reading that job's id back outside a transaction could
            # race its completion; the transaction below locks it, and re-running the upsert is
            # harmless.
        if connection is None:
            return self._db.transaction(
                lambda cursor: self.insert(cursor, jobs, self._db.consecutive_ids), "add_many"
            )
        # Our own connection is not needed (nor opened) for jobs without dedup: a web process adding
        # on its own connection keeps no second one. The schema is never created here: on MySQL the
        # DDL would commit the caller's transaction.
        caller = callers.caller_cursor(connection, self._dialect.name)
        try:
            caller.open()
            caller.check_text(jobs)
            if self._caller_consecutive_ids is None:
                self._caller_consecutive_ids = self._check_caller_database(caller)
            consecutive = caller.consecutive and self._caller_consecutive_ids
            running = self._running_duplicates(jobs) if self._dialect.caller_dedup_locks_rows else {}
            if not running:
                return self.insert(caller.cursor, jobs, consecutive, counts_inserted=not caller.found_rows)
            rest = [job for job in jobs if job.dedup_hash not in running]
            inserted = iter(
                self.insert(caller.cursor, rest, consecutive, counts_inserted=not caller.found_rows) if rest else []
            )
            return [running[job.dedup_hash] if job.dedup_hash in running else next(inserted) for job in jobs]
        except caller.errors as exc:
            raise self._dialect.wrap(callers.driver_exception(exc), "add_many on the caller's connection") from exc
        finally:
            caller.close()

    def _running_duplicates(self, jobs: Sequence[NewJob]) -> dict[bytes | None, int]:
        """For a caller's transaction, on our own connection and committed at once: hand over the
        dedup keys of running duplicates of dedup="waiting" jobs, and the running duplicates of the
        others by hash. Those add nothing on the caller's connection, so it locks no claimed row.
        An unclaimed duplicate is left to the upsert: a claim skips the rows it locks."""
        waiting = [job.dedup_hash for job in jobs if job.dedup_hash is not None and job.dedup_waiting]
        merging = [job.dedup_hash for job in jobs if job.dedup_hash is not None and not job.dedup_waiting]
        if not waiting and not merging:
            return {}

        def work(cursor: Any) -> dict[bytes | None, int]:
            for part in chunks(waiting, IN_CHUNK):
                cursor.execute(expand_in(self._q["hand_over_hashes"], part))
            found: dict[bytes | None, int] = {}
            for part in chunks(merging, IN_CHUNK):
                cursor.execute(expand_in(self._q["running_by_hash"], part))
                found.update((bytes(key), int(job_id)) for job_id, key in cursor.fetchall())
            return found

        return self._db.transaction(work, "add_many")

    def _check_caller_database(self, caller: callers.CallerCursor) -> bool:
        """SchemaError unless the caller's database has this release's schema; whether the rows of
        one multi-row INSERT get consecutive ids on its server."""
        if not self._db.check_version(caller.cursor):
            raise SchemaError(
                f"the database of the connection given has no fastsched tables: create them with "
                f"`fastsched-pool init --dsn {self._db.dsn}` (or, in a Django project, `manage.py migrate`)"
            )
        return self._dialect.server_consecutive_ids(caller.cursor, self._q)

    def _insert_alone(self, cursor: Any, job: NewJob) -> int:
        """One job in one autocommitted statement; its id, or 0 if a pending duplicate took it.

        Not for force_priority: SQLite's upsert then counts the updated duplicate as one row."""
        cursor.execute(self._q["add_jobs"], self._dialect.job_row(job))
        return self._dialect.first_insert_id(cursor, 1, self._q) if cursor.rowcount == 1 else 0

    def insert(
        self, cursor: Any, jobs: Sequence[NewJob], consecutive: bool, *, counts_inserted: bool = True
    ) -> list[int]:
        """Insert ``jobs``; their ids in input order. ``counts_inserted``: the affected rows of an
        upsert count the inserted rows only (not so with the CLIENT_FOUND_ROWS flag).

        Duplicates within the call collapse first, to the first one (a later force_priority
        duplicate sets its priority). The rows then go in input order, so that ids ascend with it
        and FIFO holds within a call.
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
            else:
                if job.force_priority:
                    rows[index] = rows[index]._replace(priority=job.priority, force_priority=True)
                if job.dedup_waiting:
                    rows[index] = rows[index]._replace(dedup_waiting=True)
            slot.append(index)
        handed = [job.dedup_hash for job in rows if job.dedup_waiting and job.dedup_hash is not None]
        for part in chunks(handed, IN_CHUNK):
            # In the same transaction as the inserts: a duplicate claimed after this statement
            # absorbs the add, and rightly so, since its run starts after the add was made.
            cursor.execute(expand_in(self._q["hand_over_hashes"], part))
        ids = [0] * len(rows)
        for kind, chunk in self._chunks(rows):
            self._insert_chunk(cursor, rows, chunk, kind, consecutive and (kind == PLAIN or counts_inserted), ids)
        return [ids[i] for i in slot]

    def _chunks(self, rows: list[NewJob]) -> list[tuple[str, list[int]]]:
        """Row indexes, in order, cut into chunks of one kind, at most INSERT_CHUNK_ROWS rows and
        INSERT_CHUNK_BYTES bytes (a worst-case estimate: 4 bytes a character, escaped)."""
        result: list[tuple[str, list[int]]] = []
        chunk: list[int] = []
        chunk_kind = ""
        size = 0
        for index, job in enumerate(rows):
            kind = PLAIN if job.dedup_hash is None else FORCED if job.force_priority else DEDUP
            row_bytes = 4 * (len(job.parameter) + len(job.command)) + 200
            if chunk and (
                kind != chunk_kind or len(chunk) >= INSERT_CHUNK_ROWS or size + row_bytes > INSERT_CHUNK_BYTES
            ):
                result.append((chunk_kind, chunk))
                chunk, size = [], 0
            chunk.append(index)
            chunk_kind = kind
            size += row_bytes
        if chunk:
            result.append((chunk_kind, chunk))
        return result

    def _insert_chunk(
        self, cursor: Any, rows: list[NewJob], chunk: list[int], kind: str, consecutive: bool, ids: list[int]
    ) -> None:
        """One multi-row INSERT; write the ids of its rows into ``ids``."""
        params = [self._dialect.job_row(rows[i]) for i in chunk]
        keys: list[bytes] = []
        placeholders = kind == PLAIN and not consecutive
        if placeholders:
            keys = [os.urandom(HASH_BYTES) for _ in chunk]
            params = [self._dialect.job_row(rows[i]._replace(dedup_hash=key)) for i, key in zip(chunk, keys)]
        self._dialect.insert_rows(cursor, self._q["add_jobs_force_priority" if kind == FORCED else "add_jobs"], params)
        if consecutive and kind != FORCED and cursor.rowcount == len(chunk):
            first = self._dialect.first_insert_id(cursor, len(chunk), self._q)
            for offset, index in enumerate(chunk):
                ids[index] = first + offset
            return
        if not placeholders:
            keys = [rows[i].dedup_hash or b"" for i in chunk]  # every row of a DEDUP or FORCED chunk has one
        found: dict[bytes, int] = {}
        for part in chunks(keys, IN_CHUNK):
            cursor.execute(expand_in(self._q["ids_by_hash"], part))
            found.update((bytes(key), int(job_id)) for job_id, key in cursor.fetchall())
        for index, key in zip(chunk, keys):
            job_id = found.get(key)
            if job_id is None:  # only on a caller's autocommit connection, racing a claim and completion
                raise DatabaseError("a job was finished before add_many could read its id back")
            ids[index] = job_id
        if placeholders:
            for part in chunks([ids[i] for i in chunk], IN_CHUNK):
                cursor.execute(expand_in(self._q["clear_hashes"], part))
