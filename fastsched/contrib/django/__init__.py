"""fastsched in a Django project: list ``"fastsched.contrib.django"`` in INSTALLED_APPS.

    import fastsched.contrib.django as jobs

    with transaction.atomic():
        order.save()
        jobs.add(fastsched.PRIORITY_HIGH, "ship_order", order.pk)   # commits or rolls back with order

:func:`add` and :func:`add_many` have the shape of ``Queue.add`` and ``Queue.add_many`` and enqueue
on Django's own connection: inside ``transaction.atomic()`` the job follows the transaction,
outside one it is committed at once. The masters are woken when it commits.

Settings (all optional):

* ``FASTSCHED_DATABASE``: the alias in DATABASES of the queue's database (default ``"default"``).
* ``FASTSCHED_DSN`` (else the environment's ``FASTSCHED_DSN``): the DSN the pool connects with;
  when neither is set it is derived from that alias's DATABASES entry. It must name the same
  database, or the pool would wait on jobs that are added elsewhere (ImproperlyConfigured).

``python manage.py fastsched_pool start ...`` takes the flags of ``fastsched-pool start`` (and
runs the other subcommands: init, stop, status, ...) with Django set up before the task modules
are imported; each pool child closes the database connections it inherited from the master before
its first job. The tables come from ``manage.py migrate`` or ``fastsched-pool init``, as you prefer:
both run the same schema files.
"""
from __future__ import annotations

import os
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from fastsched import wakeup
from fastsched.dsn import DSN_ENV, parse_dsn
from fastsched.queue import Queue

__all__ = ["DATABASE_SETTING", "DSN_SETTING", "add", "add_many", "close_inherited_connections", "database_alias",
           "dsn_text", "queue"]

DATABASE_SETTING = "FASTSCHED_DATABASE"
DSN_SETTING = "FASTSCHED_DSN"
DEFAULT_ALIAS = "default"
# DATABASES[...]["OPTIONS"] keys that fastsched's MySQL DSN understands too.
MYSQL_OPTIONS = ("unix_socket", "connect_timeout", "read_timeout", "write_timeout")
_ENGINES = {
    "django.db.backends.mysql": "mysql",
    "mysql.connector.django": "mysql",
    "django.db.backends.sqlite3": "sqlite",
}

T = TypeVar("T")
# Where each MySQL driver keeps its socket: mysqlclient, pymysql, mysql-connector-python (pure).
_SOCKET_PATHS = (("fileno",), ("_sock", "fileno"), ("_socket", "sock", "fileno"))

_lock = threading.Lock()
_queue: Queue | None = None


def _improperly(message: str) -> Exception:
    from django.core.exceptions import ImproperlyConfigured

    error: Exception = ImproperlyConfigured(message)
    return error


def database_alias() -> str:
    """The alias (in DATABASES) of the queue's database: ``settings.FASTSCHED_DATABASE``."""
    from django.conf import settings

    alias = getattr(settings, DATABASE_SETTING, DEFAULT_ALIAS)
    if not isinstance(alias, str) or alias not in settings.DATABASES:
        raise _improperly(f"{DATABASE_SETTING} = {alias!r} is not an alias in DATABASES")
    return alias


def dsn_from_database(entry: Mapping[str, Any], alias: str = DEFAULT_ALIAS) -> str:
    """The fastsched DSN (with its password) of one DATABASES entry."""
    engine = str(entry.get("ENGINE", ""))
    dialect = _ENGINES.get(engine)
    if dialect is None:
        raise _improperly(
            f"DATABASES[{alias!r}] uses {engine or 'no ENGINE'}: fastsched's queue needs MySQL/MariaDB "
            f"({', '.join(e for e, d in _ENGINES.items() if d == 'mysql')}) or SQLite; pick another "
            f"alias with {DATABASE_SETTING}"
        )
    name = str(entry.get("NAME") or "")
    if dialect == "sqlite":
        return "sqlite:///" + urllib.parse.quote(os.path.abspath(name), safe="/")
    options: list[tuple[str, str]] = []
    raw_options = entry.get("OPTIONS") or {}
    for key in MYSQL_OPTIONS:
        if key in raw_options:
            options.append((key, str(raw_options[key])))
    host = str(entry.get("HOST") or "localhost")
    if host.startswith("/"):  # Django's way of naming a unix socket
        options.append(("unix_socket", host))
        host = "localhost"
    port = int(entry.get("PORT") or 3306)
    auth = urllib.parse.quote(str(entry.get("USER") or ""), safe="")
    if entry.get("PASSWORD"):
        auth += ":" + urllib.parse.quote(str(entry["PASSWORD"]), safe="")
    query = ("?" + urllib.parse.urlencode(options)) if options else ""
    return f"mysql://{auth}@{host}:{port}/{urllib.parse.quote(name, safe='')}{query}"


def dsn_text() -> str:
    """The queue's DSN (with its password): the FASTSCHED_DSN setting, else the environment's,
    else derived from DATABASES. ImproperlyConfigured if it names another database than the alias."""
    from django.conf import settings

    alias = database_alias()
    derived = dsn_from_database(settings.DATABASES[alias], alias)
    explicit = getattr(settings, DSN_SETTING, None) or os.environ.get(DSN_ENV)
    if not explicit:
        return derived
    given, expected = parse_dsn(str(explicit)), parse_dsn(derived)
    if (given.dialect, _database_of(given.dialect, given.database)) != (
        expected.dialect, _database_of(expected.dialect, expected.database)
    ):
        raise _improperly(
            f"FASTSCHED_DSN names {given}, but jobs are added on Django's database {alias!r} ({expected}): "
            f"the pool would never see them. Name the same database, or leave FASTSCHED_DSN unset"
        )
    return str(explicit)


def _database_of(dialect: str, database: str) -> str:
    return os.path.abspath(database) if dialect == "sqlite" else database


def queue() -> Queue:
    """The process's queue on the fastsched database, opened lazily: its own connection opens
    only when needed (``get``, ``stats``; on MySQL, adding a job with dedup, whose running
    duplicates are looked up there)."""
    global _queue
    text = dsn_text()
    with _lock:
        if _queue is None or _queue.dsn != parse_dsn(text):
            _queue = Queue(text, lazy=True)
        return _queue


def add(priority_or_options: object, command: str, *args: object) -> int:
    """``Queue.add`` on Django's connection (see the module's docstring); the job's id."""
    return _on_django_connection(lambda q, conn: q.add(priority_or_options, command, *args, connection=conn))


def add_many(jobs: Iterable[Any]) -> list[int]:
    """``Queue.add_many`` on Django's connection; the ids in input order."""
    return _on_django_connection(lambda q, conn: q.add_many(jobs, connection=conn))


def _on_django_connection(insert: Callable[[Queue, Any], T]) -> T:
    from django.db import connections, transaction

    alias = database_alias()
    q = queue()
    connection = connections[alias]
    if connection.in_atomic_block or not connection.get_autocommit():
        # The caller's transaction: untouched by invalid input, which is refused before any SQL.
        result = insert(q, connection)
    else:
        # Our own short transaction, committed at once: the id read-back then cannot race a
        # master that claims and finishes the job in between, as it could in autocommit.
        with transaction.atomic(using=alias):
            result = insert(q, connection)
    identity = q.dsn.identity
    transaction.on_commit(lambda: wakeup.notify(identity), using=alias)  # at once, outside a transaction
    return result


def close_inherited_connections() -> None:
    """In a new pool child: drop the database connections it inherited from the master.

    A socket is shared with the master after the fork, so it is closed in the child alone (the
    file descriptor) before Django closes the connection: a proper close would say goodbye to the
    server on the master's connection. The child opens its own at its first query."""
    from django.db import connections

    for connection in connections.all(initialized_only=True):
        raw = connection.connection
        if raw is None:
            continue
        fd = _socket_fd(raw)
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            connection.close()
        except Exception:  # noqa: BLE001, S110 - its socket is gone by design: the driver may complain
            pass
        connection.connection = None


def _socket_fd(raw: Any) -> int | None:
    """The descriptor of a MySQL driver's socket; None for SQLite (a file, no peer to talk to)."""
    for path in _SOCKET_PATHS:
        target: Any = raw
        try:
            for name in path:
                target = getattr(target, name)
            fd = target()
        except Exception:  # noqa: BLE001, S112 - not this driver's, or not open
            continue
        if isinstance(fd, int) and fd >= 0:
            return fd
    return None
