"""MariaDB 10.6+ / MySQL 8.0+ through pymysql: ``MySQLDialect``, and ``MySQLBackend``, SQLBackend on it.

The connection runs in autocommit with explicit BEGIN for transactions (sent with a transaction's
first statement, one round trip), READ COMMITTED (claims with SKIP LOCKED then take no gap
locks), utf8mb4 and time_zone '+00:00'. Older servers are refused: claiming needs SKIP LOCKED.

A DSN may name several nodes of a MariaDB Galera cluster (``mysql://u:pw@h1:3306,h2:3306/db``): a
connection goes to the first node that answers and is ready (``wsrep_ready`` ON, in the Primary
component), in the DSN's order, and after losing its node (dropped, or error 1047: the node left
the Primary component) the next connection goes to the next ready one. A new connection to a
Galera node first waits for the node to apply what the cluster committed before (a causal read),
so that a master that moved sees its own claims and outcomes there.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import re
import ssl
import time
from collections.abc import Callable
from typing import Any

import pymysql
import pymysql.converters
import pymysql.cursors
from pymysql.constants import CLIENT, FIELD_TYPE, SERVER_STATUS

from fastsched.backends.dialect import DISCONNECTED, FAILED, RETRY, Dialect
from fastsched.backends.sql import SQLBackend
from fastsched.backends.sqlfiles import expand_rows, split_statements
from fastsched.dsn import DSN
from fastsched.errors import ConfigError, DatabaseUnavailable, UnsupportedServer
from fastsched.jobs import ClaimedJob

log = logging.getLogger(__name__)

DEFAULT_CONNECT_TIMEOUT = 10  # seconds
MAX_TIMEOUT = 31_536_000  # seconds (a year): the largest timeout pymysql accepts
MIN_MARIADB = (10, 6)
MIN_MYSQL = (8, 0)
# Consecutive ids for the rows of one multi-row INSERT: "traditional" (0) and "consecutive" (1).
CONSECUTIVE_AUTOINC_MODES = (0, 1)

RETRY_CODES = frozenset({1205, 1213})  # lock wait timeout, deadlock: the transaction is rolled back
DISCONNECT_CODES = frozenset(
    {
        1047,  # WSREP has not yet prepared node for application use: out of the Primary component
        1053,  # server shutdown in progress
        1927,  # connection was killed (MariaDB)
        2002,  # can't connect through the socket
        2003,  # can't connect to the server
        2005,  # unknown server host
        2006,  # server has gone away
        2013,  # lost connection during query
        2055,  # lost connection at an initial handshake
        4031,  # disconnected for inactivity (MySQL 8)
    }
)
MISSING_TABLE = 1146
# Galera, at connect (MariaDB only: MySQL has no wsrep_on). The causal read returns once the node
# has applied every write set committed in the cluster before it.
GALERA_ON = "SELECT @@wsrep_on"
GALERA_STATUS = (
    "SHOW GLOBAL STATUS WHERE Variable_name IN ('wsrep_ready', 'wsrep_cluster_status', "
    "'wsrep_local_state_comment', 'wsrep_gcomm_uuid')"
)
CAUSAL_WAIT = ("SET SESSION wsrep_sync_wait = 1", "SELECT 1", "SET SESSION wsrep_sync_wait = DEFAULT")
# DSN query options passed to pymysql.connect, with their types.
OPTIONS = {
    "connect_timeout": float,
    "read_timeout": float,
    "write_timeout": float,
    "unix_socket": str,
}
# A claim of fewer rows reads them as rows: the packed form's derived table costs the server about
# 0.4 ms more a claim (1 row: 0.80 against 0.44 ms; 16: 0.97 against 0.57), which one job's way
# from add() to its start pays, and saves the master 12 µs of decoding a row (the drains' claims
# are of hundreds). Measured on MariaDB 10.11, the shared 2-core VM, load 2.6.
PACKED_CLAIM_MIN_ROWS = 32
CLAIM_WIDTH = len(ClaimedJob._fields)  # claim_columns: claim_priority selects next_try after them
_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


def check_server_version(version: str) -> None:
    """Raise UnsupportedServer unless ``version`` (SELECT VERSION()) is MariaDB 10.6+ or MySQL 8.0+."""
    text = version.removeprefix("5.5.5-")  # old MariaDB replication prefix
    match = _VERSION.match(text)
    mariadb = "mariadb" in text.lower()
    minimum = MIN_MARIADB if mariadb else MIN_MYSQL
    if match is None or (int(match.group(1)), int(match.group(2))) < minimum:
        name = "MariaDB" if mariadb else "MySQL"
        raise UnsupportedServer(
            f"the database server is {name} {version}: fastsched needs MariaDB "
            f"{MIN_MARIADB[0]}.{MIN_MARIADB[1]}+ or MySQL {MIN_MYSQL[0]}.{MIN_MYSQL[1]}+ "
            f"(claiming uses SELECT ... FOR UPDATE SKIP LOCKED)"
        )


def _datetime(text: str) -> Any:
    """DATETIME(6) text to a datetime, in C (pymysql's own converter runs a regex per value)."""
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        return pymysql.converters.convert_datetime(text)  # zero dates and other oddities, as pymysql does


# pymysql's conversions with the fast DATETIME decoder: claims read one per job.
CONVERSIONS = {**pymysql.converters.conversions, FIELD_TYPE.DATETIME: _datetime}


@functools.cache
def _preferred_tls() -> ssl.SSLContext:
    """The TLS context of pymysql's preferred mode (no ssl options: TLS if the server offers it,
    nothing verified), made once per process."""
    context: ssl.SSLContext = _PyMySQLConnection._create_ssl_ctx(None, {})
    return context


_PyMySQLConnection: Any = pymysql.connections.Connection  # its stub lacks _create_ssl_ctx


class _Connection(_PyMySQLConnection):  # type: ignore[misc]
    """pymysql's connection, sharing one preferred-mode TLS context: pymysql makes a context per
    connection, loading the system's CA certificates for one that verifies nothing, 44 ms of CPU
    each time (a master opens four or more connections). Explicit ssl options get their own."""

    def _create_ssl_ctx(self, sslp: Any) -> ssl.SSLContext:
        if isinstance(sslp, dict) and not sslp:
            return _preferred_tls()
        context: ssl.SSLContext = super()._create_ssl_ctx(sslp)
        return context


class Cursor(pymysql.cursors.Cursor):
    """pymysql's tuple cursor that never splits an executemany INSERT into several statements:
    add_many sizes its chunks itself (well under any max_allowed_packet), and reads the affected
    rows and the first id of exactly one statement."""

    max_stmt_length = 1 << 30

    def execute(self, query: str, args: Any = None) -> int:
        conn: Any = self.connection
        if not getattr(conn, "begin_pending", False):
            return super().execute(query, args)
        conn.begin_pending = False
        super().execute("BEGIN;" + query, args)
        self.nextset()  # the statement's own result (or its error) follows BEGIN's
        return self.rowcount


def _node_name(node: tuple[str, int]) -> str:
    host, port = node
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class NodeNotReady(DatabaseUnavailable):
    """The Galera node answers but is not ready for queries (not synced, or not in the Primary component)."""


class MySQLDialect(Dialect):
    """MariaDB/MySQL: several writers at once, SKIP LOCKED, the server's clock, Galera nodes."""

    name = "mysql"
    driver_error = pymysql.MySQLError
    concurrent_connections = 2
    caller_dedup_locks_rows = True
    cuts_off_sessions = True

    def __init__(self, dsn: DSN) -> None:
        super().__init__(dsn)
        self.node = 0  # the index in dsn.nodes of the node of the current (or last) connection
        self.galera = False  # whether the current (or last) connection's server is a Galera node
        self.galera_node = ""  # that node's gcomm UUID, which no other node of the cluster has
        # The server orders a JSON_ARRAYAGG (MariaDB): a claim's rows come in one value (read_claim).
        self.packed_claims = False

    def read_claim(self, cursor: Any, queries: dict[str, str], params: dict[str, Any]) -> list[Any]:
        """On MariaDB, a claim of PACKED_CLAIM_MIN_ROWS or more by claim_priority_packed: the
        claim's rows in one value. Where that value is not
        whole (a result over max_allowed_packet is NULL, one over group_concat_max_len cut short),
        the rows are read again one by one in the same transaction: the ones it locked are ours to
        read, and any it locked beyond them are let go unclaimed at the commit."""
        if self.packed_claims and params["limit"] >= PACKED_CLAIM_MIN_ROWS:
            cursor.execute(queries["claim_priority_packed"], params)
            count, packed = cursor.fetchone()
            if not count:
                return []
            try:
                rows = json.loads(packed)
            except (TypeError, ValueError):
                rows = None
            if isinstance(rows, list) and len(rows) == count:
                return rows
            log.warning("a claim's %d rows did not fit in one value: read one by one", count)
        cursor.execute(queries["claim_priority"], params)
        return [row[:CLAIM_WIDTH] for row in cursor.fetchall()]

    def _connect_kwargs(self, node: int = 0) -> dict[str, Any]:
        dsn = self.dsn
        host, port = dsn.nodes[node]
        kwargs: dict[str, Any] = {
            "host": host,
            "port": port,
            "user": dsn.user,
            "password": dsn.password,
            "database": dsn.database,
            "charset": "utf8mb4",
            "autocommit": True,  # transactions BEGIN explicitly; reads and single inserts skip COMMIT
            "connect_timeout": DEFAULT_CONNECT_TIMEOUT,
            "cursorclass": Cursor,
            # Only for a transaction's BEGIN with its first statement (MySQLDialect.begin): every
            # other text sent is one statement, its values escaped by the driver.
            "client_flag": CLIENT.MULTI_STATEMENTS,
            "conv": CONVERSIONS,
        }
        for key, value in dsn.options:
            kind = OPTIONS.get(key)
            if kind is None:
                raise ConfigError(
                    f"unknown MySQL DSN option {key!r}: use one of {', '.join(sorted(OPTIONS))}"
                )
            try:
                kwargs[key] = kind(value)
            except ValueError:
                raise ConfigError(
                    f"MySQL DSN option {key!r} must be a {kind.__name__}, got {value!r}"
                ) from None
            # pymysql itself would raise a bare ValueError (or OverflowError, for inf) at connect time.
            if kind is float and not 0 < kwargs[key] <= MAX_TIMEOUT:
                raise ConfigError(
                    f"MySQL DSN option {key!r} must be a number of seconds above 0 and at most "
                    f"{MAX_TIMEOUT}, got {value!r}"
                )
        return kwargs

    def connect(self, queries: dict[str, str]) -> tuple[Any, bool]:
        """The first node, in the DSN's order, that answers and is ready."""
        nodes = self.dsn.nodes
        if len(nodes) == 1:
            return self._connect_node(0, queries)
        failures = []
        for index in range(len(nodes)):
            try:
                connected = self._connect_node(index, queries)
            except DatabaseUnavailable as exc:
                failures.append(f"{_node_name(nodes[index])}: {self.scrub(str(exc.__cause__ or exc))}")
                continue
            if index != self.node:
                log.warning("connected to node %s of %s", _node_name(nodes[index]), self.dsn)
            self.node = index
            return connected
        raise DatabaseUnavailable(f"connecting failed on {self.dsn}: no node is reachable and ready ({'; '.join(failures)})")

    def _connect_node(self, node: int, queries: dict[str, str]) -> tuple[Any, bool]:
        try:
            conn = _Connection(**self._connect_kwargs(node))
        except pymysql.MySQLError as exc:
            raise self.wrap(exc, "connecting") from exc
        try:
            with conn.cursor() as cursor:
                cursor.execute(queries["server_info"])
                version, autoinc_mode, increment = cursor.fetchone()
                check_server_version(str(version))
                self.packed_claims = "mariadb" in str(version).lower()
                for statement in split_statements(queries["session_setup"]):
                    cursor.execute(statement)
                self._galera_ready(cursor, str(version), node)
            conn.commit()
        except pymysql.MySQLError as exc:
            conn.close()
            raise self.wrap(exc, "setting up the connection") from exc
        except BaseException:
            conn.close()
            raise
        return conn, int(autoinc_mode) in CONSECUTIVE_AUTOINC_MODES and int(increment) == 1

    def _galera_ready(self, cursor: Any, version: str, node: int) -> None:
        """Note whether the server is a Galera node, and which; raise NodeNotReady for a node that
        is not ready; after a causal read, return."""
        self.galera, self.galera_node = False, ""
        if "mariadb" not in version.lower():
            return
        cursor.execute(GALERA_ON)
        if not int(cursor.fetchone()[0]):
            return
        cursor.execute(GALERA_STATUS)
        status = {str(name).lower(): str(value) for name, value in cursor.fetchall()}
        if status.get("wsrep_ready") != "ON" or status.get("wsrep_cluster_status") != "Primary":
            raise NodeNotReady(
                f"the Galera node {_node_name(self.dsn.nodes[node])} of {self.dsn} is not ready "
                f"(wsrep_ready {status.get('wsrep_ready')}, cluster status {status.get('wsrep_cluster_status')}, "
                f"state {status.get('wsrep_local_state_comment')})"
            )
        for statement in CAUSAL_WAIT:
            cursor.execute(statement)
        self.galera = True
        # Unique per node (and per start of it); the DSN's host:port names the node if it has none.
        self.galera_node = status.get("wsrep_gcomm_uuid") or _node_name(self.dsn.nodes[node])

    def claim_node(self) -> str | None:
        """The Galera node of the current connection (its gcomm UUID); None on one server."""
        return self.galera_node if self.galera else None

    def begin(self, cursor: Any) -> None:
        # Sent with the transaction's first statement, in one round trip (Cursor.execute; the
        # connection has CLIENT.MULTI_STATEMENTS): a claim on the way to a job's start waits for one
        # round trip less, and every write transaction sends one packet less.
        cursor.connection.begin_pending = True

    def in_transaction(self, conn: Any) -> bool:
        conn.begin_pending = False  # a transaction that ran no statement began none
        return bool(conn.server_status & SERVER_STATUS.SERVER_STATUS_IN_TRANS)

    def classify(self, exc: BaseException) -> str:
        if isinstance(exc, pymysql.InterfaceError):  # used after the socket closed
            return DISCONNECTED
        code = self.error_code(exc)
        if code in RETRY_CODES:
            return RETRY
        if code in DISCONNECT_CODES:
            return DISCONNECTED
        return FAILED

    def is_missing_table(self, exc: BaseException) -> bool:
        return self.error_code(exc) == MISSING_TABLE

    def insert_rows(self, cursor: Any, query: str, params: list[tuple[Any, ...]]) -> None:
        # The drivers' executemany folds rows into one INSERT only when VALUES holds bare
        # placeholders; ours take the server's clock (COALESCE(..., UTC_TIMESTAMP(6))), so the
        # rows are folded here: the row's placeholders once per row, the parameters in a row.
        cursor.execute(expand_rows(query, len(params)), [value for row in params for value in row])

    def first_insert_id(self, cursor: Any, rows: int, queries: dict[str, str]) -> int:
        return int(cursor.lastrowid)  # a multi-row INSERT reports the id of its first row

    def server_consecutive_ids(self, cursor: Any, queries: dict[str, str]) -> bool:
        cursor.execute(queries["server_info"])
        return int(cursor.fetchone()[1]) in CONSECUTIVE_AUTOINC_MODES


class MySQLBackend(SQLBackend):
    """``SQLBackend`` on MariaDB/MySQL: ``MySQLBackend(dsn)`` (``dialect``: a MySQLDialect of one's
    own, such as a test's)."""

    def __init__(
        self, dsn: DSN, dialect: MySQLDialect | None = None, *, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        super().__init__(dsn, dialect or MySQLDialect(dsn), sleep=sleep)
