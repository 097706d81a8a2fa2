"""What differs between the databases: a dialect object, composed into ``sql.SQLBackend``.

A dialect carries its capabilities (what the server can do, which the storage and the master
consult instead of asking which backend they hold) and its hooks (connect, classify a driver
error, convert times, the rows of an INSERT, the claims' node on a cluster). The operations
themselves are written once, in ``sql.SQLBackend`` and its collaborators (``connection``,
``inserts``, ``controls``); ``mysql.MySQLDialect`` and ``sqlite.SQLiteDialect`` are the two
dialects. One dialect object per backend object: it may hold the state of its connection (the
Galera node it reached).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar

from fastsched.dsn import DSN
from fastsched.errors import DatabaseError, DatabaseUnavailable
from fastsched.jobs import NewJob

# What a driver error means for the transaction that raised it.
RETRY = "retry"  # deadlock, lock wait timeout, certification failure: nothing was applied; re-run
DISCONNECTED = "disconnected"  # the connection is gone: reconnect, re-run unless it was committing
FAILED = "failed"  # anything else: roll back, raise DatabaseError


class Dialect:
    """The defaults of every hook; a dialect overrides what its server does otherwise."""

    name: ClassVar[str]  # "mysql" or "sqlite": its directory in fastsched/sql/, its DSN scheme
    driver_error: ClassVar[type[Exception]]  # the root of the driver's exceptions

    # --- capabilities -------------------------------------------------------------------------
    concurrent_connections: ClassVar[int] = 1
    """Write transactions the server runs at the same time on connections of their own (1: one
    writer at a time). The master splits big claims over that many, and writes its outcomes on a
    connection of their own beside the claims where there is more than one."""
    caller_dedup_locks_rows: ClassVar[bool] = False
    """An upsert that meets a duplicate locks that row until the caller commits (InnoDB): a running
    job's row would then block its master's completion for as long as the caller's transaction,
    so add_many on a caller's connection hands running duplicates over on its own first."""

    one_host: ClassVar[bool] = False
    """Every master of the database runs on one machine (SQLite: a file whose locks and shared
    memory only one machine's processes share). There a master whose database is merely busy
    (another connection holds the write lock) is no outage: no other master can take its claims
    meanwhile, and one on the same machine tells by its pid that it lives."""

    cuts_off_sessions: ClassVar[bool] = False
    """A master's connections are noted, and the recovery of a dead master kills them
    (fastsched.backends.sessions): another process's transaction can hold rows locked for as long
    as its connection lives, which outlives a stopped or cut-off master."""

    def __init__(self, dsn: DSN) -> None:
        self.dsn = dsn

    def fresh(self) -> Dialect:
        """A dialect of the same kind for another connection (``open_sibling``)."""
        return type(self)(self.dsn)

    # --- hooks --------------------------------------------------------------------------------
    def connect(self, queries: dict[str, str]) -> tuple[Any, bool]:
        """A new connection, set up (isolation, pragmas, server checks) with the dialect's named
        ``queries``, and whether the ids of one multi-row INSERT are consecutive on it. Raise
        DatabaseError (or a subclass) on failure."""
        raise NotImplementedError

    def classify(self, exc: BaseException) -> str:
        """RETRY, DISCONNECTED or FAILED, for a driver error."""
        raise NotImplementedError

    def error_code(self, exc: BaseException) -> int | None:
        """The server's error number of a driver error (both MySQL drivers: its first argument)."""
        args = getattr(exc, "args", ())
        return args[0] if args and isinstance(args[0], int) else None

    def is_missing_table(self, exc: BaseException) -> bool:
        """Whether a driver error says that a table does not exist (no schema yet)."""
        raise NotImplementedError

    def begin(self, cursor: Any) -> None:
        """Start a write transaction."""

    def in_transaction(self, conn: Any) -> bool:
        """Whether a transaction is open on ``conn``: reads and single statements ran in
        autocommit, and committing them would only cost a round trip."""
        return True

    def from_db_time(self, value: Any) -> dt.datetime:
        """A stored time (never NULL) as a datetime: as the driver returns it, by default."""
        return value  # type: ignore[no-any-return]

    def to_db_time(self, value: dt.datetime | None) -> Any:
        """A datetime as the driver should receive it; None: the server's clock (the queries
        take UTC_TIMESTAMP(6) for NULL, see fastsched.dbclock)."""
        return value

    def job_row(self, job: NewJob) -> tuple[Any, ...]:
        """The add_jobs parameters: command, parameter, priority, dedup_hash, queue, created,
        next_try, and the delay in microseconds (added to the server's clock when next_try is None)."""
        return (job[0], job[1], job[2], job[5], job[7], job[3], job[4], job[9])

    def insert_rows(self, cursor: Any, query: str, params: list[tuple[Any, ...]]) -> None:
        """Run the one-row INSERT ``query`` for every row of ``params``: ONE statement."""
        cursor.executemany(query, params)

    def first_insert_id(self, cursor: Any, rows: int, queries: dict[str, str]) -> int:
        """The id of the first of the ``rows`` rows that the last add_jobs inserted, all of them."""
        raise NotImplementedError

    def server_consecutive_ids(self, cursor: Any, queries: dict[str, str]) -> bool:
        """Whether the server gives the rows of one multi-row INSERT consecutive ids (asked on a
        caller's connection: see ``callers``)."""
        return True

    def claim_query(self, cursor: Any, queries: dict[str, str]) -> str:
        """The locking read of a claim of one priority from every queue, with no share: the
        dialect may pick a cheaper form for what it finds in the transaction so far."""
        return queries["claim_priority"]

    def read_claim(self, cursor: Any, queries: dict[str, str], params: dict[str, Any]) -> list[Any]:
        """The rows (claim_columns) of a claim of one priority from every queue, with no share,
        locked until the transaction ends."""
        cursor.execute(self.claim_query(cursor, queries), params)
        return list(cursor.fetchall())

    def claim_node(self) -> str | None:
        """The database node the current connection writes on, where masters on other nodes of
        the same database must claim other rows (Galera: two nodes that claim the same rows lose
        certification to each other; fastsched.backends.shares). None: one server, whose own locks
        keep claims apart."""
        return None

    # --- errors -------------------------------------------------------------------------------
    def scrub(self, text: str) -> str:
        """``text`` with the DSN's password masked."""
        password = self.dsn.password
        return text.replace(password, "***") if password else text

    def wrap(self, exc: BaseException, what: str) -> DatabaseError:
        """The fastsched error for a driver error; the password never appears in its message."""
        error = DatabaseUnavailable if self.classify(exc) == DISCONNECTED else DatabaseError
        return error(self.scrub(f"{what} failed on {self.dsn}: {exc}"))
