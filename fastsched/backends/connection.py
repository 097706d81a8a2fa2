"""One database connection, its transactions and its errors, on a dialect.

``Connection`` opens the connection lazily through its dialect (``dialect.Dialect``), and again
after a fork or a drop, checks the schema once per connection, and runs each operation as one
short transaction (:meth:`Connection.transaction`): it re-runs the whole transaction after a
deadlock or lock wait timeout, reconnects after a dropped connection, and turns every driver
error into a ``DatabaseError`` with the driver's error as ``__cause__`` and the password scrubbed
from the message. ``sql.SQLBackend`` holds one and writes the operations on it.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

from fastsched.backends.base import SCHEMA_VERSION
from fastsched.backends.callers import driver_exception
from fastsched.backends.dialect import DISCONNECTED, RETRY, Dialect
from fastsched.backends.sessions import record_session
from fastsched.backends.sqlfiles import MigrationStep, load_migration, load_queries, load_schema
from fastsched.dsn import DSN
from fastsched.errors import SchemaError

log = logging.getLogger(__name__)

T = TypeVar("T")

# Re-runs of a transaction after a deadlock, a lock wait timeout or (Galera) a certification
# failure. On one server a deadlock is rare; on a multi-primary cluster, losing certification to
# another node's write set is an ordinary outcome under contention, so there are more re-runs.
DEADLOCK_RETRIES = 8
DEADLOCK_BACKOFF = 0.005  # seconds before the first re-run, doubled for each next one, with jitter
DEADLOCK_BACKOFF_MAX = 0.2  # seconds: the jitter keeps two nodes that lost to each other out of step



class Connection:
    """A lazily opened connection of ``dialect`` and the transaction runner."""

    # --- the connection -----------------------------------------------------------------------
    def __init__(self, dsn: DSN, dialect: Dialect, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.dsn = dsn
        self.dialect = dialect
        self.queries = load_queries(dialect.name)
        self.sleep = sleep  # injected, for the backoff between re-runs
        self.conn: Any = None
        self._cursor: Any = None
        self._conn_pid = 0  # the process that opened conn
        self._schema_ok = False  # checked on this connection
        self.consecutive_ids = False  # on this connection: the ids of one multi-row INSERT
        # Transactions re-run after a deadlock or certification failure, since this object was made:
        # on Galera, the conflicts between nodes (docs/scaling.md).
        self.conflicts = 0
        # A master's (fastsched.backends.sessions): each connection opened is noted under it.
        self.session_prefix: str | None = None
        self._session_noted = False
        self._session_note: str | None = None  # the last note's name: its connection ends with the next

    def close(self) -> None:
        """Close the connection; the next operation opens a new one."""
        conn, self.conn, self._cursor = self.conn, None, None
        if conn is not None and self._conn_pid == os.getpid():
            try:
                conn.close()
            except Exception as exc:  # noqa: BLE001 - a broken connection is closed all the same
                log.debug("closing a broken connection: %s", exc)

    def cursor_ready(self, *, check_schema: bool = True) -> Any:
        """The cursor of an open connection (connecting first if needed), its schema checked."""
        if self.conn is None or self._conn_pid != os.getpid():
            self.conn = self._cursor = None  # after a fork: never use (or close) the parent's socket
            self._schema_ok = self._session_noted = False
            conn, self.consecutive_ids = self.dialect.connect(self.queries)
            self.conn, self._cursor, self._conn_pid = conn, conn.cursor(), os.getpid()
        if check_schema and not self._schema_ok:
            if not self.transaction(
                self.check_version, "checking the schema version", write=False, check_schema=False
            ):
                self.transaction(self._create_schema, "creating the schema", check_schema=False)
            self._schema_ok = True
        if self.session_prefix is not None and self._schema_ok and not self._session_noted:
            self._note_session(self.session_prefix)
        return self._cursor

    def _note_session(self, prefix: str) -> None:
        if not self.dialect.cuts_off_sessions:
            return
        self._session_noted = True  # the noting transaction opens no other connection to note
        ended = self._session_note if self._session_note and self._session_note.startswith(prefix) else None
        try:
            self._session_note = self.transaction(
                lambda cursor: record_session(cursor, self.queries, prefix, ended),
                "noting the master's connection", write=False, check_schema=False,
            )
        except BaseException:
            self._session_noted = False
            raise

    # --- the schema -----------------------------------------------------------------------------
    def init_schema(self) -> None:
        """Create the tables if missing and record SCHEMA_VERSION; SchemaError for another version
        (an older one is never migrated here: see :meth:`upgrade_schema`).

        A read first: where the schema is there (nearly always) no write transaction is needed, so
        opening a queue does not wait behind a writer (SQLite's one write lock, held for instance by
        an application's transaction that is adding jobs on its own connection)."""
        if not self.transaction(self.check_version, "init_schema", write=False, check_schema=False):
            self.transaction(self._create_schema, "init_schema", check_schema=False)
        self._schema_ok = True

    def upgrade_schema(self, cursor: Any = None) -> int | None:
        """:meth:`init_schema`, migrating an older schema to SCHEMA_VERSION first; the version found
        (None: there was no schema). With ``cursor`` (a caller's: Django's migration of
        ``fastsched.contrib.django``), every statement runs there, in the caller's transaction,
        and nothing is committed here.

        Only ``fastsched-pool init`` calls this: a migration rewrites workerqueue, so it is the
        operator's explicit step, taken with no pool running on the database (docs/operations.md).
        Each step is a transaction of its own, so on MySQL, where DDL commits implicitly, a run cut
        short leaves some done; the steps check what exists, so running it again finishes the job.
        The version is recorded last, and every other command refuses the database until then.
        """
        def run(work: Callable[[Any], T], what: str, write: bool = True) -> T:
            if cursor is not None:
                return work(cursor)
            return self.transaction(work, what, write=write, check_schema=False)

        found = run(self._schema_version, "reading the schema version", write=False)
        if found is not None and found < SCHEMA_VERSION:
            for version in range(found, SCHEMA_VERSION):
                steps = load_migration(self.dialect.name, version)
                if steps is None:
                    raise SchemaError(
                        f"the database {self.dsn} has fastsched schema version {found}, older than "
                        f"version {SCHEMA_VERSION} of this release, and no migration exists from "
                        f"version {version}"
                    )
                log.warning("migrating %s from fastsched schema version %d to %d", self.dsn, version, version + 1)
                for step in steps:
                    run(
                        functools.partial(self.migration_step, step),
                        f"migrating the schema from version {version} ({step.name})",
                    )
        if cursor is None:
            self.init_schema()
        else:
            self._create_schema(cursor)
        return found

    def migration_step(self, step: MigrationStep, cursor: Any) -> None:
        if step.done is not None:
            cursor.execute(step.done)
            if int(cursor.fetchone()[0]):
                log.info("schema migration step %s: already done", step.name)
                return
        for statement in step.statements:
            cursor.execute(statement)

    def _create_schema(self, cursor: Any) -> None:
        # Refuse another version before any DDL: on MySQL a CREATE TABLE would commit at once.
        self.check_version(cursor)
        for statement in load_schema(self.dialect.name):
            cursor.execute(statement)
        cursor.execute(self.queries["set_schema_version"], {"version": str(SCHEMA_VERSION)})
        self.check_version(cursor)

    def _schema_version(self, cursor: Any) -> int | None:
        """The recorded schema version; None when there is no schema yet."""
        try:
            cursor.execute(self.queries["schema_version"])
        except Exception as exc:  # any driver's, or Django's (on a caller's cursor)
            if not self.dialect.is_missing_table(driver_exception(exc)):
                raise
            return None
        row = cursor.fetchone()
        return None if row is None else int(row[0])

    def check_version(self, cursor: Any) -> bool:
        """False when there is no schema yet; SchemaError when it is of another version."""
        found = self._schema_version(cursor)
        if found is None:
            return False
        if found > SCHEMA_VERSION:
            raise SchemaError(
                f"the database {self.dsn} has fastsched schema version {found}, newer than version "
                f"{SCHEMA_VERSION} of this release: upgrade fastsched"
            )
        if found < SCHEMA_VERSION:
            raise SchemaError(
                f"the database {self.dsn} has fastsched schema version {found}, older than version "
                f"{SCHEMA_VERSION} of this release: stop every pool on it, then run `fastsched-pool "
                f"init` to migrate it (docs/operations.md, Upgrades)"
            )
        return True

    # --- transactions ---------------------------------------------------------------------------
    def transaction(
        self,
        work: Callable[[Any], T],
        what: str,
        *,
        write: bool = True,
        check_schema: bool = True,
        single_statement: bool = False,
    ) -> T:
        """Run ``work(cursor)`` in one transaction and commit it.

        A deadlock or lock wait timeout re-runs the whole transaction (DEADLOCK_RETRIES times, with
        backoff), and so does a Galera certification failure: error 1213 at COMMIT (or at any
        statement, when another node's write set aborted this transaction), after which nothing of
        the transaction was applied anywhere, so a claim that lost is re-run as a whole, never half
        applied, and an outcome that lost is written again. A dropped connection reconnects and re-runs it once, unless it dropped while
        committing: the outcome is unknown then, so DatabaseUnavailable, and the next operation
        reconnects. Other driver errors roll back and raise DatabaseError. ``what`` names the
        operation in messages; ``write`` starts a write transaction (SQLite: BEGIN IMMEDIATE).
        ``single_statement``: ``work`` runs one statement that commits itself in autocommit (one
        round trip, as a bare INSERT: add() is measured against one); a drop during it leaves its
        outcome unknown, as during a commit.
        """
        attempt = 0
        reconnected = False
        while True:
            cursor = self.cursor_ready(check_schema=check_schema)
            committing = single_statement
            try:
                if write and not single_statement:
                    self.dialect.begin(cursor)
                result = work(cursor)
                if self.dialect.in_transaction(self.conn):
                    committing = True
                    self.conn.commit()
                return result
            except self.dialect.driver_error as exc:
                kind = self.dialect.classify(exc)
                if kind == DISCONNECTED:
                    self.close()
                    if not committing and not reconnected:
                        reconnected = True
                        log.info("the database connection dropped during %s; reconnecting: %s", what, exc)
                        continue
                    raise self.dialect.wrap(exc, what) from exc
                self._rollback()
                if kind == RETRY and attempt < DEADLOCK_RETRIES:
                    backoff = min(DEADLOCK_BACKOFF * (2**attempt), DEADLOCK_BACKOFF_MAX)
                    delay = backoff * (1 + random.random())  # jitter, not crypto
                    attempt += 1
                    self.conflicts += 1
                    log.info("%s: %s; re-running the transaction in %.3f s", what, exc, delay)
                    self.sleep(delay)
                    continue
                raise self.dialect.wrap(exc, what) from exc
            except BaseException:
                self._rollback()
                raise

    def _rollback(self) -> None:
        if self.conn is None:
            return
        try:
            self.conn.rollback()
        except Exception as exc:  # noqa: BLE001 - the connection is gone: the server rolls back
            log.debug("rollback failed, dropping the connection: %s", exc)
            self.close()
