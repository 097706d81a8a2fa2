"""fastsched.contrib.django in a real small Django project (tests/djangoproject), on MariaDB through
mysqlclient (Django's default MySQL driver) and on SQLite: every step is a `manage.py` process, as a
project runs it: migrate, a shell adding jobs in atomic() blocks, and a real pool
(`manage.py fastsched_pool start`) whose children run a task that uses the ORM."""
from __future__ import annotations

import json
import os
import re
import secrets
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from fastsched.backends.base import SCHEMA_VERSION
from fastsched.dsn import parse_dsn

REPO = Path(__file__).resolve().parents[1]
PROJECT = Path(__file__).resolve().parent / "djangoproject"
MIGRATIONS = REPO / "fastsched" / "contrib" / "django" / "migrations"
TIMEOUT = 180  # seconds one manage.py command may take


class Project:
    """The test project on a fresh database of its own."""

    def __init__(self, engine: str, env: dict[str, str], dsn: str) -> None:
        self.engine = engine
        self.env = env
        self.dsn = dsn  # the same database, as fastsched names it

    def manage(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=PROJECT, env=self.env, capture_output=True, text=True,
            timeout=TIMEOUT, check=False,
        )
        if check:
            assert result.returncode == 0, f"manage.py {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result

    def shell(self, code: str) -> Any:
        """Run ``code`` in `manage.py shell`; the JSON it prints last."""
        out = self.manage("shell", "-c", textwrap.dedent(code)).stdout
        return json.loads(out.strip().splitlines()[-1])


def _mysql_admin(server_dsn: str) -> Any:
    d = parse_dsn(server_dsn)
    return pymysql.connect(host=d.host, port=d.port, user=d.user, password=d.password, autocommit=True)


@pytest.fixture
def new_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A factory of fresh, empty databases of the parametrized engine: (engine, fastsched DSN, Django env)."""
    engine = request.param
    made: list[str] = []

    def make() -> tuple[str, dict[str, str]]:
        if engine == "sqlite":
            path = tmp_path / f"db_{len(made)}.sqlite3"
            made.append(str(path))
            return f"sqlite:///{path}", {"TEST_DJANGO_ENGINE": "sqlite", "TEST_DJANGO_NAME": str(path)}
        server = request.getfixturevalue("mysql_database")  # "mysql" (mysqlclient) or "mysql-connector"
        d = parse_dsn(server)
        name = f"{d.database}_dj_{secrets.token_hex(3)}"
        admin = _mysql_admin(server)
        admin.cursor().execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        admin.close()
        made.append(name)
        env = {"TEST_DJANGO_ENGINE": "mysql", "TEST_DJANGO_NAME": name, "TEST_DJANGO_HOST": d.host,
               "TEST_DJANGO_PORT": str(d.port), "TEST_DJANGO_USER": d.user, "TEST_DJANGO_PASSWORD": d.password,
               "TEST_DJANGO_MYSQL_ENGINE": MYSQL_ENGINES[engine]}
        auth = d.user + (f":{d.password}" if d.password else "")
        return f"mysql://{auth}@{d.host}:{d.port}/{name}", env

    yield engine, make
    if engine != "sqlite":
        admin = _mysql_admin(request.getfixturevalue("mysql_database"))
        for name in made:
            admin.cursor().execute(f"DROP DATABASE IF EXISTS `{name}`")
        admin.close()


def project_on(engine: str, dsn: str, db_env: dict[str, str], tmp_path: Path) -> Project:
    runtime = tmp_path / "run"
    runtime.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FASTSCHED_", "TEST_DJANGO_", "DJANGO_"))
           or k == "FASTSCHED_IMPL"}
    env.update(db_env, DJANGO_SETTINGS_MODULE="shopsite.settings", XDG_RUNTIME_DIR=str(runtime),
               PYTHONPATH=os.pathsep.join(filter(None, [str(PROJECT), str(REPO), os.environ.get("PYTHONPATH")])))
    return Project(engine, env, dsn)


BOTH = pytest.mark.parametrize("new_database", ["mysql", "sqlite"], indirect=True)
# Django's MySQL backends: its own (mysqlclient), and the one mysql-connector-python ships.
MYSQL_ENGINES = {"mysql": "django.db.backends.mysql", "mysql-connector": "mysql.connector.django"}


@pytest.mark.parametrize("new_database", ["mysql", "sqlite", "mysql-connector"], indirect=True)
def test_jobs_follow_djangos_transactions_and_run_once_in_children_that_use_the_orm(
    new_database: Any, tmp_path: Path
) -> None:
    engine, make = new_database
    project = project_on(engine, *make(), tmp_path)
    project.manage("migrate")
    added = project.shell(
        """
        import json
        import fastsched
        import fastsched.contrib.django as jobs
        from django.db import transaction
        from shop.models import Order

        class Undo(Exception):
            pass

        try:
            with transaction.atomic():
                order = Order.objects.create(note="rolled back")
                jobs.add(fastsched.PRIORITY_HIGH, "ship", order.pk, "rolled back")
                raise Undo
        except Undo:
            pass
        with transaction.atomic():
            order = Order.objects.create(note="committed")
            first = jobs.add(fastsched.PRIORITY_HIGH, "ship", order.pk, "committed")
            again = jobs.add(fastsched.PRIORITY_HIGH, "ship", order.pk, "committed")  # dedup
            try:
                jobs.add(30, "", 1)  # invalid: refused before any SQL, the transaction goes on
            except fastsched.InvalidInput as exc:
                refused = str(exc)
            many = jobs.add_many([(30, "ship", order.pk, "batch 1"), (40, "ship", order.pk, "batch 2")])
        order = Order.objects.create(note="autocommit")
        outside = jobs.add(30, "ship", order.pk, "autocommit")  # no atomic(): committed at once
        print(json.dumps({"first": first, "again": again, "refused": refused, "many": many, "outside": outside,
                          "orders": sorted(Order.objects.values_list("note", flat=True))}))
        """
    )
    assert added["first"] == added["again"]
    assert "command must not be empty" in added["refused"]
    assert added["orders"] == ["autocommit", "committed"]  # the rolled-back order is gone with its job

    pool = project.manage("fastsched_pool", "start", "--workers", "2", "--until-empty", "--import", "shop.tasks")
    assert "pool stopped (exit code 0)" in pool.stderr + pool.stdout

    after = project.shell(
        """
        import json
        import fastsched.contrib.django as jobs
        from shop.models import MasterConnection, Shipment

        shipments = list(Shipment.objects.values_list("note", "pid", "connection_id"))
        masters = list(MasterConnection.objects.values_list("pid", "connection_id"))
        states = [[s.priority, s.waiting, s.deferred, s.running, s.failed] for s in jobs.queue().stats()]
        print(json.dumps({"shipments": shipments, "masters": masters, "states": states}))
        """
    )
    notes = sorted(note for note, _, _ in after["shipments"])
    assert notes == ["autocommit", "batch 1", "batch 2", "committed"]  # each once; the rolled-back never
    assert all(waiting == deferred == running == failed == 0 for _, waiting, deferred, running, failed in after["states"])
    ((master_pid, master_connection),) = after["masters"]  # the master imported shop.tasks once
    assert all(pid != master_pid for _, pid, _ in after["shipments"])  # the jobs ran in children
    if engine != "sqlite":
        # Each child closed the connection it inherited and opened its own: without that the
        # children would talk on the master's socket, the same server connection.
        assert all(cid is not None and cid != master_connection for _, _, cid in after["shipments"])


def _mysql_schema(dsn: str, tables: list[str]) -> dict[str, str]:
    d = parse_dsn(dsn)
    conn = pymysql.connect(host=d.host, port=d.port, user=d.user, password=d.password, database=d.database)
    try:
        with conn.cursor() as cursor:
            result = {}
            for table in tables:
                cursor.execute(f"SHOW CREATE TABLE `{table}`")
                result[table] = re.sub(r" AUTO_INCREMENT=\d+", "", cursor.fetchone()[1])
            return result
    finally:
        conn.close()


def _tables(engine: str, dsn: str) -> dict[str, str]:
    """Every fastsched table (and SQLite index) of the database, with its definition."""
    d = parse_dsn(dsn)
    if engine == "sqlite":
        conn = sqlite3.connect(d.database)
        rows = conn.execute(
            "SELECT type || ' ' || name, sql FROM sqlite_master WHERE sql IS NOT NULL AND tbl_name NOT LIKE 'django%'"
            " AND tbl_name NOT LIKE 'shop%'"
        ).fetchall()
        version = conn.execute("SELECT value FROM fastsched_meta WHERE name = 'schema_version'").fetchone()
        conn.close()
        return {**dict(rows), "version": version[0]}
    conn = pymysql.connect(host=d.host, port=d.port, user=d.user, password=d.password, database=d.database)
    with conn.cursor() as cursor:
        cursor.execute("SHOW TABLES")
        names = [row[0] for row in cursor.fetchall() if not row[0].startswith(("django", "shop"))]
        cursor.execute("SELECT value FROM fastsched_meta WHERE name = 'schema_version'")
        version = cursor.fetchone()[0]
    conn.close()
    return {**_mysql_schema(dsn, names), "version": version}


@BOTH
def test_the_django_migration_and_fastsched_pool_init_make_the_same_tables(new_database: Any, tmp_path: Path) -> None:
    engine, make = new_database
    init_dsn, _ = make()
    result = subprocess.run([sys.executable, "-m", "fastsched", "init", "--dsn", init_dsn], capture_output=True,
                            text=True, timeout=TIMEOUT, check=False, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    project = project_on(engine, *make(), tmp_path)
    project.manage("migrate")
    by_init, by_migration = _tables(engine, init_dsn), _tables(engine, project.dsn)
    assert "workerqueue" in str(sorted(by_init)) and by_init["version"] == str(SCHEMA_VERSION)
    assert by_migration == by_init
    # Either order: init on a migrated database changes nothing, and the pool starts on it.
    again = subprocess.run([sys.executable, "-m", "fastsched", "init", "--dsn", project.dsn], capture_output=True,
                           text=True, timeout=TIMEOUT, check=False, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert _tables(engine, project.dsn) == by_init


def test_the_last_migration_of_the_app_creates_this_releases_schema_version() -> None:
    names = sorted(p.stem for p in MIGRATIONS.glob("0*.py"))
    assert names and names[-1].endswith(f"_schema_v{SCHEMA_VERSION}"), (
        f"SCHEMA_VERSION is {SCHEMA_VERSION}: add fastsched/contrib/django/migrations/"
        f"{len(names) + 1:04d}_schema_v{SCHEMA_VERSION}.py, the same RunPython as {names[-1] if names else '0001'}"
    )


@pytest.mark.parametrize("new_database", ["sqlite"], indirect=True)
def test_fastsched_dsn_naming_another_database_is_refused_and_bad_flags_exit_as_in_the_cli(new_database: Any, tmp_path: Path) -> None:
    engine, make = new_database
    project = project_on(engine, *make(), tmp_path)
    project.manage("migrate")
    project.env["FASTSCHED_DSN"] = f"sqlite:///{tmp_path / 'elsewhere.sqlite3'}"
    result = project.manage("fastsched_pool", "status", check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr  # a configuration error
    assert "fastsched-pool: error: FASTSCHED_DSN names sqlite:///" in result.stderr
    assert "the pool would never see them" in result.stderr
    project.env["FASTSCHED_DSN"] = project.dsn  # the same database, named explicitly: fine
    assert project.manage("fastsched_pool", "status", "--json").returncode == 0
    bad = project.manage("fastsched_pool", "start", "--workers", "0", check=False)
    assert bad.returncode == 2 and "--workers: invalid value '0'" in bad.stderr  # fastsched-pool's codes


def test_the_dsn_is_derived_from_the_databases_entry() -> None:
    from django.core.exceptions import ImproperlyConfigured

    from fastsched.contrib.django import dsn_from_database

    text = dsn_from_database({"ENGINE": "django.db.backends.mysql", "NAME": "shop", "USER": "app",
                              "PASSWORD": "p@ss:w/rd", "HOST": "db.internal", "PORT": "3307",
                              "OPTIONS": {"read_timeout": 30, "charset": "utf8mb4"}})
    d = parse_dsn(text)
    assert (d.dialect, d.user, d.password, d.host, d.port, d.database) == ("mysql", "app", "p@ss:w/rd", "db.internal",
                                                                          3307, "shop")
    assert d.options == (("read_timeout", "30"),)
    socket_dsn = parse_dsn(dsn_from_database({"ENGINE": "django.db.backends.mysql", "NAME": "shop",
                                              "HOST": "/run/mysqld/mysqld.sock"}))
    assert socket_dsn.options == (("unix_socket", "/run/mysqld/mysqld.sock"),) and socket_dsn.port == 3306
    assert parse_dsn(dsn_from_database({"ENGINE": "django.db.backends.sqlite3", "NAME": "db.sqlite3"})).database \
        == os.path.abspath("db.sqlite3")
    with pytest.raises(ImproperlyConfigured, match="needs MySQL/MariaDB .* or SQLite"):
        dsn_from_database({"ENGINE": "django.db.backends.postgresql", "NAME": "shop"})


@pytest.mark.parametrize("new_database", ["sqlite"], indirect=True)
def test_fastsched_database_puts_the_queue_on_another_alias(new_database: Any, tmp_path: Path) -> None:
    engine, make = new_database
    project = project_on(engine, *make(), tmp_path)
    queue_db = tmp_path / "jobs.sqlite3"
    project.env["TEST_DJANGO_QUEUE_DB"] = str(queue_db)
    project.manage("migrate")  # the default database: Django's and the shop's tables, not fastsched's
    project.manage("migrate", "--database", "jobs")
    default_tables = {name for (name,) in sqlite3.connect(parse_dsn(project.dsn).database).execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "shop_order" in default_tables and "workerqueue" not in default_tables
    added = project.shell(
        """
        import json
        import fastsched.contrib.django as jobs
        from django.db import transaction

        try:
            with transaction.atomic(using="jobs"):
                jobs.add(30, "ship", 1, "rolled back")
                raise KeyError
        except KeyError:
            pass
        job_id = jobs.add(30, "ship", 1, "kept")
        print(json.dumps({"job": job_id, "dsn": str(jobs.queue().dsn)}))
        """
    )
    assert added["dsn"] == f"sqlite:///{queue_db}"  # derived from DATABASES["jobs"]
    rows = sqlite3.connect(queue_db).execute("SELECT id, parameter FROM workerqueue").fetchall()
    assert rows == [(added["job"], '[1,"kept"]')]
