"""The storage contract (fastsched.backends.contracts: ProducerStore, MasterStore, OperatorStore), one suite run against every backend on
real servers: a SQLite file and the MariaDB of the test run, through the ``dsn`` fixture."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import multiprocessing
import sqlite3
import threading
import time
from collections.abc import Iterator
from typing import Any

import pymysql
import pytest

from fastsched.backends import open_backend
from fastsched.backends.base import SCHEMA_VERSION, Backend, PlanCounts
from fastsched.backends.mysql import PACKED_CLAIM_MIN_ROWS, check_server_version
from fastsched.backends.sqlfiles import load_queries
from fastsched.dsn import parse_dsn
from fastsched.errors import (
    ConfigError,
    DatabaseError,
    DatabaseUnavailable,
    InvalidState,
    JobNotFound,
    SchemaError,
    UnsupportedServer,
)
from fastsched.jobs import Failure, JobState, NewJob, Outcomes, Retry
from tests.conftest import fail_jobs

NOW = dt.datetime(2030, 1, 2, 3, 4, 5, 678901)
SECOND = dt.timedelta(seconds=1)
HOST = "host-a"
MYSQL_QUERIES = load_queries("mysql")
OTHER = "host-b"


def new_job(
    *args: object,
    command: str = "Cmd",
    priority: int = 30,
    created: dt.datetime = NOW,
    next_try: dt.datetime | None = None,
    dedup: bool = True,
    force: bool = False,
) -> NewJob:
    parameter = json.dumps(list(args), separators=(",", ":"))
    digest = hashlib.sha1(command.encode() + b"\0" + parameter.encode()).digest() if dedup else None
    return NewJob(command, parameter, priority, created, next_try or created, digest, force)


@pytest.fixture
def backend(dsn: str) -> Iterator[Backend]:
    b = open_backend(dsn)
    yield b
    b.close()


@contextlib.contextmanager
def raw(dsn: str) -> Iterator[tuple[Any, str]]:
    """A plain driver connection in autocommit mode, and its placeholder."""
    parsed = parse_dsn(dsn)
    if parsed.dialect == "sqlite":
        conn: Any = sqlite3.connect(parsed.database, isolation_level=None, timeout=10)
        placeholder = "?"
    else:
        conn = pymysql.connect(
            host=parsed.host,
            port=parsed.port,
            user=parsed.user,
            password=parsed.password,
            database=parsed.database,
            autocommit=True,
        )
        placeholder = "%s"
    try:
        yield conn, placeholder
    finally:
        conn.close()


def raw_query(dsn: str, sql: str, *params: object) -> list[tuple[Any, ...]]:
    """Run ``sql`` (written with ``?`` placeholders) on a connection of its own."""
    with raw(dsn) as (conn, placeholder):
        cur = conn.cursor()
        cur.execute(sql.replace("?", placeholder), params)
        return list(cur.fetchall()) if cur.description else []


def claim_all(
    backend: Backend, host: str = HOST, pid: int = 101, now: dt.datetime = NOW, limit: int = 1000
) -> list[int]:
    """Claim every runnable job of every priority for one child; their ids."""
    ids: list[int] = []
    for rank in range(5):
        wanted = [0] * 5
        wanted[rank] = limit
        for batch in backend.claim(wanted, [pid] * limit, host, limit, now):
            ids.extend(job.id for job in batch.jobs)
    return ids


def complete(backend: Backend, ids: list[int], host: str = HOST, now: dt.datetime = NOW) -> None:
    backend.write_outcomes(host, now, Outcomes(done=list(ids)))


# ------------------------------------------------------------------------------------- schema


def test_schema_is_created_on_first_use_and_init_is_idempotent(dsn: str) -> None:
    b = open_backend(dsn)
    try:
        assert b.add_many([new_job(1)])  # no init_schema: the first operation creates the tables
        b.init_schema()
        b.init_schema()
        rows = raw_query(dsn, "SELECT value FROM fastsched_meta WHERE name = 'schema_version'")
        assert rows == [(str(SCHEMA_VERSION),)]
        assert b.stats(NOW)[2].waiting == 1
    finally:
        b.close()


def test_a_newer_schema_is_refused_naming_both_versions(dsn: str, backend: Backend) -> None:
    backend.init_schema()
    raw_query(
        dsn, "UPDATE fastsched_meta SET value = ? WHERE name = 'schema_version'", str(SCHEMA_VERSION + 41)
    )
    fresh = open_backend(dsn)
    try:
        with pytest.raises(SchemaError) as info:
            fresh.get(1, NOW)
        assert str(SCHEMA_VERSION + 41) in str(info.value) and str(SCHEMA_VERSION) in str(info.value)
        with pytest.raises(SchemaError):
            fresh.init_schema()
    finally:
        fresh.close()


# ------------------------------------------------------------------------------------ add_many


def test_add_many_returns_ids_in_input_order(backend: Backend) -> None:
    jobs = [new_job(i, dedup=i % 3 != 0, priority=(10, 20, 30, 40, 50)[i % 5]) for i in range(2_500)]
    ids = backend.add_many(jobs)
    assert len(ids) == len(set(ids)) == 2_500
    assert ids == sorted(ids)
    for i in (0, 1, 999, 1_000, 1_001, 2_499):
        job = backend.get(ids[i], NOW)
        assert (job.args, job.priority, job.state) == ([i], jobs[i].priority, JobState.WAITING)


def test_add_many_with_big_parameters_spans_several_statements(backend: Backend) -> None:
    text = "é" * 10_000  # 20 kB of UTF-8 per job, 3 MB in all: more than one INSERT can carry
    jobs = [new_job(i, text, dedup=i % 2 == 0) for i in range(150)] + [new_job(0, text)]
    ids = backend.add_many(jobs)
    assert ids[-1] == ids[0] and len(set(ids)) == 150 and ids[:150] == sorted(ids[:150])
    assert [backend.get(ids[i], NOW).args for i in (0, 1, 77, 149)] == [[i, text] for i in (0, 1, 77, 149)]


def test_single_add_and_empty_add(backend: Backend) -> None:
    assert backend.add_many([]) == []
    (first,) = backend.add_many([new_job("a")])
    (second,) = backend.add_many([new_job("b", dedup=False)])
    assert second > first
    assert backend.get(second, NOW).args == ["b"]


def test_ids_without_consecutive_autoincrement(dsn: str, backend: Backend) -> None:
    """The fallback for servers that do not hand a multi-row INSERT consecutive ids
    (InnoDB autoinc lock mode 2): ids are read back by dedup hash, placeholders cleared."""
    backend.add_many([new_job("warm-up")])  # connect first, then pretend ids interleave
    backend.connection.consecutive_ids = False  # type: ignore[attr-defined]
    jobs = [new_job(i, dedup=i % 2 == 0) for i in range(1_500)] + [new_job("warm-up")]
    ids = backend.add_many(jobs)
    assert len(set(ids[:-1])) == 1_500
    assert [backend.get(ids[i], NOW).args for i in (0, 1, 1_001, 1_499)] == [[0], [1], [1_001], [1_499]]
    # the placeholder hashes of jobs without dedup were cleared
    assert raw_query(dsn, "SELECT COUNT(*) FROM workerqueue WHERE dedup_hash IS NULL") == [(750,)]


def test_dedup_returns_the_pending_job(backend: Backend) -> None:
    (first,) = backend.add_many([new_job("x")])
    x1, y, x2 = backend.add_many([new_job("x"), new_job("y"), new_job("x")])
    assert x1 == x2 == first != y
    assert backend.add_many([new_job("y")]) == [y]
    assert backend.stats(NOW)[2].waiting == 2
    # dedup off: always a new job
    a, b = backend.add_many([new_job("x", dedup=False), new_job("x", dedup=False)])
    assert len({first, a, b}) == 3


def test_duplicates_within_one_call_collapse(backend: Backend) -> None:
    ids = backend.add_many([new_job("d"), new_job("e"), new_job("d"), new_job("d", priority=10, force=True)])
    assert ids[0] == ids[2] == ids[3] != ids[1]
    assert backend.get(ids[0], NOW).priority == 10  # the later force_priority duplicate won


def test_a_running_job_still_deduplicates(backend: Backend) -> None:
    (job_id,) = backend.add_many([new_job("r")])
    assert claim_all(backend) == [job_id]
    assert backend.add_many([new_job("r")]) == [job_id]


def test_after_done_an_identical_job_is_new(backend: Backend) -> None:
    (job_id,) = backend.add_many([new_job("z")])
    claim_all(backend)
    complete(backend, [job_id])
    assert backend.get(job_id, NOW).state is JobState.DONE
    (again,) = backend.add_many([new_job("z")])
    assert again != job_id


def test_a_failed_job_does_not_block_a_new_one(backend: Backend) -> None:
    (job_id,) = backend.add_many([new_job("f")])
    assert fail_jobs(backend, [job_id], "unknown command", NOW) == 1
    (again,) = backend.add_many([new_job("f")])
    assert again != job_id


def test_force_priority_only_changes_an_unclaimed_job(backend: Backend) -> None:
    (job_id,) = backend.add_many([new_job("p", priority=30)])
    assert backend.add_many([new_job("p", priority=10)]) == [job_id]
    assert backend.get(job_id, NOW).priority == 30  # without force: unchanged
    assert backend.add_many([new_job("p", priority=10, force=True)]) == [job_id]
    assert backend.get(job_id, NOW).priority == 10
    assert claim_all(backend) == [job_id]
    assert backend.add_many([new_job("p", priority=50, force=True)]) == [job_id]
    assert backend.get(job_id, NOW).priority == 10  # claimed: untouched


def test_add_inside_the_callers_transaction(dsn: str, backend: Backend) -> None:
    backend.init_schema()
    parsed = parse_dsn(dsn)
    for outcome in ("commit", "rollback"):
        if parsed.dialect == "sqlite":
            conn: Any = sqlite3.connect(parsed.database, timeout=10)  # legacy mode: implicit BEGIN
        else:
            conn = pymysql.connect(
                host=parsed.host,
                port=parsed.port,
                user=parsed.user,
                password=parsed.password,
                database=parsed.database,
                autocommit=False,
            )
        try:
            ids = backend.add_many([new_job(outcome, i) for i in range(3)], connection=conn)
            assert len(set(ids)) == 3
            if outcome == "commit":
                conn.commit()
                assert [backend.get(i, NOW).args for i in ids] == [[outcome, i] for i in range(3)]
            else:
                conn.rollback()
                for job_id in ids:
                    with pytest.raises(JobNotFound):
                        backend.get(job_id, NOW)
        finally:
            conn.close()


def test_add_on_a_callers_autocommit_sqlite_connection(sqlite_dsn: str) -> None:
    b = open_backend(sqlite_dsn)
    try:
        b.init_schema()
        conn = sqlite3.connect(parse_dsn(sqlite_dsn).database, isolation_level=None)
        ids = b.add_many([new_job(i, dedup=i == 0) for i in range(3)], connection=conn)
        conn.close()
        assert [b.get(i, NOW).args for i in ids] == [[0], [1], [2]]
    finally:
        b.close()


# ------------------------------------------------------------------------------ reading jobs


def test_get_computes_the_state(backend: Backend) -> None:
    done, waiting, deferred, running, failed = backend.add_many(
        [
            new_job("o"),
            new_job("w"),
            new_job("d", next_try=NOW + 60 * SECOND),
            new_job("r", priority=10),
            new_job("f"),
        ]
    )
    backend.claim([1, 0, 0, 0, 0], [7], HOST, 10, NOW)
    (batch,) = backend.claim([0, 0, 5, 0, 0], [8], OTHER, 1, NOW)
    assert [job.id for job in batch.jobs] == [done]
    complete(backend, [done], OTHER)
    fail_jobs(backend, [failed], "broken", NOW)
    states = {i: backend.get(i, NOW).state for i in (waiting, deferred, running, done, failed)}
    assert states == {
        waiting: JobState.WAITING,
        deferred: JobState.DEFERRED,
        running: JobState.RUNNING,
        done: JobState.DONE,
        failed: JobState.FAILED,
    }
    assert backend.get(deferred, NOW + 60 * SECOND).state is JobState.WAITING
    job = backend.get(running, NOW)
    assert (job.pid, job.host, job.executed, job.finished) == (7, HOST, NOW, None)
    failed_job = backend.get(failed, NOW)
    assert (failed_job.finished, failed_job.last_error) == (NOW, "broken")
    with pytest.raises(JobNotFound):
        backend.get(10**9, NOW)


def test_get_keeps_times_exact_and_unparsable_parameters(backend: Backend) -> None:
    created = dt.datetime(2029, 12, 31, 23, 59, 59, 1)
    bad = NewJob("Cmd", "{not json", 20, created, created + SECOND, None, False)
    (job_id,) = backend.add_many([bad])
    job = backend.get(job_id, NOW)
    assert (job.created, job.next_try, job.args, job.parameter) == (
        created,
        created + SECOND,
        None,
        "{not json",
    )
    assert (job.retrial, job.crashes, job.pid, job.host, job.last_error) == (0, 0, 0, "", None)


def test_cancel(backend: Backend) -> None:
    waiting, deferred, running, failed = backend.add_many(
        [new_job("w"), new_job("d", next_try=NOW + 3600 * SECOND), new_job("r", priority=10), new_job("f")]
    )
    backend.claim([1, 0, 0, 0, 0], [9], HOST, 1, NOW)
    fail_jobs(backend, [failed], "nope", NOW)
    for job_id in (waiting, deferred, failed):
        assert backend.cancel(job_id).id == job_id
        with pytest.raises(JobNotFound):
            backend.get(job_id, NOW)
    assert backend.cancel(running, "ops", NOW).state is JobState.RUNNING  # asks its master to stop it
    assert backend.cancel_request(running) == ("ops", NOW)
    assert backend.cancel_requests(HOST) == [(running, "ops")]
    assert backend.cancel_requests("elsewhere") == []
    complete(backend, [running])
    assert backend.drop_stale_cancel_requests() == 1  # it ended first
    assert backend.cancel_request(running) is None
    with pytest.raises(InvalidState, match="done"):
        backend.cancel(running)
    with pytest.raises(JobNotFound):
        backend.cancel(waiting)


def test_retry_puts_a_failed_job_back_and_restores_dedup(backend: Backend) -> None:
    (job_id,) = backend.add_many([new_job("again")])
    claim_all(backend)
    backend.write_outcomes(HOST, NOW, Outcomes(failed=[Failure(job_id, 3, 2, "gave up")]))
    job = backend.get(job_id, NOW)
    assert (job.state, job.retrial, job.crashes, job.last_error, job.pid) == (
        JobState.FAILED,
        3,
        2,
        "gave up",
        101,
    )
    later = NOW + 10 * SECOND
    job = backend.retry(job_id, later)
    assert (job.id, job.state, job.retrial, job.crashes, job.next_try, job.pid, job.host) == (
        job_id,
        JobState.WAITING,
        0,
        0,
        later,
        0,
        "",
    )
    assert backend.add_many([new_job("again")]) == [job_id]  # dedup restored
    with pytest.raises(InvalidState, match="waiting"):
        backend.retry(job_id, later)
    with pytest.raises(JobNotFound):
        backend.retry(10**9, NOW)


def test_retry_when_an_identical_job_is_pending_keeps_the_pending_one(backend: Backend) -> None:
    (old,) = backend.add_many([new_job("twin")])
    fail_jobs(backend, [old], "x", NOW)
    (pending,) = backend.add_many([new_job("twin")])
    assert backend.retry(old, NOW).id == pending
    with pytest.raises(JobNotFound):
        backend.get(old, NOW)


def test_retry_all_failed(backend: Backend) -> None:
    ids = backend.add_many([new_job(i, dedup=i % 2 == 0) for i in range(7)])
    assert fail_jobs(backend, ids, "x", NOW) == 7
    assert backend.retry_all_failed(NOW) == 7
    assert backend.failed() == []
    assert {backend.get(i, NOW).state for i in ids} == {JobState.WAITING}
    assert backend.retry_all_failed(NOW) == 0


def test_failed_lists_newest_first(backend: Backend) -> None:
    ids = backend.add_many([new_job(i) for i in range(4)])
    for offset, job_id in enumerate(ids):
        fail_jobs(backend, [job_id], f"e{offset}", NOW + offset * SECOND)
    assert [job.id for job in backend.failed()] == ids[::-1]
    assert [job.last_error for job in backend.failed(limit=2)] == ["e3", "e2"]


def test_purge_in_bounded_batches(backend: Backend) -> None:
    ids = backend.add_many([new_job(i) for i in range(6)])
    claim_all(backend)
    complete(backend, ids[:4], now=NOW)
    backend.write_outcomes(HOST, NOW, Outcomes(failed=[Failure(ids[4], 0, 0, "x")]))
    # ids[5] stays running; done jobs finished after the cutoff stay too
    assert backend.purge(NOW, limit=10) == 0
    assert backend.purge(NOW + SECOND, limit=3) == 3
    assert backend.purge(NOW + SECOND, limit=3) == 1
    assert backend.purge(NOW + SECOND) == 0
    assert backend.get(ids[4], NOW).state is JobState.FAILED
    assert backend.purge(NOW + SECOND, include_failed=True) == 1
    assert backend.get(ids[5], NOW).state is JobState.RUNNING


def test_stats_has_all_five_priorities(backend: Backend) -> None:
    assert [s.priority for s in backend.stats(NOW)] == [10, 20, 30, 40, 50]
    assert all(s.waiting == s.running == 0 and s.oldest_waiting_seconds is None for s in backend.stats(NOW))
    ids = backend.add_many(
        [
            new_job(1, priority=20, created=NOW - 30 * SECOND),
            new_job(2, priority=20),
            new_job(3, priority=20, next_try=NOW + SECOND),
            new_job(4, priority=50),
            new_job(5, priority=50),
        ]
    )
    backend.claim([0, 0, 0, 0, 1], [5], HOST, 1, NOW)
    fail_jobs(backend, [ids[4]], "x", NOW)
    high, low = backend.stats(NOW)[1], backend.stats(NOW)[4]
    assert (high.waiting, high.deferred, high.running, high.failed) == (2, 1, 0, 0)
    assert high.oldest_waiting_seconds == pytest.approx(30.0)
    assert (low.waiting, low.running, low.failed) == (0, 1, 1)
    complete(backend, [ids[3]], now=NOW)
    assert backend.stats(NOW + 59 * 60 * SECOND)[4].done_last_hour == 1
    assert backend.stats(NOW + 61 * 60 * SECOND)[4].done_last_hour == 0


def test_finished_since(backend: Backend) -> None:
    ids = backend.add_many([new_job(i) for i in range(3)])
    claim_all(backend)
    complete(backend, ids[:1], now=NOW)
    complete(backend, ids[1:], now=NOW + 10 * SECOND)
    assert backend.finished_since(NOW) == 3
    assert backend.finished_since(NOW + SECOND) == 2
    assert backend.finished_since(NOW + 11 * SECOND) == 0


def test_jobs_ahead_follows_the_claim_order(backend: Backend) -> None:
    a, b, c, d, other = backend.add_many(
        [
            new_job("a"),
            new_job("b"),
            new_job("c", next_try=NOW - SECOND),
            new_job("d", next_try=NOW + SECOND),
            new_job("o", priority=10),
        ]
    )
    assert [backend.jobs_ahead(i) for i in (c, a, b, d, other)] == [0, 1, 2, 3, 0]
    backend.claim([0, 0, 1, 0, 0], [3], HOST, 1, NOW)  # takes c
    assert backend.jobs_ahead(b) == 1
    assert backend.jobs_ahead(c) == 0  # running: nothing ahead
    with pytest.raises(JobNotFound):
        backend.jobs_ahead(10**9)


# ------------------------------------------------------------------------------------ the pool


def test_plan_counts(backend: Backend) -> None:
    assert backend.plan_counts(NOW, 10, NOW) == PlanCounts([0] * 5, [0] * 5, 0)
    backend.add_many([new_job("crit", i, priority=10) for i in range(3)])
    backend.add_many([new_job("medium", i, priority=30) for i in range(25)])
    backend.add_many([new_job("negligible", i, priority=50, next_try=NOW + SECOND) for i in range(4)])
    backend.add_many([new_job("low", i, priority=40) for i in range(4)])
    backend.claim([0, 0, 4, 2, 0], [1, 2, 3, 4], HOST, 2, NOW)  # 30: pids 1, 2; 40: pids 3, 4
    backend.claim([0, 0, 2, 0, 0], [1], OTHER, 2, NOW)  # the same pid on another host is another worker
    backend.register_master(HOST, 1000, 4, NOW)
    backend.register_master(OTHER, 1000, 3, NOW - 60 * SECOND)
    counts = backend.plan_counts(NOW, 10, NOW - 30 * SECOND)
    assert counts.waiting == [3, 0, 10, 2, 0]  # 30 is capped; 50 is deferred
    assert counts.running == [0, 0, 3, 2, 0]
    assert counts.active == 4  # OTHER's master missed its heartbeat
    assert backend.plan_counts(NOW + SECOND, 100, NOW - 90 * SECOND) == PlanCounts(
        [3, 0, 19, 2, 4], [0, 0, 3, 2, 0], 7
    )


def test_claim_takes_the_oldest_next_try_first_and_not_deferred_jobs(backend: Backend) -> None:
    later, soon, first, second = backend.add_many(
        [
            new_job("later", next_try=NOW + 5 * SECOND),
            new_job("soon", next_try=NOW - SECOND),
            new_job("first", next_try=NOW - 2 * SECOND),
            new_job("second", next_try=NOW - 2 * SECOND),
        ]
    )
    batches = backend.claim([0, 0, 10, 0, 0], [1], HOST, 10, NOW)
    assert [[job.id for job in b.jobs] for b in batches] == [[first, second, soon]]
    assert backend.claim([0, 0, 10, 0, 0], [2], HOST, 10, NOW + 4 * SECOND) == []
    (batch,) = backend.claim([0, 0, 10, 0, 0], [2], HOST, 10, NOW + 5 * SECOND)
    assert [job.id for job in batch.jobs] == [later]
    job = batch.jobs[0]
    assert (job.command, job.parameter, job.priority, job.retrial, job.crashes) == ("Cmd", '["later"]', 30, 0, 0)


@pytest.mark.parametrize("wanted", [10, PACKED_CLAIM_MIN_ROWS], ids=["as-rows", "packed-on-mariadb"])
def test_claims_read_every_value_exactly_in_order(backend: Backend, wanted: int) -> None:
    """On MariaDB a claim of many rows reads them as one JSON value (claim_priority_packed), a
    small one as rows: either way, quotes, backslashes, control characters and non-ASCII text come
    back as they were stored, in claim order."""
    tricky = ['"quoted"', "back\\slash", "tab\tnew\nline", "é€😀", "\u0000?", "]},["]
    ids = backend.add_many([new_job(text, i, dedup=False) for i, text in enumerate(tricky)])
    (batch,) = backend.claim([0, 0, wanted, 0, 0], [1], HOST, wanted, NOW)
    assert [job.id for job in batch.jobs] == ids
    assert [json.loads(job.parameter) for job in batch.jobs] == [[text, i] for i, text in enumerate(tricky)]
    assert all(type(job.id) is int and type(job.retrial) is int for job in batch.jobs)


def test_a_mysql_claim_too_big_for_one_value_reads_its_rows_one_by_one(
    mysql_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A packed claim over group_concat_max_len is cut short by the server: the same rows are read
    again, one by one, in the same transaction; none is lost or left claimed half-way."""
    b = open_backend(mysql_dsn)
    try:
        ids = b.add_many([new_job("x" * 300, i, dedup=False) for i in range(40)])
        b.connection.cursor_ready().execute("SET SESSION group_concat_max_len = 4096")  # type: ignore[attr-defined]
        (batch,) = b.claim([0, 0, 40, 0, 0], [1], HOST, 40, NOW)
        assert [job.id for job in batch.jobs] == ids
        assert [json.loads(job.parameter)[1] for job in batch.jobs] == list(range(40))
        assert all(b.get(job_id, NOW).state is JobState.RUNNING for job_id in ids)
        assert "did not fit in one value" in caplog.text
    finally:
        b.close()


def test_claim_batches_by_priority_fetch_limit_and_children(backend: Backend) -> None:
    crit = backend.add_many([new_job("crit", i, priority=10) for i in range(5)])
    low = backend.add_many([new_job("low", i, priority=40) for i in range(3)])
    batches = backend.claim([5, 0, 0, 3, 0], [11, 12, 13, 14, 15], HOST, 2, NOW)
    assert [(b.pid, [j.id for j in b.jobs]) for b in batches] == [
        (11, crit[0:2]),
        (12, crit[2:4]),
        (13, crit[4:5]),
        (14, low[0:1]),
        (15, low[1:2]),
    ]
    # the third LOW job found no child: it was not claimed
    assert backend.get(low[2], NOW).state is JobState.WAITING
    for b in batches:
        for job in b.jobs:
            got = backend.get(job.id, NOW)
            assert (got.pid, got.host, got.executed) == (b.pid, HOST, NOW)
    assert backend.claim([5, 5, 5, 5, 5], [], HOST, 2, NOW) == []


def test_write_outcomes_and_claim_writes_first_guarded_by_host(backend: Backend) -> None:
    done, retry, failed, released, other = backend.add_many([new_job(i) for i in range(5)])
    claim_all(backend, HOST)
    outcomes = Outcomes(
        done=[done],
        retry=[Retry(retry, NOW + 60 * SECOND, 40, 1, 1, "try later")],
        failed=[Failure(failed, 2, 3, "poison")],
        released=[released],
    )
    batches = backend.write_outcomes_and_claim(outcomes, [0, 0, 10, 0, 0], [21], HOST, 10, NOW + SECOND)
    assert [j.id for b in batches for j in b.jobs] == [released]  # released first, claimable at once
    got = {i: backend.get(i, NOW + SECOND) for i in (done, retry, failed)}
    assert got[done].state is JobState.DONE and got[done].finished == NOW + SECOND
    r = got[retry]
    assert (r.state, r.priority, r.retrial, r.crashes, r.last_error, r.pid, r.host, r.executed) == (
        JobState.DEFERRED,
        40,
        1,
        1,
        "try later",
        0,
        "",
        None,
    )
    f = got[failed]
    assert (f.state, f.retrial, f.crashes, f.last_error, f.finished) == (
        JobState.FAILED,
        2,
        3,
        "poison",
        NOW + SECOND,
    )
    # another master's outcomes do not touch our claims
    backend.write_outcomes(
        OTHER,
        NOW,
        Outcomes(
            done=[other],
            released=[other],
            failed=[Failure(other, 0, 0, "x")],
            retry=[Retry(other, NOW, 10, 0, 0, None)],
        ),
    )
    assert backend.get(other, NOW).state is JobState.RUNNING


def test_a_completion_that_fails_part_way_leaves_no_job_done(sqlite_dsn: str) -> None:
    """SQLite's complete_jobs is an UPDATE OR FAIL (no statement journal): rows it changed before
    a failing one stay changed until the transaction rolls back, which must take them all back."""
    backend = open_backend(sqlite_dsn)
    try:
        first, second = backend.add_many([new_job(1), new_job(2)])
        claim_all(backend)
        with raw(sqlite_dsn) as (conn, _):
            conn.execute(
                f"CREATE TRIGGER refuse_second BEFORE UPDATE OF done ON workerqueue WHEN NEW.id = {second} "
                "BEGIN SELECT RAISE(FAIL, 'refused'); END"
            )
        with pytest.raises(DatabaseError, match="refused"):
            complete(backend, [first, second])
        assert {backend.get(i, NOW).state for i in (first, second)} == {JobState.RUNNING}
        with raw(sqlite_dsn) as (conn, _):
            conn.execute("DROP TRIGGER refuse_second")
        complete(backend, [first, second])
        assert {backend.get(i, NOW).state for i in (first, second)} == {JobState.DONE}
    finally:
        backend.close()


def test_a_recovered_claim_is_not_overwritten_by_its_old_master(backend: Backend) -> None:
    (job_id,) = backend.add_many([new_job("x")])
    claim_all(backend, HOST, pid=5)
    backend.register_master(HOST, 1, 1, NOW)
    assert backend.recover_expired(NOW + dt.timedelta(seconds=1)) == [(HOST, 1)]  # declared dead
    assert backend.heartbeat(HOST, 1, 1, NOW) is False  # the old master learns it lost its claims
    assert claim_all(backend, OTHER, pid=6) == [job_id]
    backend.write_outcomes(HOST, NOW, Outcomes(done=[job_id]))  # the old master, too late
    job = backend.get(job_id, NOW)
    assert (job.state, job.host, job.pid) == (JobState.RUNNING, OTHER, 6)
    complete(backend, [job_id], OTHER)
    assert backend.get(job_id, NOW).state is JobState.DONE


def test_fail_malformed(backend: Backend) -> None:
    ok, bad_low, bad_high, bad_mid, unclaimed = backend.add_many(
        [
            new_job("ok"),
            new_job("b", priority=0),
            new_job("c", priority=99),
            new_job("d", priority=35),
            new_job("e"),
        ]
    )
    assert [j.id for b in backend.claim([10, 10, 10, 10, 10], [1], HOST, 1, NOW) for j in b.jobs] == [ok]
    assert backend.fail_malformed(NOW) == 3
    for job_id in (bad_low, bad_high, bad_mid):
        job = backend.get(job_id, NOW)
        assert job.state is JobState.FAILED and "priority" in (job.last_error or "")
    assert backend.fail_malformed(NOW) == 0
    assert backend.get(ok, NOW).state is JobState.RUNNING
    assert backend.get(unclaimed, NOW).state is JobState.WAITING


def test_a_job_released_by_hand_the_friendica_way_is_claimed_again(backend: Backend, dsn: str) -> None:
    """Friendica's operators release a stuck job with ``UPDATE workerqueue SET pid = 0``; the row
    keeps its claim's host_id, which the claim index reads, until the maintenance sweep repairs it."""
    (job_id,) = backend.add_many([new_job("by hand")])
    assert claim_all(backend, HOST) == [job_id]
    raw_query(dsn, "UPDATE workerqueue SET pid = 0 WHERE id = ?", job_id)
    assert backend.get(job_id, NOW).state is JobState.WAITING
    backend.fail_malformed(NOW)  # the sweep the pool runs every maintenance interval
    assert claim_all(backend, OTHER) == [job_id]
    assert backend.get(job_id, NOW).host == OTHER


# ---------------------------------------------------------------------------- process registry


def test_process_registry(backend: Backend) -> None:
    backend.register_master(HOST, 100, 3, NOW)
    backend.register_children(HOST, 100, [101, 102, 103], NOW)
    backend.register_master(OTHER, 100, 1, NOW)
    backend.register_children(OTHER, 100, [7], NOW)
    procs = backend.processes()
    assert [(p.role, p.host, p.pid) for p in procs] == [
        ("master", HOST, 100),
        ("master", OTHER, 100),
        ("child", HOST, 101),
        ("child", HOST, 102),
        ("child", HOST, 103),
        ("child", OTHER, 7),
    ]
    assert (procs[0].workers, procs[0].started, procs[0].heartbeat, procs[2].master_pid) == (3, NOW, NOW, 100)
    backend.register_children(HOST, 100, [102, 104], NOW)  # 101 and 103 exited, 104 started
    assert sorted(p.pid for p in backend.processes() if p.host == HOST and p.role == "child") == [102, 104]
    later = NOW + 5 * SECOND
    assert backend.heartbeat(HOST, 100, 2, later) is True
    assert backend.heartbeat(HOST, 100, 2, later) is True  # an unchanged row is still there
    mine = [p for p in backend.processes() if p.host == HOST]
    assert {p.heartbeat for p in mine} == {later} and mine[0].workers == 2
    backend.register_children(HOST, 100, [], NOW)
    backend.unregister(HOST, 100)
    assert [(p.host, p.pid) for p in backend.processes()] == [(OTHER, 100), (OTHER, 7)]
    assert backend.heartbeat(HOST, 100, 2, later) is False


def test_recover_expired(backend: Backend) -> None:
    ids = backend.add_many([new_job(i) for i in range(3)])
    backend.claim([0, 0, 2, 0, 0], [1], HOST, 2, NOW)
    backend.claim([0, 0, 1, 0, 0], [1], OTHER, 2, NOW)
    backend.register_master(HOST, 10, 1, NOW - 120 * SECOND)
    backend.register_children(HOST, 10, [1], NOW - 120 * SECOND)
    backend.register_master(OTHER, 20, 1, NOW)
    assert backend.recover_expired(NOW - 60 * SECOND) == [(HOST, 2)]
    assert [(p.host, p.pid) for p in backend.processes()] == [(OTHER, 20)]
    assert backend.heartbeat(HOST, 10, 1, NOW) is False
    assert sorted(job.state.value for job in (backend.get(i, NOW) for i in ids)) == [
        "running",
        "waiting",
        "waiting",
    ]
    assert backend.recover_expired(NOW - 60 * SECOND) == []


def test_take_periodic(backend: Backend) -> None:
    period = dt.timedelta(minutes=5)
    assert backend.take_periodic("Cron", NOW, period) is True
    assert backend.take_periodic("Cron", NOW + SECOND, period) is False
    assert backend.take_periodic("Other", NOW + SECOND, period) is True
    assert backend.take_periodic("Cron", NOW + period - SECOND, period) is False
    assert backend.take_periodic("Cron", NOW + period, period) is True
    assert backend.take_periodic("Cron", NOW + period, period) is False


def test_take_periodic_is_won_by_exactly_one_of_many(dsn: str) -> None:
    backends = [open_backend(dsn) for _ in range(6)]
    backends[0].init_schema()
    results: list[bool] = []
    barrier = threading.Barrier(len(backends))

    def race(b: Backend) -> None:
        barrier.wait()
        results.append(b.take_periodic("Race", NOW, dt.timedelta(minutes=1)))

    threads = [threading.Thread(target=race, args=(b,)) for b in backends]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for b in backends:
        b.close()
    assert sorted(results) == [False] * 5 + [True]


# --------------------------------------------------------------------------------- concurrency


def _claimer(dsn: str, host: str, results: Any) -> None:
    b = open_backend(dsn)
    claimed: list[int] = []
    outcomes = Outcomes()
    while True:
        batches = b.write_outcomes_and_claim(outcomes, [0, 0, 50, 0, 0], [1, 2], host, 25, NOW)
        ids = [job.id for batch in batches for job in batch.jobs]
        outcomes = Outcomes(done=ids)
        if not ids:
            break
        claimed.extend(ids)
    b.write_outcomes(host, NOW, outcomes)
    b.close()
    results.put(claimed)


def test_concurrent_claimers_never_share_a_job(dsn: str, backend: Backend) -> None:
    ids = backend.add_many([new_job(i, dedup=False) for i in range(3_000)])
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    workers = [ctx.Process(target=_claimer, args=(dsn, f"host-{n}", results)) for n in range(4)]
    for w in workers:
        w.start()
    claimed = [results.get(timeout=120) for _ in workers]
    for w in workers:
        w.join(timeout=30)
    everything = [job_id for part in claimed for job_id in part]
    assert len(everything) == len(set(everything)) == 3_000  # disjoint, nothing lost
    assert sorted(everything) == sorted(ids)
    assert backend.stats(NOW)[2].waiting == 0
    assert backend.finished_since(NOW) == 3_000


def _producer(dsn: str, name: str, results: Any) -> None:
    b = open_backend(dsn)
    added: dict[int, str] = {}
    shared: list[int] = []
    for round_ in range(6):
        jobs = [new_job(name, round_, i, dedup=i % 2 == 0) for i in range(400)]
        jobs += [new_job("shared", round_, i) for i in range(100)]  # every producer adds these
        ids = b.add_many(jobs)
        added.update(zip(ids[:400], (job.parameter for job in jobs[:400])))
        shared.extend(ids[400:])
    b.close()
    results.put((added, shared))


def test_concurrent_producers_get_the_right_ids(dsn: str, backend: Backend) -> None:
    """The consecutive-id fast path and the dedup read-back hold while others insert at once."""
    backend.init_schema()
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    producers = [ctx.Process(target=_producer, args=(dsn, f"p{n}", results)) for n in range(4)]
    for p in producers:
        p.start()
    outcomes = [results.get(timeout=120) for _ in producers]
    for p in producers:
        p.join(timeout=30)
    stored = dict(raw_query(dsn, "SELECT id, parameter FROM workerqueue"))
    for added, _ in outcomes:
        assert len(added) == 2_400
        assert all(stored[job_id] == parameter for job_id, parameter in added.items())
    shared = [ids for _, ids in outcomes]
    assert all(ids == shared[0] for ids in shared)  # one job per identical pending job, same id for all
    assert len(set(shared[0])) == 600 and len(stored) == 4 * 2_400 + 600


def test_mysql_claims_skip_rows_another_transaction_holds(mysql_dsn: str) -> None:
    """SKIP LOCKED: a claim never waits for another master's open claim transaction."""
    b = open_backend(mysql_dsn)
    try:
        ids = b.add_many([new_job(i) for i in range(10)])
        with raw(mysql_dsn) as (conn, _):
            conn.autocommit(False)
            cur = conn.cursor()
            cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
            # another master, in the middle of its claim transaction, holds the three oldest jobs
            cur.execute(MYSQL_QUERIES["claim_priority"], {"priority": 30, "now": NOW, "limit": 3})
            assert [row[0] for row in cur.fetchall()] == ids[:3]
            started = time.monotonic()
            batches = b.claim([0, 0, 10, 0, 0], [1], HOST, 10, NOW)
            assert time.monotonic() - started < 2  # the lock wait timeout is 50 s: it did not wait
            assert [j.id for j in batches[0].jobs] == ids[3:]
            conn.rollback()
        assert [j.id for j in b.claim([0, 0, 10, 0, 0], [2], HOST, 10, NOW)[0].jobs] == ids[:3]
    finally:
        b.close()


# ------------------------------------------------------------------------------------- errors


def test_driver_errors_are_wrapped_with_their_cause(backend: Backend) -> None:
    backend.add_many([new_job("before")])
    with pytest.raises(DatabaseError) as info:
        backend.register_master(None, 1, 1, NOW)  # type: ignore[arg-type]  # NOT NULL column
    assert isinstance(info.value.__cause__, (pymysql.MySQLError, sqlite3.Error))
    assert "register_master" in str(info.value)
    assert backend.add_many([new_job("still works")])  # rolled back; the connection is usable


def test_malformed_dsn() -> None:
    with pytest.raises(ConfigError):
        open_backend("postgres://x@y/z")
    with pytest.raises(ConfigError):
        open_backend("mysql://user@/db")


def test_unknown_mysql_option() -> None:
    b = open_backend("mysql://root@127.0.0.1:3306/x?colour=blue")
    with pytest.raises(ConfigError, match="colour"):
        b.get(1, NOW)


def test_unreachable_mysql_is_unavailable_without_the_password() -> None:
    b = open_backend("mysql://root:s3cr3t-pw@127.0.0.1:1/fastsched?connect_timeout=2")
    assert "s3cr3t-pw" not in repr(b)
    with pytest.raises(DatabaseUnavailable) as info:
        b.add_many([new_job(1)])
    assert "s3cr3t-pw" not in str(info.value) and "s3cr3t-pw" not in repr(info.value)
    assert "127.0.0.1:1" in str(info.value)
    assert isinstance(info.value.__cause__, pymysql.MySQLError)


def test_wrong_mysql_password_is_a_database_error_without_the_password(mysql_dsn: str) -> None:
    parsed = parse_dsn(mysql_dsn)
    b = open_backend(f"mysql://nosuchuser:pw-9f8e7d@{parsed.host}:{parsed.port}/{parsed.database}")
    with pytest.raises(DatabaseError) as info:
        b.get(1, NOW)
    assert "pw-9f8e7d" not in str(info.value)


def test_unopenable_sqlite_file_is_unavailable(tmp_path: Any) -> None:
    b = open_backend(f"sqlite:///{tmp_path}/missing/dir/db.sqlite3")
    with pytest.raises(DatabaseUnavailable) as info:
        b.get(1, NOW)
    assert isinstance(info.value.__cause__, sqlite3.Error)


@pytest.mark.parametrize(
    ("version", "ok"),
    [
        ("10.11.19-MariaDB-0+deb12u1", True),
        ("10.6.0-MariaDB", True),
        ("5.5.5-10.6.12-MariaDB", True),
        ("11.4.2-MariaDB", True),
        ("8.0.36", True),
        ("8.4.0", True),
        ("10.5.9-MariaDB", False),
        ("5.7.44-log", False),
        ("10.3.39-MariaDB-0+deb10u1", False),
        ("garbage", False),
    ],
)
def test_old_servers_are_refused_naming_the_version(version: str, ok: bool) -> None:
    if ok:
        check_server_version(version)
    else:
        with pytest.raises(UnsupportedServer, match=version.replace("+", r"\+")):
            check_server_version(version)


def test_mysql_connections_share_one_preferred_mode_tls_context(mysql_dsn: str) -> None:
    """pymysql's default (TLS if the server offers it, no certificate checked) is kept, and its
    context is made once: each one loads the system's CA certificates, 44 ms of CPU here."""
    import ssl

    backends = [open_backend(mysql_dsn) for _ in range(2)]
    try:
        contexts = [b.connection.cursor_ready().connection.ctx for b in backends]  # type: ignore[attr-defined]
        assert contexts[0] is contexts[1]
        assert contexts[0].verify_mode == ssl.CERT_NONE and not contexts[0].check_hostname
    finally:
        for b in backends:
            b.close()


def test_a_dropped_connection_reconnects_transparently(dsn: str, backend: Backend) -> None:
    (job_id,) = backend.add_many([new_job("x")])
    if parse_dsn(dsn).dialect == "mysql":
        thread_id = backend.connection.conn.thread_id()  # type: ignore[attr-defined]
        raw_query(dsn, f"KILL {int(thread_id)}")
    else:
        backend.connection.conn.close()  # type: ignore[attr-defined]
    assert backend.get(job_id, NOW).id == job_id
    backend.close()
    assert backend.get(job_id, NOW).id == job_id


def test_deadlocks_are_retried_transparently(mysql_dsn: str) -> None:
    b = open_backend(mysql_dsn)
    attempts: list[int] = []
    try:
        b.init_schema()

        def work(cursor: Any) -> str:
            attempts.append(1)
            if len(attempts) < 3:
                cursor.execute(
                    "SIGNAL SQLSTATE '40001' SET MYSQL_ERRNO = 1213, MESSAGE_TEXT = 'Deadlock found'"
                )
            return "ok"

        assert b._transaction(work, "test") == "ok"  # type: ignore[attr-defined]
        assert len(attempts) == 3
        attempts.clear()

        def always(cursor: Any) -> None:
            attempts.append(1)
            cursor.execute("SIGNAL SQLSTATE '40001' SET MYSQL_ERRNO = 1213, MESSAGE_TEXT = 'Deadlock found'")

        with pytest.raises(DatabaseError, match="Deadlock") as info:
            b._transaction(always, "test")  # type: ignore[attr-defined]
        assert isinstance(info.value.__cause__, pymysql.MySQLError) and len(attempts) > 3
    finally:
        b.close()


def test_explain_claim_plan_counts_and_stats_use_the_claim_index(mysql_dsn: str) -> None:
    b = open_backend(mysql_dsn)
    try:
        b.add_many([new_job(i, priority=(10, 30, 50)[i % 3]) for i in range(3_000)])
        b.claim([0, 0, 20, 0, 0], [1, 2], HOST, 10, NOW)
        with raw(mysql_dsn) as (conn, _):
            cur = conn.cursor(pymysql.cursors.DictCursor)
            cur.execute(
                "EXPLAIN " + MYSQL_QUERIES["claim_priority"], {"priority": 30, "now": NOW, "limit": 50}
            )
            # the pause checks (fastsched_pause, a few rows at most) are subqueries of their own
            (row,) = [r for r in cur.fetchall() if r["table"] == "workerqueue"]
            assert row["key"] == "claim" and row["type"] in ("ref", "range"), row
            assert "filesort" not in (row["Extra"] or "") and "temporary" not in (row["Extra"] or ""), row
            cur.execute(
                "EXPLAIN " + MYSQL_QUERIES["plan_counts"], {"now": NOW, "cap": 100, "alive_after": NOW}
            )
            rows = [r for r in cur.fetchall() if r["table"] == "workerqueue"]
            # five waiting counts and one scan of the claimed rows, each a range of the claim index
            assert len(rows) == 6 and {r["key"] for r in rows} == {"claim"}, rows
            assert {r["type"] for r in rows} <= {"range", "ref"}, rows
            # stats reads ranges of the claim index for the pending, running and failed rows. Its
            # seventh part, the jobs done in the last hour, reads the done rows; the planner may scan
            # for it instead (it did when earlier tests' deleted done rows, not yet purged by
            # InnoDB, swelled its estimate of that range): a scan is what that range costs at scale.
            cur.execute("EXPLAIN " + MYSQL_QUERIES["stats"], {"now": NOW, "hour_ago": NOW})
            rows = [r for r in cur.fetchall() if r["table"] == "workerqueue"]
            assert len(rows) == 12, rows  # waiting, deferred, running, failed, cancelled, paused, done, 5 oldest
            assert {r["key"] for r in rows if r["id"] != 7} == {"claim"}, rows
            cur.execute("EXPLAIN " + MYSQL_QUERIES["fail_malformed"], {"now": NOW, "error": "x"})
            (row,) = cur.fetchall()
            assert row["key"] == "claim" and row["type"] == "range", row
    finally:
        b.close()
