"""A caller's own connection (``add(..., connection=conn)``): which driver it is, and a cursor on it.

Accepted, for a MySQL/MariaDB queue: a connection of pymysql, mysqlclient (``MySQLdb``) or
mysql-connector-python; for a SQLite queue: a ``sqlite3.Connection``; for either, a Django database
connection of that vendor (``django.db.connection``, ``connections[alias]``), used through Django's
own cursor so that its error wrapping, query logging and execute wrappers apply. The rows go through
that connection, inside whatever transaction it has open, and nothing here commits or rolls back.

Every driver difference that the insert path must know lives here, and drivers are recognized by
the module of the connection's class, so none is imported to be compared with (the caller's driver
is loaded already):

* a cursor of plain tuples, whatever cursor class the caller's connection defaults to;
* one executemany INSERT is ONE statement: pymysql and mysqlclient would split a long one at
  ``max_stmt_length`` (64 KiB for mysqlclient), and the affected rows and first id would then be
  those of the last part only;
* whether the affected rows count the duplicates an upsert left unchanged (the CLIENT_FOUND_ROWS
  flag, which Django's MySQL backend sets): then they cannot tell inserted rows from duplicates;
* the connection's character set: text it cannot carry is refused before anything is sent, since
  the server would reject it, or worse, store ``?`` in its place (Django's MySQL default is utf8,
  that is utf8mb3, which has no room for characters outside the Basic Multilingual Plane).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from typing import Any

from fastsched.errors import InvalidInput
from fastsched.jobs import NewJob

CLIENT_FOUND_ROWS = 2  # the MySQL protocol's capability flag
ONE_STATEMENT = 1 << 30  # bytes: never split an executemany INSERT (add_many bounds its chunks itself)

# The module a connection's class comes from -> the driver's name in messages.
MYSQL_DRIVERS = {"pymysql": "pymysql", "MySQLdb": "mysqlclient (MySQLdb)", "mysql": "mysql-connector-python"}
SQLITE_DRIVERS = {"sqlite3": "sqlite3"}
DJANGO_VENDORS = {"mysql": "mysql", "sqlite": "sqlite"}  # Django's connection.vendor -> our dialect
_ACCEPTED = {
    "mysql": "a pymysql, mysqlclient (MySQLdb) or mysql-connector-python connection, or a Django MySQL connection,",
    "sqlite": "a sqlite3.Connection, or a Django SQLite connection,",
}
_OUTSIDE_BMP = re.compile("[\U00010000-\U0010ffff]")


def _root(obj: object) -> str:
    """The top-level package of the class (or a base class) of ``obj``; "" if none is a driver's."""
    for cls in type(obj).__mro__[:-1]:
        root = cls.__module__.split(".")[0]
        if root in MYSQL_DRIVERS or root in SQLITE_DRIVERS or root == "django":
            return root
    return ""


def _from_django(obj: object) -> bool:
    """Whether ``obj`` is of a class built on Django's: a database backend of a driver's package
    (mysql-connector's ``mysql.connector.django``) subclasses Django's base classes."""
    return any(cls.__module__.split(".")[0] == "django" for cls in type(obj).__mro__[:-1])


def _is_django(connection: object) -> bool:
    return _from_django(connection) and hasattr(connection, "vendor") and hasattr(connection, "cursor")


def check(connection: object, dialect: str) -> None:
    """InvalidInput unless ``connection`` is one this module can use for a ``dialect`` queue."""
    if _is_django(connection):
        vendor = str(getattr(connection, "vendor", ""))
        if DJANGO_VENDORS.get(vendor) == dialect:
            return
        raise InvalidInput(
            f"connection must be {_ACCEPTED[dialect]} to this queue's database, got a Django "
            f"{vendor or 'unknown'} connection"
        )
    drivers = MYSQL_DRIVERS if dialect == "mysql" else SQLITE_DRIVERS
    root = _root(connection)
    if root not in drivers or not hasattr(connection, "cursor"):
        raise InvalidInput(
            f"connection must be {_ACCEPTED[dialect]} to this queue's database, got {_type_name(connection)}"
        )


def _type_name(obj: object) -> str:
    """``sqlite3.Connection``, ``pymysql.connections.Connection``; ``str`` for a builtin."""
    cls = type(obj)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


class CallerCursor:
    """A caller's connection as the insert path sees it: :meth:`open` makes the cursor (it may
    raise one of ``errors``, as any statement may) and reads what the insert path must know."""

    cursor: Any = None
    # The rows of one executemany INSERT get consecutive ids (as far as the connection can tell:
    # the server's auto-increment mode is the backend's to check).
    consecutive = True
    found_rows = False  # affected rows count the unchanged duplicates of an upsert too
    charset = ""  # "" when the driver does not say

    def __init__(self, connection: Any, errors: tuple[type[BaseException], ...]) -> None:
        self.connection = connection
        self.errors = errors  # what its statements raise

    def open(self) -> None:
        connection = self.connection
        if _is_django(connection):
            self.cursor = connection.cursor()  # Django's own: connects if needed
            raw = connection.connection
            inner = self.cursor
            while _from_django(inner) and hasattr(inner, "cursor"):  # Django's wrappers, then the driver's
                inner = inner.cursor
        else:
            raw = connection
            self.cursor = inner = _tuple_cursor(connection)
        if _root(raw) == "sqlite3":
            inner.row_factory = None
            self.consecutive = _sqlite_consecutive(raw)
        else:
            inner.max_stmt_length = ONE_STATEMENT  # read by pymysql's and mysqlclient's executemany
            self.found_rows = _found_rows(raw)
            self.charset = _charset(raw)

    def check_text(self, jobs: Sequence[NewJob]) -> None:
        """InvalidInput if a job's text cannot pass through this connection's character set."""
        charset = self.charset.lower()
        if not charset or charset == "utf8mb4":
            return
        for job in jobs:
            text = job.parameter
            if text.isascii():
                continue
            if charset in ("utf8", "utf8mb3"):
                if _OUTSIDE_BMP.search(text) is None:
                    continue
                raise InvalidInput(
                    f"args of {job.command!r} hold characters outside the Basic Multilingual Plane (an emoji?), "
                    f"which the connection's character set {self.charset} cannot carry: connect with "
                    f"charset utf8mb4 (Django: DATABASES[...]['OPTIONS'] = {{'charset': 'utf8mb4'}})"
                )
            raise InvalidInput(
                f"args of {job.command!r} hold non-ASCII text, which the connection's character set "
                f"{self.charset} may not carry: connect with charset utf8mb4"
            )

    def close(self) -> None:
        if self.cursor is None:
            return
        try:
            self.cursor.close()
        except Exception:  # noqa: BLE001, S110 - a broken connection's cursor: the error that broke it is raised already
            pass


def caller_cursor(connection: Any, dialect: str) -> CallerCursor:
    """The CallerCursor of ``connection``, not opened yet (no I/O); InvalidInput for a connection
    that is not of a driver for ``dialect``."""
    check(connection, dialect)
    if _is_django(connection):
        errors: tuple[type[BaseException], ...] = (sys.modules["django.db"].Error,)
        # Django re-raises the driver's errors as its own, but not those of every call it passes on.
        driver_root = "sqlite3" if dialect == "sqlite" else _root(getattr(connection, "connection", None))
        if driver_root:
            errors += (_driver_error(driver_root),)
        return CallerCursor(connection, errors)
    return CallerCursor(connection, (_driver_error(_root(connection)),))


def _tuple_cursor(connection: Any) -> Any:
    """A cursor of plain tuples, whatever cursor class the connection defaults to."""
    root = _root(connection)
    if root == "sqlite3":
        return connection.cursor()
    if root == "pymysql":
        return connection.cursor(sys.modules["pymysql.cursors"].Cursor)
    if root == "MySQLdb":
        return connection.cursor(sys.modules["MySQLdb.cursors"].Cursor)
    return connection.cursor(buffered=True, raw=False, dictionary=False)  # mysql-connector-python


def _driver_error(root: str) -> type[BaseException]:
    """The root of the exceptions of the driver (loaded: the caller holds one of its connections)."""
    if root == "mysql":
        return sys.modules["mysql.connector"].Error  # type: ignore[no-any-return]
    if root == "sqlite3":
        return sys.modules["sqlite3"].Error  # type: ignore[no-any-return]
    return sys.modules[root].MySQLError  # type: ignore[no-any-return]


def _sqlite_consecutive(connection: Any) -> bool:
    # sqlite3 runs an executemany row by row. In a transaction (explicit, or the implicit one of the
    # legacy isolation levels) nobody else inserts between them; in autocommit each row commits alone.
    return bool(connection.in_transaction or connection.isolation_level is not None)


def _found_rows(connection: Any) -> bool:
    flags = getattr(connection, "client_flag", None)  # pymysql, mysqlclient
    if not isinstance(flags, int):
        flags = getattr(connection, "client_flags", None)  # mysql-connector-python
    if not isinstance(flags, int):
        return True  # unknown: assume the affected rows cannot be trusted
    return bool(flags & CLIENT_FOUND_ROWS)


def _charset(connection: Any) -> str:
    name = getattr(connection, "character_set_name", None)  # mysqlclient
    if callable(name):
        return str(name())
    charset = getattr(connection, "charset", "")  # pymysql, mysql-connector-python
    return charset if isinstance(charset, str) else ""


def driver_exception(exc: BaseException) -> BaseException:
    """The driver's own exception behind ``exc`` (Django re-raises its own class, caused by it)."""
    cause = exc.__cause__
    return cause if _root(exc) == "django" and cause is not None else exc
