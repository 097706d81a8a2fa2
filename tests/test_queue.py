"""The producer API, on both real backends (SQLite file and MariaDB) through the ``dsn`` fixture."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import multiprocessing
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
import tomllib
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastsched
import fastsched.queue
from fastsched import wakeup
from fastsched.dsn import parse_dsn
from fastsched.errors import (
    ConfigError,
    DatabaseUnavailable,
    FastschedError,
    InvalidInput,
    InvalidState,
    JobNotFound,
)
from fastsched.jobs import JobState
from fastsched.priority import Priority
from tests.conftest import fail_jobs

T0 = dt.datetime(2030, 1, 1, 12, 0, 0)
HOUR = dt.timedelta(hours=1)
SECRET = "topsecret"


class Clock:
    """An injected clock: naive UTC, moved by hand."""

    def __init__(self, now: dt.datetime = T0) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def q(dsn: str, clock: Clock) -> Iterator[fastsched.Queue]:
    queue = fastsched.connect(dsn, clock=clock)
    try:
        yield queue
    finally:
        queue.close()


@pytest.fixture(autouse=True)
def _fresh_default_queue() -> Iterator[None]:
    fastsched.queue.reset_default()
    yield
    fastsched.queue.reset_default()


# --- raw access to the same database, to see what is stored ------------------------------------


def raw_connect(dsn: str) -> Any:
    """A plain driver connection to the queue's database (the caller's own connection)."""
    d = parse_dsn(dsn)
    if d.dialect == "sqlite":
        return sqlite3.connect(d.database)
    return pymysql.connect(host=d.host, port=d.port, user=d.user, password=d.password, database=d.database)


def sql(dsn: str, statement: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one statement (``?`` placeholders) and commit; return its rows."""
    conn = raw_connect(dsn)
    try:
        if parse_dsn(dsn).dialect == "mysql":
            statement = statement.replace("?", "%s")
        cur = conn.cursor()
        cur.execute(statement, params)
        rows = list(cur.fetchall())
        conn.commit()
        return rows
    finally:
        conn.close()


@pytest.fixture
def rowcount(dsn: str) -> Iterator[Callable[[], int]]:
    """Counts workerqueue rows through one autocommit connection (cheap enough for hypothesis)."""
    conn = raw_connect(dsn)
    if parse_dsn(dsn).dialect == "mysql":
        conn.autocommit(True)
    else:
        conn.isolation_level = None

    def count() -> int:
        cur = conn.cursor()
        cur.execute("SELECT COUNT(*) FROM workerqueue")
        return int(cur.fetchone()[0])

    try:
        yield count
    finally:
        conn.close()


def stored(dsn: str) -> list[tuple[Any, ...]]:
    return sql(dsn, "SELECT id, command, parameter, priority, done FROM workerqueue ORDER BY id")


def mark_running(dsn: str, job_id: int, pid: int = 4242) -> None:
    sql(dsn, "UPDATE workerqueue SET pid=?, executed=created WHERE id=?", (pid, job_id))


def mark_done(dsn: str, job_id: int) -> None:
    """Done, finished at its ``created`` time (choose it with the created option)."""
    sql(dsn, "UPDATE workerqueue SET done=1, finished=created, dedup_hash=NULL, pid=0 WHERE id=?", (job_id,))


def mark_failed(q: fastsched.Queue, job_id: int, now: dt.datetime, error: str = "boom") -> None:
    assert fail_jobs(q.backend, [job_id], error, now) == 1


# --- add and get ---------------------------------------------------------------------------------


def test_add_returns_an_id_and_get_shows_the_job_waiting(q: fastsched.Queue) -> None:
    job_id = q.add(fastsched.PRIORITY_HIGH, "Notifier", "like", 42, {"b": [1, 2.5, None], "a": True})
    assert isinstance(job_id, int) and job_id > 0
    job = q.get(job_id)
    assert job.id == job_id
    assert job.command == "Notifier"
    assert job.args == ["like", 42, {"a": True, "b": [1, 2.5, None]}]
    assert job.parameter == '["like",42,{"a":true,"b":[1,2.5,null]}]'
    assert job.priority == Priority.HIGH
    assert job.state is JobState.WAITING
    assert job.created == T0 and job.next_try == T0
    assert (job.retrial, job.crashes, job.pid, job.host) == (0, 0, 0, "")
    assert job.executed is None and job.finished is None and job.last_error is None


def test_default_priority_is_medium_and_ints_work_as_priorities(q: fastsched.Queue) -> None:
    a = q.add({}, "A")
    b = q.add(40, "B")
    assert q.get(a).priority == fastsched.PRIORITY_MEDIUM == 30
    assert q.get(b).priority == fastsched.PRIORITY_LOW


def test_parameter_is_canonical_json_unicode_kept(q: fastsched.Queue, dsn: str) -> None:
    job_id = q.add(fastsched.PRIORITY_LOW, "Deliver", "héllo ✓ 🎉", {"z": 1, "a": (1, 2)}, 1.0, "\x00")
    assert q.get(job_id).parameter == '["héllo ✓ 🎉",{"a":[1,2],"z":1},1.0,"\\u0000"]'
    assert stored(dsn)[0][2] == '["héllo ✓ 🎉",{"a":[1,2],"z":1},1.0,"\\u0000"]'


def test_no_args_store_an_empty_list(q: fastsched.Queue) -> None:
    assert q.get(q.add(fastsched.PRIORITY_MEDIUM, "Cron")).args == []


def test_aware_datetimes_are_converted_to_utc(q: fastsched.Queue) -> None:
    plus2 = dt.timezone(dt.timedelta(hours=2))
    job_id = q.add({"created": dt.datetime(2029, 6, 1, 14, 0, tzinfo=plus2)}, "A")
    assert q.get(job_id).created == dt.datetime(2029, 6, 1, 12, 0)


def test_get_unknown_id_raises_job_not_found(q: fastsched.Queue) -> None:
    for bad in (10**9, 0, -1, 2**70):
        with pytest.raises(JobNotFound):
            q.get(bad)
    with pytest.raises(InvalidInput, match="job id must be an int"):
        q.get("1")  # type: ignore[arg-type]


# --- dedup ---------------------------------------------------------------------------------------


def test_identical_pending_job_is_not_added_again(q: fastsched.Queue, dsn: str) -> None:
    first = q.add(fastsched.PRIORITY_MEDIUM, "Update", 7, "x")
    assert q.add(fastsched.PRIORITY_MEDIUM, "Update", 7, "x") == first
    assert q.add(fastsched.PRIORITY_LOW, "Update", 7, "x") == first  # priority is not part of the key
    assert q.get(first).priority == fastsched.PRIORITY_MEDIUM  # ... and is left alone
    assert len(stored(dsn)) == 1


def test_args_that_differ_in_type_or_command_are_different_jobs(q: fastsched.Queue, dsn: str) -> None:
    ids = {
        q.add(fastsched.PRIORITY_MEDIUM, "Update", 5),
        q.add(fastsched.PRIORITY_MEDIUM, "Update", "5"),  # as in Friendica: JSON is the key
        q.add(fastsched.PRIORITY_MEDIUM, "Update", 5.0),
        q.add(fastsched.PRIORITY_MEDIUM, "Other", 5),
        q.add(fastsched.PRIORITY_MEDIUM, "Update"),
        q.add(fastsched.PRIORITY_MEDIUM, "Update", [5]),
    }
    assert len(ids) == 6 == len(stored(dsn))


def test_dict_key_order_does_not_matter(q: fastsched.Queue) -> None:
    assert q.add(30, "A", {"x": 1, "y": 2}) == q.add(30, "A", {"y": 2, "x": 1})


def test_running_and_deferred_duplicates_count_as_pending(q: fastsched.Queue, dsn: str) -> None:
    running = q.add(fastsched.PRIORITY_MEDIUM, "Run", 1)
    mark_running(dsn, running)
    assert q.get(running).state is JobState.RUNNING
    assert q.add(fastsched.PRIORITY_MEDIUM, "Run", 1) == running
    deferred = q.add({"delay": 600}, "Later", 1)
    assert q.add(fastsched.PRIORITY_MEDIUM, "Later", 1) == deferred
    assert len(stored(dsn)) == 2


def test_done_or_failed_job_does_not_block_a_new_one(q: fastsched.Queue, dsn: str, clock: Clock) -> None:
    done = q.add(fastsched.PRIORITY_MEDIUM, "Again", 1)
    mark_done(dsn, done)
    assert q.get(done).state is JobState.DONE
    second = q.add(fastsched.PRIORITY_MEDIUM, "Again", 1)
    assert second != done
    mark_failed(q, second, clock())
    assert q.get(second).state is JobState.FAILED
    third = q.add(fastsched.PRIORITY_MEDIUM, "Again", 1)
    assert third not in (done, second)
    assert q.get(third).state is JobState.WAITING


def test_force_priority_sets_the_pending_duplicates_priority(q: fastsched.Queue) -> None:
    job_id = q.add(fastsched.PRIORITY_LOW, "Deliver", 1)
    assert q.add({"priority": fastsched.PRIORITY_HIGH, "force_priority": True}, "Deliver", 1) == job_id
    assert q.get(job_id).priority == fastsched.PRIORITY_HIGH
    assert q.add({"priority": fastsched.PRIORITY_NEGLIGIBLE, "force_priority": True}, "Deliver", 1) == job_id
    assert q.get(job_id).priority == fastsched.PRIORITY_NEGLIGIBLE  # lowering works too, as in Friendica


def test_force_priority_leaves_a_running_job_alone(q: fastsched.Queue, dsn: str) -> None:
    job_id = q.add(fastsched.PRIORITY_LOW, "Deliver", 1)
    mark_running(dsn, job_id)
    assert q.add({"priority": fastsched.PRIORITY_HIGH, "force_priority": True}, "Deliver", 1) == job_id
    assert q.get(job_id).priority == fastsched.PRIORITY_LOW


def test_dedup_false_adds_twice(q: fastsched.Queue, dsn: str) -> None:
    a = q.add({"dedup": False}, "Ping", 1)
    b = q.add({"dedup": False}, "Ping", 1)
    assert a != b
    assert q.add(fastsched.PRIORITY_MEDIUM, "Ping", 1) not in (a, b)  # non-dedup jobs hold no key
    assert len(stored(dsn)) == 3


def test_identical_jobs_of_two_queues_are_two_jobs(q: fastsched.Queue, dsn: str) -> None:
    # A job waiting in one queue must not absorb its twin added to another: only the masters of
    # the other queue would ever run it, and a pool serving just that queue would never see it.
    default = q.add(fastsched.PRIORITY_MEDIUM, "Notify", 7)
    mail = q.add({"queue": "mail"}, "Notify", 7)
    assert mail != default
    assert q.add({"queue": "mail"}, "Notify", 7) == mail
    assert q.add_many([({"queue": "mail"}, "Notify", 7), (fastsched.PRIORITY_MEDIUM, "Notify", 7)]) == [mail, default]
    assert (q.get(default).queue, q.get(mail).queue) == ("default", "mail")
    assert len(stored(dsn)) == 2


# --- delay and created ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("delay", "expected"),
    [
        (90, T0 + dt.timedelta(seconds=90)),
        (1.5, T0 + dt.timedelta(seconds=1.5)),
        (dt.timedelta(minutes=5), T0 + dt.timedelta(minutes=5)),
        (T0 + HOUR, T0 + HOUR),  # a datetime is the time to run at; naive means UTC
        (dt.datetime(2030, 1, 1, 14, 0, tzinfo=dt.timezone(dt.timedelta(hours=1))), T0 + HOUR),
    ],
)
def test_delay_defers_the_job_until_next_try(q: fastsched.Queue, clock: Clock, delay: object, expected: dt.datetime) -> None:
    job_id = q.add({"delay": delay}, "Later")
    job = q.get(job_id)
    assert job.state is JobState.DEFERRED
    assert job.next_try == expected
    assert job.created == T0
    clock.now = expected
    assert q.get(job_id).state is JobState.WAITING


def test_zero_delay_is_no_delay(q: fastsched.Queue) -> None:
    job = q.get(q.add({"delay": 0}, "Now"))
    assert job.state is JobState.WAITING and job.next_try == T0


def test_created_sets_the_place_in_line(q: fastsched.Queue, dsn: str) -> None:
    parent_created = T0 - HOUR
    late = q.add(fastsched.PRIORITY_MEDIUM, "Child", "late")
    inherited = q.add({"created": parent_created}, "Child", "inherited")
    job = q.get(inherited)
    assert job.created == parent_created and job.next_try == parent_created
    assert job.state is JobState.WAITING
    assert q.backend.jobs_ahead(inherited) == 0
    assert q.backend.jobs_ahead(late) == 1
    order = sql(dsn, "SELECT id FROM workerqueue WHERE done=0 AND pid=0 ORDER BY next_try, id")
    assert [r[0] for r in order] == [inherited, late]


def test_created_with_delay_runs_after_the_delay(q: fastsched.Queue) -> None:
    job = q.get(q.add({"created": T0 - HOUR, "delay": 60}, "X"))
    assert job.created == T0 - HOUR and job.next_try == T0 + dt.timedelta(seconds=60)


# --- add_many ------------------------------------------------------------------------------------


def test_add_many_returns_ids_in_input_order(q: fastsched.Queue, dsn: str) -> None:
    ids = q.add_many(
        [
            (fastsched.PRIORITY_LOW, "A", 1),
            [fastsched.PRIORITY_HIGH, "B"],
            ({"delay": 60}, "C", "x", {"k": [1]}),
        ]
    )
    assert len(ids) == 3 and len(set(ids)) == 3
    jobs = [q.get(i) for i in ids]
    assert [(j.command, j.args, j.priority) for j in jobs] == [
        ("A", [1], 40),
        ("B", [], 20),
        ("C", ["x", {"k": [1]}], 30),
    ]
    assert jobs[2].state is JobState.DEFERRED
    assert [r[0] for r in stored(dsn)] == sorted(ids)


def test_add_many_dedups_within_the_batch_and_against_pending_jobs(q: fastsched.Queue, dsn: str) -> None:
    existing = q.add(fastsched.PRIORITY_MEDIUM, "A", 0)
    ids = q.add_many(
        [
            (fastsched.PRIORITY_MEDIUM, "A", 1),
            (fastsched.PRIORITY_MEDIUM, "A", 0),
            (fastsched.PRIORITY_MEDIUM, "A", 1),
            ({"dedup": False}, "A", 1),
        ]
    )
    assert ids[0] == ids[2]
    assert ids[1] == existing
    assert ids[3] not in (ids[0], existing)
    assert len(stored(dsn)) == 3


def test_add_many_takes_any_iterable_and_an_empty_one(q: fastsched.Queue) -> None:
    assert q.add_many([]) == []
    ids = q.add_many((30, "Gen", i) for i in range(50))
    assert [q.get(i).args for i in ids] == [[i] for i in range(50)]


def test_add_many_thousands(q: fastsched.Queue, dsn: str) -> None:
    ids = q.add_many((fastsched.PRIORITY_LOW, "Bulk", i, "x" * (i % 50)) for i in range(5000))
    assert len(set(ids)) == 5000 and ids == sorted(ids)
    assert sql(dsn, "SELECT COUNT(*) FROM workerqueue")[0][0] == 5000
    assert q.get(ids[4321]).args == [4321, "x" * (4321 % 50)]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ((30, "Good", object()), r"jobs\[2\]: args are not JSON-serializable: Object of type object"),
        ((30,), r"jobs\[2\]: needs at least a priority"),
        ("30,Good", r"jobs\[2\]: must be a tuple"),
        ((31, "Good"), r"jobs\[2\]: priority must be one of"),
        ((30, "bad command"), r"jobs\[2\]: command 'bad command' contains ' '"),
        (({"delay": -1}, "Good"), r"jobs\[2\]: delay must not be negative"),
    ],
)
def test_add_many_validates_everything_first_and_stores_nothing(
    q: fastsched.Queue, dsn: str, bad: object, message: str
) -> None:
    q.add(30, "Before")
    before = stored(dsn)
    with pytest.raises(InvalidInput, match=message):
        q.add_many([(30, "Good", 1), (30, "Good", 2), bad, (30, "Good", 3)])
    assert stored(dsn) == before


@pytest.mark.parametrize("jobs", [None, 5, "A", {"a": 1}])
def test_add_many_wants_an_iterable_of_tuples(q: fastsched.Queue, jobs: object) -> None:
    with pytest.raises(InvalidInput, match="jobs must be an iterable of tuples"):
        q.add_many(jobs)  # type: ignore[arg-type]


# --- invalid input: InvalidInput (a ValueError) naming the problem, and nothing stored ------------

_circular: list[object] = []
_circular.append(_circular)

BAD_ADDS: list[tuple[tuple[object, ...], str]] = [
    # priorities
    ((0, "Cmd"), "priority must be one of 10, 20, 30, 40, 50"),
    ((15, "Cmd"), "got 15"),
    ((60, "Cmd"), "got 60"),
    ((True, "Cmd"), "got True"),  # bool is not a priority
    ((30.0, "Cmd"), "got 30.0"),
    (("30", "Cmd"), "a priority or a dict of options"),
    ((None, "Cmd"), "a priority or a dict of options"),
    (({"priority": 99}, "Cmd"), "priority must be one of .* got 99"),
    (({"priority": False}, "Cmd"), "got False"),
    # options
    (({"delayed": 5}, "Cmd"), "unknown option 'delayed' \\(did you mean 'delay'\\?\\)"),
    (({"dont_fork": True}, "Cmd"), "unknown option 'dont_fork'"),
    (({1: 2}, "Cmd"), "unknown option 1"),
    (({"created": "2030-01-01 00:00:00"}, "Cmd"), "created must be a datetime, got str"),
    (({"created": dt.date(2030, 1, 1)}, "Cmd"), "created must be a datetime, got date"),
    (({"created": 1234567890}, "Cmd"), "created must be a datetime, got int"),
    (({"created": dt.datetime(999, 1, 1)}, "Cmd"), "created must not be before 1000-01-01"),
    (({"delay": -1}, "Cmd"), "delay must not be negative"),
    (({"delay": -0.5}, "Cmd"), "delay must not be negative"),
    (({"delay": dt.timedelta(seconds=-1)}, "Cmd"), "delay must not be negative"),
    (({"delay": "5"}, "Cmd"), "delay must be seconds .* got str"),
    (({"delay": True}, "Cmd"), "delay must be seconds .* got bool"),
    (({"delay": None}, "Cmd"), "delay must be seconds .* got NoneType"),
    (({"delay": math.nan}, "Cmd"), "delay must be a finite number"),
    (({"delay": math.inf}, "Cmd"), "delay must be a finite number"),
    (({"delay": 1e300}, "Cmd"), "delay is too large"),
    (({"delay": dt.timedelta.max}, "Cmd"), "delay is too large"),
    (({"force_priority": "yes"}, "Cmd"), "option 'force_priority' must be True or False"),
    (({"dedup": 1}, "Cmd"), "option 'dedup' must be True, False or 'waiting'"),
    (({"dedup": "running"}, "Cmd"), "option 'dedup' must be True, False or 'waiting'"),
    (({"queue": "mail box"}, "Cmd"), "queue 'mail box' contains ' '"),
    (({"queue": ""}, "Cmd"), "queue must not be empty"),
    (({"queue": 7}, "Cmd"), "queue must be a str, got int"),
    # commands
    ((30, 5), "command must be a str, got int"),
    ((30, None), "command must be a str, got NoneType"),
    ((30, b"Cmd"), "command must be a str, got bytes"),
    ((30, ""), "command must not be empty"),
    ((30, "C" * 101), "command is 101 characters long, the limit is 100"),
    ((30, "has space"), "contains ' '"),
    ((30, "semi;colon"), "contains ';'"),
    ((30, "ünicode"), "contains 'ü'"),
    ((30, "new\nline"), "contains '\\\\n'"),
    ((30, "quote'"), "contains \"'\""),
    # args
    ((30, "Cmd", object()), "args are not JSON-serializable: Object of type object is not JSON serializable"),
    ((30, "Cmd", {1, 2}), "Object of type set"),
    ((30, "Cmd", b"bytes"), "Object of type bytes"),
    ((30, "Cmd", dt.datetime(2030, 1, 1)), "Object of type datetime"),
    ((30, "Cmd", math.nan), "NaN or infinity"),
    ((30, "Cmd", [1, {"x": -math.inf}]), "NaN or infinity"),
    ((30, "Cmd", {1: "a", "b": 2}), "keys cannot be sorted"),
    ((30, "Cmd", {(1, 2): "a"}), "keys must be str, int, float, bool or None"),
    ((30, "Cmd", _circular), "contain themselves"),
    ((30, "Cmd", "lone \ud800 surrogate"), "not valid Unicode"),
    ((30, "Cmd", "x" * (1024 * 1024)), "args are 1048580 bytes as JSON, the limit is 1048576 bytes"),
    ((30, "Cmd", "é" * (600 * 1024)), "args are 1228804 bytes as JSON, the limit is 1048576 bytes"),
]


@pytest.mark.parametrize(("call", "message"), BAD_ADDS, ids=[m[:40] for _, m in BAD_ADDS])
def test_bad_input_raises_invalid_input_naming_the_problem(
    q: fastsched.Queue, dsn: str, call: tuple[object, ...], message: str
) -> None:
    q.add(30, "Existing")
    before = stored(dsn)
    with pytest.raises(InvalidInput, match=message) as info:
        q.add(*call)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError) and isinstance(info.value, FastschedError)
    assert stored(dsn) == before


def test_parameter_size_limit_is_configurable(dsn: str, clock: Clock) -> None:
    with fastsched.connect(dsn, clock=clock, max_parameter_bytes=100) as q:
        q.add(30, "Small", "x" * 96)  # ["x...x"] is 100 bytes
        with pytest.raises(InvalidInput, match="args are 101 bytes as JSON, the limit is 100 bytes"):
            q.add(30, "Small", "x" * 97)
    for bad in (0, -1, True, "1mb", 2**40):
        with pytest.raises(ConfigError, match="max_parameter_bytes"):
            fastsched.connect(dsn, max_parameter_bytes=bad)  # type: ignore[arg-type]


def test_the_command_alphabet(q: fastsched.Queue) -> None:
    for command in ("Notifier", "app.tasks:send_mail", "addon/bluesky/bluesky_feed.php", "a-b_c", "C" * 100, "7"):
        assert q.get(q.add(30, command)).command == command


def test_connection_of_the_wrong_driver_is_refused(q: fastsched.Queue, dsn: str) -> None:
    wrong: Any = object() if parse_dsn(dsn).dialect == "mysql" else sqlite3  # a module is no connection
    with pytest.raises(InvalidInput, match="connection must be"):
        q.add(30, "Cmd", connection=wrong)
    assert stored(dsn) == []


# --- transactions: the job commits or rolls back with the caller's data ---------------------------


def _app_table(conn: Any) -> None:
    cur = conn.cursor()
    cur.execute("CREATE TABLE IF NOT EXISTS app_orders (id INTEGER PRIMARY KEY, note VARCHAR(50))")
    cur.execute("DELETE FROM app_orders")
    conn.commit()


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
def test_add_inside_the_callers_transaction(q: fastsched.Queue, dsn: str, outcome: str) -> None:
    conn = raw_connect(dsn)  # pymysql for MariaDB, sqlite3 for SQLite
    try:
        _app_table(conn)
        cur = conn.cursor()
        cur.execute("INSERT INTO app_orders (id, note) VALUES (1, 'order')")
        job_id = q.add(fastsched.PRIORITY_HIGH, "ShipOrder", 1, connection=conn)
        many = q.add_many([(30, "Mail", 1), (30, "Mail", 2)], connection=conn)
        getattr(conn, outcome)()
    finally:
        conn.close()
    orders = sql(dsn, "SELECT COUNT(*) FROM app_orders")[0][0]
    if outcome == "commit":
        assert orders == 1
        assert q.get(job_id).command == "ShipOrder"
        assert [q.get(i).args for i in many] == [[1], [2]]
    else:
        assert orders == 0
        for i in [job_id, *many]:
            with pytest.raises(JobNotFound):
                q.get(i)
        assert stored(dsn) == []
        # The rolled-back key does not block the job later.
        assert q.get(q.add(fastsched.PRIORITY_HIGH, "ShipOrder", 1)).state is JobState.WAITING


# --- cancel, retry, failed, purge, stats -----------------------------------------------------------


def test_cancel_deletes_a_waiting_job_and_returns_it(dsn: str) -> None:
    with fastsched.connect(dsn) as q:  # the real clock: cancel() computes the state it returns against it
        job_id = q.add(30, "Cancel", 1)
        job = q.cancel(job_id)
        assert job.id == job_id and job.state is JobState.WAITING
        with pytest.raises(JobNotFound):
            q.get(job_id)
        with pytest.raises(JobNotFound):
            q.cancel(job_id)
        assert q.add(30, "Cancel", 1) != job_id  # the key went with it


def test_cancel_deferred_and_failed_deletes_them_running_asks_its_master_done_refused(
    q: fastsched.Queue, dsn: str, clock: Clock
) -> None:
    deferred = q.add({"delay": 60}, "D")
    assert q.cancel(deferred).state is JobState.DEFERRED
    failed = q.add(30, "F")
    mark_failed(q, failed, clock())
    assert q.cancel(failed).state is JobState.FAILED
    running = q.add(30, "R")
    mark_running(dsn, running)
    assert q.cancel(running, by="alice").state is JobState.RUNNING  # a request: the job still runs
    assert q.backend.cancel_request(running) == ("alice", clock())
    q.cancel(running, by="bob")  # asking again changes nothing: alice asked first
    assert q.backend.cancel_request(running) == ("alice", clock())
    done = q.add(30, "Done")
    mark_done(dsn, done)
    with pytest.raises(InvalidState, match="done"):
        q.cancel(done)
    assert q.get(running).state is JobState.RUNNING and q.get(done).state is JobState.DONE


def test_failed_lists_failed_jobs_newest_first(q: fastsched.Queue, clock: Clock) -> None:
    ids = [q.add(30, "F", i) for i in range(5)]
    q.add(30, "Ok")
    for i in ids:
        mark_failed(q, i, clock(), error=f"error {i}")
        clock.advance(1)
    failed = q.failed()
    assert [j.id for j in failed] == ids[::-1]
    assert failed[0].last_error == f"error {ids[-1]}" and failed[0].state is JobState.FAILED
    assert [j.id for j in q.failed(limit=2)] == ids[::-1][:2]
    assert q.failed(limit=0) == []
    with pytest.raises(InvalidInput, match="limit"):
        q.failed(limit=-1)


def test_retry_puts_a_failed_job_back_to_waiting(q: fastsched.Queue, dsn: str, clock: Clock) -> None:
    job_id = q.add({"delay": 30}, "R", 1)
    mark_failed(q, job_id, clock())
    clock.advance(3600)
    job = q.retry(job_id)
    assert job.id == job_id and job.state is JobState.WAITING
    assert q.get(job_id).state is JobState.WAITING and q.get(job_id).retrial == 0
    assert q.get(job_id).next_try == clock()
    assert q.add(30, "R", 1) == job_id  # pending again: dedup holds
    with pytest.raises(InvalidState):
        q.retry(job_id)
    with pytest.raises(JobNotFound):
        q.retry(10**9)


def test_retry_when_an_identical_job_is_pending_returns_that_one(q: fastsched.Queue, dsn: str, clock: Clock) -> None:
    old = q.add(30, "Dup", 1)
    mark_failed(q, old, clock())
    new = q.add(30, "Dup", 1)
    assert q.retry(old).id == new
    with pytest.raises(JobNotFound):
        q.get(old)
    assert len(stored(dsn)) == 1


def test_retry_all(q: fastsched.Queue, clock: Clock) -> None:
    ids = [q.add(30, "All", i) for i in range(3)]
    for i in ids:
        mark_failed(q, i, clock())
    assert q.retry_all() == 3
    assert {q.get(i).state for i in ids} == {JobState.WAITING}
    assert q.retry_all() == 0


def test_purge_deletes_old_done_jobs_only(q: fastsched.Queue, dsn: str, clock: Clock) -> None:
    old_done = q.add({"created": T0 - 2 * HOUR}, "Old", 1)
    new_done = q.add({"created": T0 - dt.timedelta(minutes=10)}, "New", 1)
    for i in (old_done, new_done):
        mark_done(dsn, i)
    failed = q.add(30, "Failed")
    mark_failed(q, failed, T0 - 3 * HOUR)
    pending = q.add({"created": T0 - 5 * HOUR}, "Pending")
    assert q.purge() == 1  # default: done more than an hour ago
    with pytest.raises(JobNotFound):
        q.get(old_done)
    assert q.get(new_done).state is JobState.DONE
    assert q.purge(older_than=300) == 1  # seconds
    assert q.purge(older_than=dt.timedelta(minutes=1)) == 0
    clock.advance(4 * 3600)
    assert q.purge(include_failed=True) == 1
    assert [r[0] for r in stored(dsn)] == [pending]
    for bad in (-1, dt.timedelta(seconds=-1), "1h", None, math.nan):
        with pytest.raises(InvalidInput, match="older_than"):
            q.purge(older_than=bad)  # type: ignore[arg-type]


def test_purge_loops_over_bounded_batches(q: fastsched.Queue, dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fastsched.backends.controls, "BULK_WINDOW", 7)
    ids = q.add_many(({"created": T0 - 2 * HOUR}, "Bulk", i) for i in range(30))
    sql(dsn, "UPDATE workerqueue SET done=1, finished=created, dedup_hash=NULL")
    assert q.purge() == len(ids) == 30
    assert stored(dsn) == []


def test_stats_per_priority(q: fastsched.Queue, dsn: str, clock: Clock) -> None:
    q.add({"priority": fastsched.PRIORITY_HIGH, "created": T0 - dt.timedelta(seconds=90)}, "W", 1)
    q.add(fastsched.PRIORITY_HIGH, "W", 2)
    q.add({"priority": fastsched.PRIORITY_HIGH, "delay": 60}, "D", 1)
    running = q.add(fastsched.PRIORITY_LOW, "R", 1)
    mark_running(dsn, running)
    failed = q.add(fastsched.PRIORITY_LOW, "F", 1)
    mark_failed(q, failed, clock())
    recent = q.add({"priority": fastsched.PRIORITY_NEGLIGIBLE, "created": T0 - dt.timedelta(minutes=5)}, "Done", 1)
    old = q.add({"priority": fastsched.PRIORITY_NEGLIGIBLE, "created": T0 - 2 * HOUR}, "Done", 2)
    mark_done(dsn, recent)
    mark_done(dsn, old)

    stats = q.stats()
    assert [s.priority for s in stats] == [10, 20, 30, 40, 50]
    by = {s.priority: s for s in stats}
    high, low, negligible = by[20], by[40], by[50]
    assert (high.waiting, high.deferred, high.running, high.failed) == (2, 1, 0, 0)
    assert high.oldest_waiting_seconds == pytest.approx(90)
    assert (low.waiting, low.deferred, low.running, low.failed) == (0, 0, 1, 1)
    assert negligible.done_last_hour == 1
    assert by[10].waiting == 0 and by[10].oldest_waiting_seconds is None


# --- module-level functions and the default queue ---------------------------------------------------


def test_module_level_functions_use_fastsched_dsn(dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTSCHED_DSN", dsn)
    job_id = fastsched.add(fastsched.PRIORITY_HIGH, "Module", 1)
    assert fastsched.get(job_id).args == [1]
    assert fastsched.add(fastsched.PRIORITY_HIGH, "Module", 1) == job_id
    assert fastsched.add_many([(30, "Module", 2)])[0] != job_id
    assert sum(s.waiting for s in fastsched.stats()) == 2
    assert fastsched.cancel(job_id).id == job_id
    assert fastsched.purge() == 0
    assert fastsched.queue.default_queue().dsn == parse_dsn(dsn)
    assert fastsched.queue.default_queue() is fastsched.queue.default_queue()


def test_reset_default_reads_the_environment_again(sqlite_dsn: str, mysql_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTSCHED_DSN", sqlite_dsn)
    assert fastsched.queue.default_queue().dsn.dialect == "sqlite"
    monkeypatch.setenv("FASTSCHED_DSN", mysql_dsn)
    assert fastsched.queue.default_queue().dsn.dialect == "sqlite"  # opened once, kept
    fastsched.queue.reset_default()
    assert fastsched.queue.default_queue().dsn.dialect == "mysql"


def test_default_is_a_sqlite_file_in_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FASTSCHED_DSN", raising=False)
    monkeypatch.chdir(tmp_path)
    job_id = fastsched.add(30, "Local")
    assert (tmp_path / "fastsched.sqlite3").exists()
    assert fastsched.get(job_id).command == "Local"


def test_a_queue_can_be_shared_by_threads(dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTSCHED_DSN", dsn)
    errors: list[BaseException] = []
    ids: list[int] = []

    def work(n: int) -> None:
        try:
            for i in range(20):
                ids.append(fastsched.add(30, "Threaded", n, i))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(set(ids)) == 80


def _add_in_child(result: Any) -> None:
    result.put(fastsched.add(30, "InChild", os.getpid()))


def test_a_forked_child_gets_a_default_queue_of_its_own(dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTSCHED_DSN", dsn)
    parent_id = fastsched.add(30, "InParent")
    ctx = multiprocessing.get_context("fork")
    result = ctx.Queue()
    child = ctx.Process(target=_add_in_child, args=(result,))
    child.start()
    child_id = result.get(timeout=30)
    child.join(30)
    assert child.exitcode == 0
    assert fastsched.get(child_id).command == "InChild"
    assert fastsched.get(parent_id).command == "InParent"  # the parent's connection still works
    assert fastsched.add(30, "InParent") == parent_id


# --- wake-ups -----------------------------------------------------------------------------------


@pytest.fixture
def listener(q: fastsched.Queue, monkeypatch: pytest.MonkeyPatch) -> Iterator[wakeup.Listener]:
    directory = tempfile.mkdtemp(prefix="fsw", dir="/tmp")  # short: Unix socket paths are limited
    monkeypatch.setenv("XDG_RUNTIME_DIR", directory)
    ears = wakeup.Listener(q.dsn.identity, "test")
    try:
        yield ears
    finally:
        ears.close()
        shutil.rmtree(directory, ignore_errors=True)


def test_add_wakes_the_masters_but_not_for_delayed_or_uncommitted_jobs(
    q: fastsched.Queue, dsn: str, listener: wakeup.Listener
) -> None:
    q.add(30, "Now")
    assert listener.drain() == 1
    q.add_many([(30, "Many", 1), (30, "Many", 2)])
    assert listener.drain() == 1
    q.add({"delay": 60}, "Later")
    q.add_many([({"delay": 60}, "Later", 2)])
    assert listener.drain() == 0
    conn = raw_connect(dsn)
    try:
        q.add(30, "InTransaction", connection=conn)
        conn.commit()
    finally:
        conn.close()
    assert listener.drain() == 0


def test_a_wake_up_names_the_priority_of_the_one_job_added(q: fastsched.Queue, listener: wakeup.Listener) -> None:
    """A busy master counts such a job without reading the database; anything else (add_many,
    retry) names none, and the master reads its counts again."""
    q.add(20, "High")
    q.add(50, "Negligible")
    assert listener.drain() == 2 and listener.take_added() == [20, 50]
    assert listener.take_added() == []
    q.add(30, "One")
    q.add_many([(10, "Many", 1), (30, "Many", 2)])
    assert listener.drain() == 2 and listener.take_added() is None
    assert listener.take_added() == []
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as stranger:  # not a priority: read the counts
        stranger.sendto(b"20; DROP", listener.path)
    assert listener.drain() == 1 and listener.take_added() is None


# --- the password never shows ---------------------------------------------------------------------


def _chain(exc: BaseException | None) -> str:
    text = ""
    while exc is not None:
        text += f"{exc!s} {exc!r} "
        exc = exc.__cause__ or exc.__context__
    return text


def test_unreachable_mysql_raises_database_unavailable_without_the_password() -> None:
    with pytest.raises(DatabaseUnavailable) as info:
        fastsched.connect(f"mysql://root:{SECRET}@127.0.0.1:1/x")
    assert SECRET not in _chain(info.value)
    assert isinstance(info.value, FastschedError)


def test_wrong_password_error_does_not_show_it(mysql_dsn: str) -> None:
    d = parse_dsn(mysql_dsn)
    with pytest.raises(fastsched.DatabaseError) as info:
        fastsched.connect(f"mysql://{d.user}:{SECRET}@{d.host}:{d.port}/{d.database}")
    assert SECRET not in _chain(info.value)


@pytest.fixture
def mysql_dsn_with_password(mysql_dsn: str) -> Iterator[str]:
    """The test database, reached as a user whose password is SECRET."""
    d = parse_dsn(mysql_dsn)
    admin = pymysql.connect(host=d.host, port=d.port, user=d.user, password=d.password, autocommit=True)
    user = "fastsched_pw_" + d.database[-8:]
    try:
        with admin.cursor() as cur:
            cur.execute(f"CREATE USER IF NOT EXISTS '{user}'@'%' IDENTIFIED BY '{SECRET}'")
            cur.execute(f"GRANT ALL ON `{d.database}`.* TO '{user}'@'%'")
        yield f"mysql://{user}:{SECRET}@{d.host}:{d.port}/{d.database}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP USER IF EXISTS '{user}'@'%'")
        admin.close()


def test_queue_repr_masks_the_password(mysql_dsn_with_password: str) -> None:
    with fastsched.connect(mysql_dsn_with_password) as queue:
        assert SECRET not in repr(queue) and SECRET not in str(queue) and SECRET not in repr(queue.dsn)
        assert repr(queue).startswith("<fastsched.Queue mysql://fastsched_pw_") and ":***@" in repr(queue)
        assert queue.get(queue.add(30, "WithPassword")).command == "WithPassword"


def test_malformed_dsn_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="unsupported DSN scheme 'postgres'"):
        fastsched.connect(f"postgres://u:{SECRET}@h/db")
    with pytest.raises(ConfigError) as info:
        fastsched.connect(f"mysql://u:{SECRET}@h:0/db")
    assert SECRET not in str(info.value)


def test_queue_is_a_context_manager_and_reopens_after_close(q: fastsched.Queue) -> None:
    job_id = q.add(30, "Reopen")
    q.close()
    assert q.get(job_id).command == "Reopen"
    with q as same:
        assert same is q


# --- the public API -----------------------------------------------------------------------------


def test_public_names() -> None:
    for name in (
        "Priority", "PRIORITY_CRITICAL", "PRIORITY_HIGH", "PRIORITY_MEDIUM", "PRIORITY_LOW", "PRIORITY_NEGLIGIBLE",
        "connect", "Queue", "add", "add_many", "get", "stats", "cancel", "retry", "purge", "Job", "JobState",
        "FastschedError", "InvalidInput", "ConfigError", "DatabaseError", "DatabaseUnavailable", "JobNotFound",
        "InvalidState", "__version__", "task", "periodic", "defer", "current_job",
    ):
        assert hasattr(fastsched, name), name
    assert fastsched.PRIORITY_CRITICAL == 10 and fastsched.PRIORITY_NEGLIGIBLE == 50
    assert issubclass(fastsched.InvalidInput, ValueError)


def test_version_matches_pyproject() -> None:
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    assert fastsched.__version__ == tomllib.loads(pyproject.read_text())["project"]["version"]


def test_import_does_no_io(tmp_path: Path) -> None:
    code = (
        "import sys, fastsched\n"
        "assert 'pymysql' not in sys.modules and 'sqlite3' not in sys.modules, sorted(sys.modules)\n"
        "assert fastsched.queue._default is None\n"
    )
    env = {**os.environ, "FASTSCHED_DSN": f"mysql://root:{SECRET}@127.0.0.1:1/x"}
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert list(tmp_path.iterdir()) == []


# --- properties: any call either returns an id or raises InvalidInput, and stores nothing then ------

_json_leaves = (
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
    | st.binary(max_size=4) | st.sampled_from([dt.date(2030, 1, 1), object(), {1, 2}])
)
_json_like = st.recursive(
    _json_leaves,
    lambda inner: st.lists(inner, max_size=3) | st.tuples(inner) | st.dictionaries(
        st.text(max_size=5) | st.integers(-3, 3) | st.none(), inner, max_size=3
    ),
    max_leaves=8,
)
_commands = st.text(max_size=110) | st.from_regex(r"[A-Za-z0-9_.:/-]{1,100}", fullmatch=True) | st.integers() | st.none()
_firsts = (
    st.sampled_from(list(Priority)) | st.integers(-5, 60) | st.booleans() | st.floats() | st.none() | st.text(max_size=3)
    | st.fixed_dictionaries(
        {},
        optional={
            "priority": st.sampled_from(list(Priority)) | st.integers(0, 60) | st.none(),
            "delay": st.integers(-5, 10**6) | st.floats() | st.timedeltas() | st.text(max_size=2),
            "created": st.datetimes(min_value=dt.datetime(900, 1, 1)) | st.dates() | st.integers(),
            "force_priority": st.booleans() | st.integers(0, 1),
            "dedup": st.booleans() | st.none(),
            "bogus": st.just(1),
        },
    )
)


def _normalized(args: tuple[object, ...]) -> object:
    return json.loads(json.dumps(list(args), sort_keys=True))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=_firsts, command=_commands, args=st.lists(_json_like, max_size=4))
def test_add_returns_an_id_or_raises_invalid_input(
    q: fastsched.Queue, rowcount: Callable[[], int], first: Any, command: Any, args: list[Any]
) -> None:
    count = rowcount()
    try:
        job_id = q.add(first, command, *args)
    except InvalidInput as exc:
        assert str(exc)
        assert rowcount() == count
        return
    job = q.get(job_id)
    assert job.command == command
    assert job.args == _normalized(tuple(args))
    assert job.priority in (10, 20, 30, 40, 50)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(jobs=st.lists(st.tuples(_firsts, _commands, _json_like), max_size=6))
def test_add_many_stores_all_or_nothing(
    q: fastsched.Queue, rowcount: Callable[[], int], jobs: list[tuple[Any, Any, Any]]
) -> None:
    count = rowcount()
    try:
        ids = q.add_many(jobs)
    except InvalidInput as exc:
        assert str(exc).startswith("jobs[")
        assert rowcount() == count
        return
    assert len(ids) == len(jobs)
    for job_id, (_, command, arg) in zip(ids, jobs):
        job = q.get(job_id)
        assert job.command == command and job.args == _normalized((arg,))


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)


@given(args=st.lists(_json_values, max_size=5))
def test_canonical_parameter_is_json_dumps_sorted_and_compact(args: list[Any]) -> None:
    expected = json.dumps(list(args), separators=(",", ":"), ensure_ascii=False, sort_keys=True, allow_nan=False)
    assert fastsched.queue.canonical_parameter(args) == expected
    digest = fastsched.queue.dedup_hash("Cmd", expected)
    assert digest == hashlib.sha1(b"Cmd\0" + expected.encode()).digest() and len(digest) == 20
