"""Schema migrations (1 -> 2 -> 3), on real servers: a version-1 (or 2) database holding jobs
in every state goes through ``fastsched-pool init`` and must come out as a fresh version-2 database
would look, with every job, its state, times, dedup behaviour and claim owner intact."""
from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import os
import secrets
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

import fastsched
from fastsched import cli
from fastsched.backends import open_backend
from fastsched.backends.base import SCHEMA_VERSION
from fastsched.backends.sqlfiles import load_migration, split_statements
from fastsched.dsn import parse_dsn
from fastsched.errors import SchemaError
from fastsched.jobs import JobState, Outcomes

REPO = Path(__file__).resolve().parent.parent
NOW = dt.datetime(2030, 1, 2, 3, 4, 5, 678901)
SECOND = dt.timedelta(seconds=1)

# Version 1's DDL, as released (git show e2fef9e:fastsched/sql/<dialect>/schema.sql, comments
# dropped): embedded so that the test does not depend on the history of the checkout.
V1_SCHEMA = {
    "mysql": """
CREATE TABLE IF NOT EXISTS workerqueue (
    id          BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    command     VARCHAR(100) NOT NULL,
    parameter   MEDIUMTEXT NOT NULL,
    priority    TINYINT UNSIGNED NOT NULL DEFAULT 30,
    created     DATETIME(6) NOT NULL,
    pid         INT UNSIGNED NOT NULL DEFAULT 0,
    host        VARCHAR(255) NOT NULL DEFAULT '',
    executed    DATETIME(6) NULL,
    finished    DATETIME(6) NULL,
    next_try    DATETIME(6) NOT NULL,
    retrial     TINYINT NOT NULL DEFAULT 0,
    crashes     TINYINT UNSIGNED NOT NULL DEFAULT 0,
    done        TINYINT UNSIGNED NOT NULL DEFAULT 0,
    last_error  TEXT NULL,
    dedup_hash  BINARY(20) NULL,
    failed_hash BINARY(20) NULL,
    PRIMARY KEY (id),
    KEY claim (done, pid, priority, next_try),
    UNIQUE KEY dedup (dedup_hash)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
;
CREATE TABLE IF NOT EXISTS process (
    host        VARCHAR(255) NOT NULL,
    pid         INT UNSIGNED NOT NULL,
    role        VARCHAR(16) NOT NULL,
    master_pid  INT UNSIGNED NOT NULL DEFAULT 0,
    workers     INT UNSIGNED NOT NULL DEFAULT 0,
    started     DATETIME(6) NOT NULL,
    heartbeat   DATETIME(6) NOT NULL,
    PRIMARY KEY (host, pid)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
;
CREATE TABLE IF NOT EXISTS fastsched_meta (
    name        VARCHAR(191) NOT NULL,
    value       VARCHAR(255) NOT NULL DEFAULT '',
    due         DATETIME(6) NULL,
    PRIMARY KEY (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin
""",
    "sqlite": """
CREATE TABLE IF NOT EXISTS workerqueue (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    command     TEXT NOT NULL,
    parameter   TEXT NOT NULL,
    priority    INTEGER NOT NULL DEFAULT 30,
    created     TEXT NOT NULL,
    pid         INTEGER NOT NULL DEFAULT 0,
    host        TEXT NOT NULL DEFAULT '',
    executed    TEXT NULL,
    finished    TEXT NULL,
    next_try    TEXT NOT NULL,
    retrial     INTEGER NOT NULL DEFAULT 0,
    crashes     INTEGER NOT NULL DEFAULT 0,
    done        INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT NULL,
    dedup_hash  BLOB NULL,
    failed_hash BLOB NULL
)
;
CREATE INDEX IF NOT EXISTS workerqueue_claim ON workerqueue (done, pid, priority, next_try)
;
CREATE UNIQUE INDEX IF NOT EXISTS workerqueue_dedup ON workerqueue (dedup_hash) WHERE dedup_hash IS NOT NULL
;
CREATE TABLE IF NOT EXISTS process (
    host        TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    role        TEXT NOT NULL,
    master_pid  INTEGER NOT NULL DEFAULT 0,
    workers     INTEGER NOT NULL DEFAULT 0,
    started     TEXT NOT NULL,
    heartbeat   TEXT NOT NULL,
    PRIMARY KEY (host, pid)
)
;
CREATE TABLE IF NOT EXISTS fastsched_meta (
    name        TEXT NOT NULL PRIMARY KEY,
    value       TEXT NOT NULL DEFAULT '',
    due         TEXT NULL
)
""",
}


def digest(command: str, *args: object) -> bytes:
    parameter = json.dumps(list(args), separators=(",", ":"))
    return hashlib.sha1(command.encode() + b"\0" + parameter.encode()).digest()


def t(offset_seconds: float) -> dt.datetime:
    return NOW + dt.timedelta(seconds=offset_seconds)


# id, args, priority, next_try, pid, host, executed, finished, retrial, crashes, done, last_error,
# dedup_hash, failed_hash. Every state of version 1, each with the columns it really had there.
V1_JOBS: list[tuple[Any, ...]] = [
    (1, [1], 30, t(-10), 0, "", None, None, 0, 0, 0, None, digest("Cmd", 1), None),  # waiting
    (2, [2], 20, t(3600), 0, "", t(-60), None, 2, 0, 0, "later", digest("Cmd", 2), None),  # deferred retry
    (3, [3], 10, t(-20), 4242, "host-a", t(-5), None, 0, 0, 0, None, digest("Cmd", 3), None),  # running
    (4, [4], 10, t(-20), 4243, "host-b", t(-4), None, 0, 1, 0, None, digest("Cmd", 4), None),  # running
    (5, [5], 30, t(-30), 4242, "host-a", t(-3), t(-2), 0, 0, 1, None, None, None),  # done
    (6, [6], 40, t(-30), 4243, "host-b", t(-2), t(-1), 3, 1, 2, "boom", None, digest("Cmd", 6)),  # failed
    # Released by hand the Friendica way (SET pid = 0): the host name stays behind.
    (7, [7], 30, t(-5), 0, "host-a", t(-50), None, 1, 0, 0, None, digest("Cmd", 7), None),
    (8, [8], 50, t(-8), 0, "", None, None, 0, 0, 0, None, None, None),  # waiting, added without dedup
]
HIGH_WATER = 9  # a job 9 was added, then cancelled: its id must never come back


def build_v1(dsn: str) -> None:
    """A version-1 database at ``dsn`` (which holds no tables) with V1_JOBS in it."""
    dialect = parse_dsn(dsn).dialect
    with raw(dsn) as (conn, mark):
        cur = conn.cursor()
        for statement in split_statements(V1_SCHEMA[dialect]):
            cur.execute(statement)
        cur.execute("INSERT INTO fastsched_meta (name, value) VALUES ('schema_version', '1')")
        columns = ("id, command, parameter, priority, created, next_try, pid, host, executed, finished, "
                   "retrial, crashes, done, last_error, dedup_hash, failed_hash")
        for (job_id, args, priority, next_try, pid, host, executed, finished, retrial, crashes, done,
             error, dedup_hash, failed_hash) in V1_JOBS:
            values = (job_id, "Cmd", json.dumps(args, separators=(",", ":")), priority, t(-100 + job_id),
                      next_try, pid, host, executed, finished, retrial, crashes, done, error, dedup_hash,
                      failed_hash)
            if dialect == "sqlite":
                values = tuple(v.isoformat(" ", "microseconds") if isinstance(v, dt.datetime) else v
                               for v in values)
            cur.execute(f"INSERT INTO workerqueue ({columns}) VALUES ({', '.join([mark] * 16)})", values)
        cur.execute(f"INSERT INTO workerqueue (id, command, parameter, created, next_try) "
                    f"VALUES ({HIGH_WATER}, 'Cmd', '[9]', {mark}, {mark})", (str(NOW), str(NOW)))
        cur.execute(f"DELETE FROM workerqueue WHERE id = {HIGH_WATER}")
        cur.execute("INSERT INTO process (host, pid, role, workers, started, heartbeat) "
                    f"VALUES ('host-a', 4000, 'master', 2, {mark}, {mark})", (str(NOW), str(NOW)))
        if dialect == "sqlite":
            conn.commit()


# --------------------------------------------------------------------------------- the databases


class _Raw:
    def __init__(self, dsn: str) -> None:
        parsed = parse_dsn(dsn)
        if parsed.dialect == "sqlite":
            self.conn: Any = sqlite3.connect(parsed.database, isolation_level=None, timeout=10)
            self.mark = "?"
        else:
            self.conn = pymysql.connect(host=parsed.host, port=parsed.port, user=parsed.user,
                                        password=parsed.password, database=parsed.database, autocommit=True)
            self.mark = "%s"

    def __enter__(self) -> tuple[Any, str]:
        return self.conn, self.mark

    def __exit__(self, *exc: object) -> None:
        self.conn.close()


raw = _Raw


def query(dsn: str, sql: str, *params: object) -> list[tuple[Any, ...]]:
    with raw(dsn) as (conn, mark):
        cur = conn.cursor()
        cur.execute(sql.replace("?", mark), params)
        return [tuple(row) for row in cur.fetchall()] if cur.description else []


def shape(dsn: str) -> list[tuple[Any, ...]]:
    """Every table's columns and indexes, as the server describes them."""
    if parse_dsn(dsn).dialect == "sqlite":
        out: list[tuple[Any, ...]] = []
        for (table,) in query(dsn, "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"):
            out += [(table, *row) for row in query(dsn, f"PRAGMA table_info('{table}')")]
            for index in query(dsn, f"PRAGMA index_list('{table}')"):
                name, unique, partial = index[1], index[2], index[4]
                columns = [row[2] for row in query(dsn, f"PRAGMA index_info('{name}')")]
                out.append((table, name, unique, partial, *columns))
        return out
    return query(
        dsn,
        "SELECT table_name, ordinal_position, column_name, column_type, is_nullable, column_default, "
        "collation_name FROM information_schema.columns WHERE table_schema = DATABASE() "
        "ORDER BY table_name, ordinal_position",
    ) + query(
        dsn,
        "SELECT table_name, index_name, seq_in_index, column_name, non_unique FROM information_schema.statistics "
        "WHERE table_schema = DATABASE() ORDER BY table_name, index_name, seq_in_index",
    )


def snapshot(dsn: str) -> list[tuple[Any, ...]]:
    return query(dsn, "SELECT * FROM workerqueue ORDER BY id") + query(
        dsn, "SELECT * FROM fastsched_host ORDER BY id") + query(dsn, "SELECT * FROM fastsched_meta ORDER BY name")


@pytest.fixture
def empty_dsn(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A factory of empty databases of the test's dialect (the shared test database of conftest
    holds version-2 tables, which these tests must start without)."""
    dialect = request.param
    created: list[str] = []

    def make() -> str:
        if dialect == "sqlite":
            return f"sqlite:///{tmp_path / (secrets.token_hex(4) + '.sqlite3')}"
        server = parse_dsn(str(request.getfixturevalue("mysql_database")))
        name = f"{server.database}_m{secrets.token_hex(3)}"
        with raw(str(request.getfixturevalue("mysql_database"))) as (conn, _):
            conn.cursor().execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        created.append(name)
        return str(request.getfixturevalue("mysql_database")).rsplit("/", 1)[0] + "/" + name

    yield make
    if created:
        with raw(str(request.getfixturevalue("mysql_database"))) as (conn, _):
            for name in created:
                conn.cursor().execute(f"DROP DATABASE IF EXISTS `{name}`")


BOTH = pytest.mark.parametrize("empty_dsn", ["sqlite", "mysql"], indirect=True)


def init(dsn: str, capsys: pytest.CaptureFixture[str]) -> str:
    code = cli.main(["init", "--dsn", dsn])
    out, err = capsys.readouterr()
    assert code == cli.EXIT_OK, err
    return out


# ---------------------------------------------------------------------------------------- tests


@BOTH
def test_init_migrates_every_job_of_a_version_1_database(empty_dsn: Any, capsys: pytest.CaptureFixture[str]) -> None:
    dsn = empty_dsn()
    build_v1(dsn)
    assert "migrated from version 1" in init(dsn, capsys)

    assert query(dsn, "SELECT value FROM fastsched_meta WHERE name = 'schema_version'") == [(str(SCHEMA_VERSION),)]
    fresh = empty_dsn()
    init(fresh, capsys)
    assert shape(dsn) == shape(fresh), "a migrated database must look like a fresh one"
    # The rule of every claim query: unclaimed rows have pid = 0 AND host_id = 0.
    assert query(dsn, "SELECT id FROM workerqueue WHERE pid = 0 AND host_id <> 0 AND done = 0") == []

    q = fastsched.connect(dsn, clock=lambda: NOW)
    try:
        jobs = {job_id: q.get(job_id) for job_id in range(1, 9)}
        expected_state = {1: JobState.WAITING, 2: JobState.DEFERRED, 3: JobState.RUNNING, 4: JobState.RUNNING,
                          5: JobState.DONE, 6: JobState.FAILED, 7: JobState.WAITING, 8: JobState.WAITING}
        for (job_id, args, priority, next_try, pid, host, executed, finished, retrial, crashes, _done,
             error, _dedup, _failed) in V1_JOBS:
            job = jobs[job_id]
            assert job.state == expected_state[job_id], job
            assert (job.command, job.args, job.priority, job.created, job.next_try) == (
                "Cmd", args, priority, t(-100 + job_id), next_try), job
            assert (job.executed, job.finished) == (executed, finished), job  # NULL stays None
            assert (job.retrial, job.crashes, job.last_error, job.pid) == (retrial, crashes, error, pid), job
            assert job.host == ("" if job_id == 7 else host), job  # 7: released, so no owner

        stats = {s.priority: s for s in q.stats()}
        assert (stats[10].running, stats[20].deferred, stats[30].waiting, stats[40].failed, stats[50].waiting) == (
            2, 1, 2, 1, 1)
        assert stats[30].done_last_hour == 1
        assert [job.id for job in q.failed()] == [6]

        # First, as an add that collides may use up an id: a done job's twin is a new job, whose
        # id is the next after the high-water mark (no id is reused).
        assert q.add(30, "Cmd", 5) == HIGH_WATER + 1
        # Pending jobs (waiting, deferred, running) still collide; a failed one does not until
        # retried, when its hash comes back.
        assert [q.add(30, "Cmd", n) for n in (1, 2, 3, 4, 7)] == [1, 2, 3, 4, 7]
        assert q.retry(6).state == JobState.WAITING
        assert q.add(30, "Cmd", 6) == 6
    finally:
        q.close()

    backend = open_backend(dsn)
    try:
        # A real claim takes exactly the waiting jobs, the hand-released one included.
        claimed: list[int] = []
        for rank in range(5):
            wanted = [0] * 5
            wanted[rank] = 100
            for batch in backend.claim(wanted, [5000] * 100, "host-c", 100, NOW):
                claimed += [job.id for job in batch.jobs]
        assert sorted(claimed) == [1, 6, 7, 8, HIGH_WATER + 1]
        # The version-1 claims still belong to their hosts: host-a completes its job, the
        # release of host-b's claims hands its job back, and neither touches the other's.
        backend.write_outcomes("host-b", NOW, Outcomes(done=[3]))
        backend.write_outcomes("host-a", NOW, Outcomes(done=[3]))
        assert backend.release_claims("host-b") == 1
        assert backend.get(3, NOW).state == JobState.DONE
        job4 = backend.get(4, NOW)
        assert (job4.state, job4.pid, job4.host) == (JobState.WAITING, 0, "")
        assert backend.get(1, NOW).host == "host-c"
    finally:
        backend.close()


@BOTH
def test_init_again_on_a_migrated_database_changes_nothing(empty_dsn: Any, capsys: pytest.CaptureFixture[str]) -> None:
    dsn = empty_dsn()
    build_v1(dsn)
    init(dsn, capsys)
    before = (shape(dsn), snapshot(dsn))
    assert "migrated from" not in init(dsn, capsys)
    assert (shape(dsn), snapshot(dsn)) == before


@BOTH
def test_every_other_command_refuses_a_version_1_database_and_says_to_run_init(
    empty_dsn: Any, tmp_path: Path
) -> None:
    dsn = empty_dsn()
    build_v1(dsn)
    before = (shape(dsn), snapshot_v1(dsn))
    with pytest.raises(SchemaError, match="fastsched-pool init"):
        fastsched.connect(dsn)
    backend = open_backend(dsn)
    try:
        with pytest.raises(SchemaError, match="fastsched-pool init"):
            backend.init_schema()  # what a pool and Queue run: they never migrate
        with pytest.raises(SchemaError, match="fastsched-pool init"):
            backend.get(1, NOW)
    finally:
        backend.close()

    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTSCHED_") or k == "FASTSCHED_IMPL"}
    env.update(PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
               XDG_RUNTIME_DIR=str(tmp_path))
    pool = subprocess.run(
        [sys.executable, "-m", "fastsched", "start", "--dsn", dsn, "--workers", "1", "--host-id", "migration-test",
         "--pidfile", str(tmp_path / "pool.pid")],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert pool.returncode == cli.EXIT_FAILURE, pool.stderr
    assert "version 1" in pool.stderr and "fastsched-pool init" in pool.stderr, pool.stderr
    assert (shape(dsn), snapshot_v1(dsn)) == before, "a refusal must change nothing"


def snapshot_v1(dsn: str) -> list[tuple[Any, ...]]:
    return query(dsn, "SELECT * FROM workerqueue ORDER BY id") + query(dsn, "SELECT * FROM fastsched_meta")


INTERRUPTIONS = [
    (version, after)
    for version in range(1, SCHEMA_VERSION)
    for after in range(len(load_migration("mysql", version) or ()))
]


def migrate_to(dsn: str, version: int, steps_of_last: int | None = None) -> None:
    """Run the migrations of a version-1 database up to ``version`` as init would, or only the
    first ``steps_of_last`` steps of the last one (an interrupted init)."""
    backend: Any = open_backend(dsn)
    try:
        for from_version in range(1, version):
            steps = load_migration(parse_dsn(dsn).dialect, from_version) or ()
            if steps_of_last is not None and from_version == version - 1:
                steps = steps[:steps_of_last]
            for step in steps:
                backend.connection.transaction(
                    functools.partial(backend.connection.migration_step, step), step.name, check_schema=False
                )
    finally:
        backend.close()


@pytest.mark.parametrize("empty_dsn", ["mysql"], indirect=True)
@pytest.mark.parametrize(("from_version", "interrupted_after"), INTERRUPTIONS)
def test_an_interrupted_mysql_migration_is_finished_by_running_init_again(
    empty_dsn: Any, from_version: int, interrupted_after: int, capsys: pytest.CaptureFixture[str]
) -> None:
    # MySQL commits each DDL statement at once: a migration cut short leaves its first steps done.
    dsn, reference = empty_dsn(), empty_dsn()
    build_v1(dsn)
    build_v1(reference)
    init(reference, capsys)
    migrate_to(dsn, from_version + 1, steps_of_last=interrupted_after)
    backend: Any = open_backend(dsn)
    try:
        with pytest.raises(SchemaError, match="fastsched-pool init"):
            backend.get(1, NOW)  # the version is recorded last: the half-migrated database is refused
    finally:
        backend.close()
    init(dsn, capsys)
    assert shape(dsn) == shape(reference)
    assert snapshot(dsn) == snapshot(reference)


@BOTH
def test_init_migrates_a_version_2_database_putting_every_job_in_the_default_queue(
    empty_dsn: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    dsn, fresh = empty_dsn(), empty_dsn()
    build_v1(dsn)
    migrate_to(dsn, 2)
    assert query(dsn, "SELECT value FROM fastsched_meta WHERE name = 'schema_version'") == [("2",)]
    assert "migrated from version 2" in init(dsn, capsys)
    init(fresh, capsys)
    assert shape(dsn) == shape(fresh), "a migrated database must look like a fresh one"
    q = fastsched.connect(dsn, clock=lambda: NOW)
    try:
        assert {q.get(job_id).queue for job_id in range(1, 9)} == {"default"}
        assert q.get(3).state == JobState.RUNNING and q.get(6).state == JobState.FAILED
        mail = q.add({"queue": "mail"}, "Cmd", 100)
        assert q.get(mail).queue == "mail"
        assert q.add(30, "Cmd", 1) == 1, "pending jobs still collide after the migration"
    finally:
        q.close()
