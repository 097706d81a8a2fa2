"""Shared fixtures: real servers only.

MySQL tests use their own database on the MariaDB at FASTSCHED_TEST_MYSQL (default
mysql://root@127.0.0.1:3306), created for the run and dropped after it; tables are emptied
before each test. When the server is unreachable the tests FAIL (they never skip): CI must
not turn green without having talked to MariaDB.
"""
from __future__ import annotations

import os
import secrets
import shutil
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pymysql
import pytest

MYSQL_SERVER = os.environ.get("FASTSCHED_TEST_MYSQL", "mysql://root@127.0.0.1:3306")
TABLES = ("workerqueue", "process", "fastsched_meta", "fastsched_pause", "fastsched_cancel", "fastsched_action")


def _server_kwargs() -> dict[str, object]:
    parts = urllib.parse.urlsplit(MYSQL_SERVER)
    return {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 3306,
        "user": urllib.parse.unquote(parts.username or "root"),
        "password": urllib.parse.unquote(parts.password or ""),
    }


@pytest.fixture(scope="session")
def mysql_database() -> Iterator[str]:
    """A database of our own for this test run: its DSN, without trailing options."""
    kwargs = _server_kwargs()
    try:
        admin = pymysql.connect(**kwargs, autocommit=True)  # type: ignore[arg-type]
    except pymysql.MySQLError as exc:
        pytest.fail(f"MariaDB is not reachable at {MYSQL_SERVER}: {exc}. Start it (see .ci/run).", pytrace=False)
    name = "fastsched_test_" + secrets.token_hex(4)
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    auth = urllib.parse.quote(str(kwargs["user"]), safe="")
    if kwargs["password"]:
        auth += ":" + urllib.parse.quote(str(kwargs["password"]), safe="")
    try:
        yield f"mysql://{auth}@{kwargs['host']}:{kwargs['port']}/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()


@pytest.fixture
def mysql_dsn(mysql_database: str) -> str:
    """The run's MySQL database, with every fastsched table emptied."""
    parts = urllib.parse.urlsplit(mysql_database)
    conn = pymysql.connect(**_server_kwargs(), database=parts.path.lstrip("/"), autocommit=True)  # type: ignore[arg-type]
    try:
        with conn.cursor() as cur:
            for table in TABLES:
                cur.execute("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema=DATABASE() AND table_name=%s", (table,))
                if cur.fetchone()[0]:
                    cur.execute(f"DELETE FROM `{table}`")
    finally:
        conn.close()
    return mysql_database


@pytest.fixture
def sqlite_dsn(tmp_path) -> str:  # type: ignore[no-untyped-def]
    return f"sqlite:///{tmp_path / 'fastsched.sqlite3'}"


@pytest.fixture(params=["sqlite", "mysql"])
def dsn(request: pytest.FixtureRequest) -> str:
    """Each test that takes ``dsn`` runs once per backend, on real servers."""
    name = "sqlite_dsn" if request.param == "sqlite" else "mysql_dsn"
    return str(request.getfixturevalue(name))


@pytest.fixture(scope="session")
def galera_cluster() -> Iterator[Any]:
    """A 3-node Galera cluster for the galera-marked tests, started once and stopped at the end."""
    import galerakit

    base = f"/tmp/fsgalera-test-{os.getpid()}"
    try:
        with galerakit.galera_cluster(base) as cluster:
            yield cluster
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def galera(galera_cluster: Any) -> Any:
    """The cluster with every node running and synced (a test may have killed one)."""
    galera_cluster.start()
    galera_cluster.wait_cluster_size(len(galera_cluster.nodes))
    return galera_cluster


def fail_jobs(backend: object, job_ids: list[int], error: str, now: object) -> int:
    """Fail pending jobs with ``error`` straight in the table, the way a pool records a failure,
    for tests that need failed rows without running a pool; returns how many. (The backend has no
    such operation: the pool fails jobs through its claims' outcomes.)"""
    import datetime as dt
    import sqlite3

    from fastsched.dsn import DSN

    assert isinstance(getattr(backend, "dsn", None), DSN) and isinstance(now, dt.datetime)
    if not job_ids:
        return 0
    dsn = backend.dsn
    ids = ", ".join(str(int(job_id)) for job_id in job_ids)
    sql = (
        "UPDATE workerqueue SET done = 2, finished = {p}, failed_hash = dedup_hash, dedup_hash = NULL, "
        f"last_error = {{p}} WHERE id IN ({ids}) AND done = 0"
    )
    if dsn.dialect == "sqlite":
        conn: Any = sqlite3.connect(dsn.database, isolation_level=None, timeout=10)
        params: tuple[object, ...] = (now.isoformat(" ", "microseconds"), error)
        sql = sql.format(p="?")
    else:
        conn = pymysql.connect(
            host=dsn.host, port=dsn.port, user=dsn.user, password=dsn.password, database=dsn.database,
            autocommit=True,
        )
        params = (now, error)
        sql = sql.format(p="%s")
    try:
        cursor = conn.cursor()
        cursor.execute(sql, params)
        return int(cursor.rowcount)
    finally:
        conn.close()
