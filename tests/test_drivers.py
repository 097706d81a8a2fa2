"""add/add_many(connection=...) on every DB-API driver: pymysql, mysqlclient (MySQLdb) and
mysql-connector-python on the real MariaDB, sqlite3 on SQLite. The job exists if and only if the
caller commits; dedup, the size limits and the errors are those of the queue's own path."""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import mysql.connector
import MySQLdb
import pymysql
import pytest

import fastsched
from fastsched.dsn import parse_dsn
from fastsched.errors import DatabaseError, InvalidInput, JobNotFound, SchemaError

MYSQL_DRIVERS = ["pymysql", "mysqlclient", "mysql-connector"]
FOUND_ROWS = 2  # the client flag Django's MySQL backend sets


def connect(driver: str, dsn: str, *, found_rows: bool = False, charset: str = "utf8mb4") -> Any:
    """A caller's connection of ``driver``, autocommit off (as PEP 249 has it), to the DSN's database."""
    d = parse_dsn(dsn)
    if driver == "sqlite3":
        import sqlite3

        return sqlite3.connect(d.database, timeout=10)
    kwargs: dict[str, Any] = {"host": d.host, "port": d.port, "user": d.user, "password": d.password}
    flag = FOUND_ROWS if found_rows else 0
    if driver == "pymysql":
        return pymysql.connect(**kwargs, database=d.database, charset=charset, client_flag=flag)
    if driver == "mysqlclient":
        return MySQLdb.connect(**kwargs, database=d.database, charset=charset, client_flag=flag)
    conn = mysql.connector.connect(**kwargs, database=d.database, charset=charset, client_flags=[flag] if flag else None)
    conn.autocommit = False
    return conn


@pytest.fixture(params=MYSQL_DRIVERS + ["sqlite3"])
def driver(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def dsn(driver: str, request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("sqlite_dsn" if driver == "sqlite3" else "mysql_dsn"))


@pytest.fixture
def q(dsn: str) -> Iterator[fastsched.Queue]:
    with fastsched.connect(dsn) as queue:
        yield queue


@pytest.fixture
def caller(driver: str, dsn: str) -> Iterator[Callable[..., Any]]:
    opened: list[Any] = []

    def open_one(**options: Any) -> Any:
        conn = connect(driver, dsn, **options)
        opened.append(conn)
        return conn

    yield open_one
    for conn in opened:
        try:
            conn.close()
        except Exception:  # noqa: BLE001, S110 - closed by the test already
            pass


def execute(conn: Any, statement: str, params: tuple[Any, ...] = ()) -> list[Any]:
    cursor = conn.cursor()
    if type(conn).__module__.startswith("sqlite3"):
        statement = statement.replace("%s", "?")
    cursor.execute(statement, params)
    rows = list(cursor.fetchall()) if cursor.description else []
    cursor.close()
    return rows


def orders_table(conn: Any) -> None:
    execute(conn, "CREATE TABLE IF NOT EXISTS app_orders (id INTEGER PRIMARY KEY, note VARCHAR(50))")
    execute(conn, "DELETE FROM app_orders")
    conn.commit()


def pending(q: fastsched.Queue) -> list[tuple[str, list[object]]]:
    """(command, args) of every job, by id, read through the queue's own connection."""
    ids = [row[0] for row in q.backend._transaction(lambda c: (c.execute("SELECT id FROM workerqueue ORDER BY id"), c.fetchall())[1], "t", write=False)]
    return [(q.get(i).command, q.get(i).args) for i in ids]


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
def test_the_job_exists_if_and_only_if_the_caller_commits(
    q: fastsched.Queue, caller: Callable[..., Any], outcome: str
) -> None:
    conn = caller()
    orders_table(conn)
    execute(conn, "INSERT INTO app_orders (id, note) VALUES (1, 'order')")
    job_id = q.add(fastsched.PRIORITY_HIGH, "ShipOrder", 1, connection=conn)
    many = q.add_many([(30, "Mail", 1), (30, "Mail", 2), ({"dedup": False}, "Log", "x")], connection=conn)
    other = fastsched.connect(q.dsn)
    try:
        assert pending(other) == []  # not visible to anyone else before the commit
        getattr(conn, outcome)()
        orders = execute(conn, "SELECT COUNT(*) FROM app_orders")[0][0]
        if outcome == "commit":
            assert orders == 1
            assert pending(other) == [("ShipOrder", [1]), ("Mail", [1]), ("Mail", [2]), ("Log", ["x"])]
            assert [other.get(i).args for i in [job_id, *many]] == [[1], [1], [2], ["x"]]
        else:
            assert orders == 0 and pending(other) == []
            for i in [job_id, *many]:
                with pytest.raises(JobNotFound):
                    other.get(i)
            # The rolled-back key does not block the same job later.
            assert other.get(other.add(fastsched.PRIORITY_HIGH, "ShipOrder", 1)).args == [1]
    finally:
        other.close()


def check_dedup(q: fastsched.Queue, conn: Any) -> None:
    waiting = q.add(30, "Sync", "a")  # committed through the queue's own connection
    first = q.add(30, "Sync", "b", connection=conn)
    assert q.add(30, "Sync", "b", connection=conn) == first  # pending within the caller's transaction
    assert q.add(30, "Sync", "a", connection=conn) == waiting  # pending, committed by someone else
    ids = q.add_many(
        [(30, "Sync", "a"), (30, "Sync", "c"), (30, "Sync", "c"), (30, "Sync", "b"), ({"dedup": False}, "Sync", "a"),
         ({"priority": 10, "force_priority": True}, "Sync", "a"), (30, "Sync", "d")],
        connection=conn,
    )
    conn.commit()
    assert ids[0] == ids[5] == waiting and ids[3] == first and ids[1] == ids[2]
    assert len({ids[0], ids[1], ids[3], ids[4], ids[6]}) == 5
    assert [q.get(i).args for i in ids] == [["a"], ["c"], ["c"], ["b"], ["a"], ["a"], ["d"]]
    assert q.get(waiting).priority == 10  # force_priority moved the unclaimed duplicate
    assert q.get(ids[4]).priority == 30
    assert len(pending(q)) == 5


def test_dedup_is_the_same_as_on_the_queues_own_connection(q: fastsched.Queue, caller: Callable[..., Any]) -> None:
    check_dedup(q, caller())


@pytest.mark.parametrize("driver", MYSQL_DRIVERS)
def test_dedup_holds_when_the_affected_rows_count_found_rows(q: fastsched.Queue, caller: Callable[..., Any]) -> None:
    """CLIENT_FOUND_ROWS (Django sets it) counts an unchanged duplicate as affected: the ids are read back."""
    check_dedup(q, caller(found_rows=True))


def test_a_batch_bigger_than_one_statement_of_any_driver_keeps_its_ids_in_order(
    q: fastsched.Queue, caller: Callable[..., Any]
) -> None:
    """2,500 jobs of 700 bytes: several chunks, each far over mysqlclient's 64 KiB split point."""
    conn = caller()
    jobs = [(30, "Bulk", i, "x" * 700) for i in range(2_500)]
    ids = q.add_many(jobs, connection=conn)
    conn.commit()
    assert ids == sorted(ids) and len(set(ids)) == 2_500
    for index in (0, 999, 1_000, 1_777, 2_499):
        assert q.get(ids[index]).args == [index, "x" * 700]


def test_bad_input_raises_before_anything_is_sent_and_the_callers_transaction_goes_on(
    dsn: str, caller: Callable[..., Any]
) -> None:
    with fastsched.connect(dsn, max_parameter_bytes=100) as q:
        conn = caller()
        orders_table(conn)
        execute(conn, "INSERT INTO app_orders (id, note) VALUES (7, 'kept')")
        with pytest.raises(InvalidInput, match="args are 101 bytes as JSON, the limit is 100 bytes"):
            q.add(30, "Big", "x" * 97, connection=conn)
        with pytest.raises(InvalidInput, match=r"jobs\[1\]: command must not be empty"):
            q.add_many([(30, "Fine"), (30, "")], connection=conn)
        with pytest.raises(InvalidInput, match="connection must be"):
            q.add(30, "Cmd", connection=conn.cursor())  # a cursor is no connection
        ok = q.add(30, "Fine", connection=conn)
        conn.commit()
        assert execute(conn, "SELECT note FROM app_orders") == [("kept",)]
        assert pending(q) == [("Fine", [])] and q.get(ok).command == "Fine"


def test_a_connection_of_the_other_dialect_is_refused(q: fastsched.Queue, driver: str, mysql_dsn: str, sqlite_dsn: str) -> None:
    other = connect("sqlite3", sqlite_dsn) if driver != "sqlite3" else connect("pymysql", mysql_dsn)
    try:
        got = "sqlite3.Connection" if driver != "sqlite3" else "pymysql.connections.Connection"
        with pytest.raises(InvalidInput, match=f"connection must be .* to this queue's database, got {got}$"):
            q.add(30, "Cmd", connection=other)
    finally:
        other.close()


def test_a_database_without_the_schema_is_a_clear_error_and_creates_nothing(
    driver: str, dsn: str, tmp_path: Any
) -> None:
    """The schema is never created on the caller's connection (on MySQL the DDL would commit it)."""
    d = parse_dsn(dsn)
    if driver == "sqlite3":
        empty_dsn = f"sqlite:///{tmp_path / 'empty.sqlite3'}"
    else:
        admin = pymysql.connect(host=d.host, port=d.port, user=d.user, password=d.password, autocommit=True)
        admin.cursor().execute(f"CREATE DATABASE IF NOT EXISTS `{d.database}_empty`")
        admin.close()
        empty_dsn = f"mysql://{d.user}@{d.host}:{d.port}/{d.database}_empty"
    conn = connect(driver, empty_dsn)
    try:
        # The queue's own database has the schema; the caller's has not.
        with fastsched.connect(dsn) as q, pytest.raises(SchemaError, match="has no fastsched tables: create them"):
            q.add(30, "Cmd", connection=conn)
        conn.rollback()
        tables = execute(conn, "SELECT name FROM sqlite_master WHERE type = 'table'" if driver == "sqlite3" else "SHOW TABLES")
        assert tables == []
    finally:
        conn.close()
        if driver != "sqlite3":
            admin = pymysql.connect(host=d.host, port=d.port, user=d.user, password=d.password, autocommit=True)
            admin.cursor().execute(f"DROP DATABASE IF EXISTS `{d.database}_empty`")
            admin.close()


def test_a_closed_connection_is_a_database_error(q: fastsched.Queue, caller: Callable[..., Any]) -> None:
    conn = caller()
    q.add(30, "Warm", connection=conn)  # the schema check is behind us: the insert itself fails
    conn.close()
    with pytest.raises(DatabaseError, match="add_many on the caller's connection failed"):
        q.add(30, "Cmd", connection=conn)
    assert pending(q) == []


@pytest.mark.parametrize("driver", MYSQL_DRIVERS)
def test_text_the_connections_character_set_cannot_carry_is_refused_not_mangled(
    q: fastsched.Queue, caller: Callable[..., Any]
) -> None:
    conn = caller(charset="utf8")  # Django's MySQL default: utf8mb3
    with pytest.raises(InvalidInput, match="outside the Basic Multilingual Plane .* charset utf8mb4"):
        q.add(30, "Greet", "hi \U0001f600", connection=conn)
    job_id = q.add(30, "Greet", "grüße, 你好", connection=conn)  # the BMP fits
    conn.commit()
    assert q.get(job_id).args == ["grüße, 你好"]
    full = caller()
    emoji = q.add(30, "Greet", "hi \U0001f600", connection=full)
    full.commit()
    assert q.get(emoji).args == ["hi \U0001f600"]


@pytest.mark.parametrize("driver", MYSQL_DRIVERS)
def test_dedup_in_a_repeatable_read_transaction_finds_a_job_committed_after_its_snapshot(
    q: fastsched.Queue, caller: Callable[..., Any]
) -> None:
    """The server's default isolation: the caller's snapshot predates the pending duplicate."""
    conn = caller()
    execute(conn, "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    execute(conn, "START TRANSACTION")
    execute(conn, "SELECT COUNT(*) FROM workerqueue")  # the snapshot is taken here
    theirs = q.add(30, "Sync", "x")  # committed by another connection after it
    assert q.add(30, "Sync", "x", connection=conn) == theirs
    assert q.add_many([(30, "Sync", "x"), (30, "Sync", "y")], connection=conn)[0] == theirs
    conn.commit()
    assert [args for _, args in pending(q)] == [["x"], ["y"]]


def test_callers_on_many_threads_each_get_their_own_jobs(q: fastsched.Queue, driver: str, dsn: str) -> None:
    """One queue shared by threads, each adding on its own connection (as a threaded web server does)."""
    results: dict[int, list[int]] = {}
    failures: list[BaseException] = []

    def work(n: int) -> None:
        try:
            conn = connect(driver, dsn)
            try:
                results[n] = q.add_many([(30, "Thread", n, i) for i in range(50)], connection=conn)
                conn.commit()
            finally:
                conn.close()
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    for n, ids in results.items():
        assert [q.get(i).args for i in ids] == [[n, i] for i in range(50)]
    assert len(pending(q)) == 200


def test_a_lazy_queue_adding_on_the_callers_connection_opens_none_of_its_own(
    dsn: str, caller: Callable[..., Any]
) -> None:
    """What a web process wants: its own connection only (fastsched.contrib.django's queue is lazy).
    On MySQL, dedup jobs do need ours: their running duplicates are looked up there, so that the
    caller's upsert never locks a claimed row (test_queue.py); jobs without dedup never do."""
    fastsched.connect(dsn).close()  # the tables exist
    q = fastsched.Queue(dsn, lazy=True)
    try:
        conn = caller()
        job_id = q.add({"dedup": False}, "Lazy", 1, connection=conn)
        ids = q.add_many([({"dedup": False}, "Lazy", 2)], connection=conn)
        conn.commit()
        assert q.backend.connection.conn is None  # never connected
        assert [q.get(i).args for i in [job_id, *ids]] == [[1], [2]]  # get() needs it: connects now
        assert q.backend.connection.conn is not None
    finally:
        q.close()
