"""MariaDB 10.6+ / MySQL 8.0+ through pymysql: the dialect hooks of ``SQLBackend``.

The connection runs in autocommit with explicit BEGIN for transactions, READ COMMITTED (claims with SKIP LOCKED then take no gap
locks), utf8mb4 and time_zone '+00:00'. Older servers are refused: claiming needs SKIP LOCKED.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pymysql
import pymysql.converters
import pymysql.cursors
from pymysql.constants import FIELD_TYPE, SERVER_STATUS

from fastsched.backends.connection import DISCONNECTED, FAILED, RETRY
from fastsched.backends.sql import SQLBackend
from fastsched.backends.sqlfiles import split_statements
from fastsched.errors import ConfigError, UnsupportedServer

DEFAULT_CONNECT_TIMEOUT = 10  # seconds
MAX_TIMEOUT = 31_536_000  # seconds (a year): the largest timeout pymysql accepts
MIN_MARIADB = (10, 6)
MIN_MYSQL = (8, 0)
# Consecutive ids for the rows of one multi-row INSERT: "traditional" (0) and "consecutive" (1).
CONSECUTIVE_AUTOINC_MODES = (0, 1)

RETRY_CODES = frozenset({1205, 1213})  # lock wait timeout, deadlock: the transaction is rolled back
DISCONNECT_CODES = frozenset(
    {
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
# DSN query options passed to pymysql.connect, with their types.
OPTIONS = {
    "connect_timeout": float,
    "read_timeout": float,
    "write_timeout": float,
    "unix_socket": str,
}
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


class Cursor(pymysql.cursors.Cursor):
    """pymysql's tuple cursor that never splits an executemany INSERT into several statements:
    add_many sizes its chunks itself (well under any max_allowed_packet), and reads the affected
    rows and the first id of exactly one statement."""

    max_stmt_length = 1 << 30


def _error_code(exc: BaseException) -> int | None:
    args = getattr(exc, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


class MySQLBackend(SQLBackend):
    dialect = "mysql"
    driver_error = pymysql.MySQLError
    claim_connections = 2

    def _connect_kwargs(self) -> dict[str, Any]:
        dsn = self.dsn
        kwargs: dict[str, Any] = {
            "host": dsn.host,
            "port": dsn.port,
            "user": dsn.user,
            "password": dsn.password,
            "database": dsn.database,
            "charset": "utf8mb4",
            "autocommit": True,  # transactions BEGIN explicitly; reads and single inserts skip COMMIT
            "connect_timeout": DEFAULT_CONNECT_TIMEOUT,
            "cursorclass": Cursor,
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

    def _connect(self) -> tuple[Any, bool]:
        try:
            conn = pymysql.connect(**self._connect_kwargs())
        except pymysql.MySQLError as exc:
            raise self._wrap(exc, "connecting") from exc
        try:
            with conn.cursor() as cursor:
                cursor.execute(self._q["server_info"])
                version, autoinc_mode = cursor.fetchone()
                check_server_version(str(version))
                for statement in split_statements(self._q["session_setup"]):
                    cursor.execute(statement)
            conn.commit()
        except pymysql.MySQLError as exc:
            conn.close()
            raise self._wrap(exc, "setting up the connection") from exc
        except BaseException:
            conn.close()
            raise
        return conn, int(autoinc_mode) in CONSECUTIVE_AUTOINC_MODES

    def _begin(self, cursor: Any) -> None:
        cursor.execute("BEGIN")

    def _in_transaction(self) -> bool:
        return bool(self._conn.server_status & SERVER_STATUS.SERVER_STATUS_IN_TRANS)

    def _classify(self, exc: BaseException) -> str:
        if isinstance(exc, pymysql.InterfaceError):  # used after the socket closed
            return DISCONNECTED
        code = _error_code(exc)
        if code in RETRY_CODES:
            return RETRY
        if code in DISCONNECT_CODES:
            return DISCONNECTED
        return FAILED

    def _is_missing_table(self, exc: BaseException) -> bool:
        return _error_code(exc) == MISSING_TABLE

    def _first_insert_id(self, cursor: Any, rows: int) -> int:
        return int(cursor.lastrowid)  # a multi-row INSERT reports the id of its first row

    def _server_consecutive_ids(self, cursor: Any) -> bool:
        cursor.execute(self._q["server_info"])
        return int(cursor.fetchone()[1]) in CONSECUTIVE_AUTOINC_MODES
