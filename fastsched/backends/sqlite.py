"""SQLite through the stdlib ``sqlite3``, the embedded default: ``SQLiteDialect``, and ``SQLiteBackend``, SQLBackend on it.

The file runs in WAL mode (readers never block the writer) with synchronous=FULL (a committed job
survives a power loss). Write transactions start with BEGIN IMMEDIATE: SQLite has one writer at a
time and no SKIP LOCKED, so a claim simply waits (up to BUSY_TIMEOUT) for the writer before it.
Times are stored as fixed-width UTC text, ``YYYY-MM-DD HH:MM:SS.ffffff``, so that they sort.
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from fastsched.backends.dialect import DISCONNECTED, FAILED, RETRY, Dialect
from fastsched.backends.sql import SQLBackend
from fastsched.backends.sqlfiles import split_statements
from fastsched.dbclock import MICROSECOND, utcnow
from fastsched.dsn import DSN
from fastsched.errors import UnsupportedServer
from fastsched.jobs import NewJob

BUSY_TIMEOUT = 10.0  # seconds a statement waits for another connection's write lock
MIN_SQLITE = (3, 24)  # UPSERT (INSERT ... ON CONFLICT DO UPDATE)
SQLITE_LOCKED = 6
SQLITE_CANTOPEN = 14


def _db_time(value: dt.datetime) -> str:
    return value.isoformat(" ", "microseconds")


class SQLiteDialect(Dialect):
    """SQLite: one writer at a time (BEGIN IMMEDIATE), one host, times stored as text."""

    name = "sqlite"
    driver_error = sqlite3.Error
    one_host = True

    def from_db_time(self, value: Any) -> dt.datetime:
        return dt.datetime.fromisoformat(value)

    def connect(self, queries: dict[str, str]) -> tuple[Any, bool]:
        path = self.dsn.database
        try:
            conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise self.wrap(exc, f"opening {os.path.abspath(path)}") from exc
        try:
            found = tuple(int(part) for part in sqlite3.sqlite_version.split(".")[:2])
            if found < MIN_SQLITE:
                raise UnsupportedServer(
                    f"the SQLite library is version {sqlite3.sqlite_version}: fastsched needs "
                    f"{MIN_SQLITE[0]}.{MIN_SQLITE[1]}+"
                )
            for statement in split_statements(queries["session_setup"]):
                conn.execute(statement).fetchall()
        except sqlite3.Error as exc:
            conn.close()
            raise self.wrap(exc, f"setting up {os.path.abspath(path)}") from exc
        except BaseException:
            conn.close()
            raise
        return conn, True  # BEGIN IMMEDIATE: nobody else inserts while we do

    def begin(self, cursor: Any) -> None:
        cursor.execute("BEGIN IMMEDIATE")

    def in_transaction(self, conn: Any) -> bool:
        return bool(conn.in_transaction)

    def claim_query(self, cursor: Any, queries: dict[str, str]) -> str:
        """claim_priority, without its per-row pause check when no pause names a command or a queue
        (read under the claim's write lock, BEGIN IMMEDIATE: no pause comes in between)."""
        cursor.execute(queries["narrow_pause_exists"])
        return queries["claim_priority" if cursor.fetchone() is not None else "claim_priority_unnarrowed"]

    def classify(self, exc: BaseException) -> str:
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None:
            code &= 0xFF  # the primary result code of an extended one
        if code == SQLITE_CANTOPEN or isinstance(exc, sqlite3.ProgrammingError) and "closed" in str(exc):
            return DISCONNECTED
        if code == SQLITE_LOCKED:
            return RETRY  # a shared-cache table lock: brief, unlike BUSY (already waited BUSY_TIMEOUT)
        return FAILED

    def is_missing_table(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.OperationalError) and "no such table" in str(exc)

    def to_db_time(self, value: dt.datetime | None) -> str:
        return _db_time(utcnow() if value is None else value)  # one host: its clock is the server's

    def job_row(self, job: NewJob) -> tuple[Any, ...]:
        now = utcnow()
        created = now if job.created is None else job.created
        next_try = now + job.delay_us * MICROSECOND if job.next_try is None else job.next_try
        return (job[0], job[1], job[2], _db_time(created), _db_time(next_try), job[5], job[7])

    def first_insert_id(self, cursor: Any, rows: int, queries: dict[str, str]) -> int:
        cursor.execute(queries["last_insert_id"])
        return int(cursor.fetchone()[0]) - rows + 1


class SQLiteBackend(SQLBackend):
    """``SQLBackend`` on SQLite: ``SQLiteBackend(dsn)``."""

    def __init__(
        self, dsn: DSN, dialect: SQLiteDialect | None = None, *, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        super().__init__(dsn, dialect or SQLiteDialect(dsn), sleep=sleep)
