"""Enqueue: ``add()`` one job per transaction and ``add_many()``, against raw driver inserts into
the same table, in the same run.

* ``add()`` (dedup included: every job carries its dedup hash through the unique index) against
  a raw single-row autocommit INSERT of the same columns, the hash included, with the same
  per-job work in Python (JSON of the args, sha1). Target on MariaDB: ratio >= 0.8.
* ``add_many()`` in calls of 1,000 jobs against a raw 1,000-row INSERT (pymysql's executemany
  sends one multi-row statement; sqlite3's runs in one transaction). Target on MariaDB: >= 120,000
  jobs/s.

Rounds alternate raw and fastsched so that both see the same machine; the figure is the median
round. The job tuples a caller would pass exist before the clock starts; encoding them is timed
on both sides.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import time
from typing import Any

import fastsched
from bench import baseline, harness
from bench.harness import Target, pick, record, table

TARGET_ADD_RATIO = 0.8  # add() vs raw single-row INSERT, on MariaDB
TARGET_ADD_MANY = 120_000.0  # jobs/s, add_many() on MariaDB
BATCH = 1000  # jobs per add_many() call and per raw multi-row INSERT
COMMAND = "BenchNoop"
SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"  # fastsched's fixed-width UTC text (sql/sqlite/schema.sql)

_counter = itertools.count()


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def _raw_row(args: tuple[Any, ...]) -> tuple[Any, ...]:
    parameter = json.dumps(list(args), separators=(",", ":"))
    digest = hashlib.sha1(COMMAND.encode() + b"\0" + parameter.encode()).digest()
    now = _utcnow()
    return (COMMAND, parameter, 30, now, now, digest)


class RawInserter:
    """Single-row and multi-row INSERTs into fastsched's own workerqueue table, through the driver."""

    COLUMNS = "command, parameter, priority, created, next_try, dedup_hash"

    def __init__(self, dsn: str) -> None:
        self.dialect = harness.dialect_of(dsn)
        if self.dialect == "mysql":
            self.conn: Any = harness.mysql_connect(dsn)
            self.sql = f"INSERT INTO workerqueue ({self.COLUMNS}) VALUES (%s,%s,%s,%s,%s,%s)"
            self.cur = self.conn.cursor()
        else:
            self.conn = baseline.sqlite_connect(harness.sqlite_path(dsn))
            self.sql = f"INSERT INTO workerqueue ({self.COLUMNS}) VALUES (?,?,?,?,?,?)"

    def one(self, args: tuple[Any, ...]) -> None:
        row = _raw_row(args)
        if self.dialect == "mysql":
            self.cur.execute(self.sql, row)
        else:
            self.conn.execute(self.sql, _sqlite_row(row))  # autocommit: one transaction per row

    def many(self, specs: list[tuple[Any, ...]]) -> None:
        if self.dialect == "mysql":
            self.cur.executemany(self.sql, [_raw_row(spec[2:]) for spec in specs])
        else:
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.executemany(self.sql, [_sqlite_row(_raw_row(spec[2:])) for spec in specs])
            self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()


def _sqlite_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    command, parameter, priority, created, next_try, digest = row
    return (command, parameter, priority, created.strftime(SQLITE_TIME), next_try.strftime(SQLITE_TIME), digest)


def _specs(count: int, tag: str) -> list[tuple[Any, ...]]:
    """``count`` distinct jobs (distinct args, so dedup inserts every one)."""
    return [(30, COMMAND, tag, next(_counter)) for _ in range(count)]


def test_add_one_per_transaction(benchmark: Any, bench_dsn: str) -> None:
    jobs = pick(2000, 200)
    rounds = pick(5, 1)
    dialect = harness.dialect_of(bench_dsn)
    queue = fastsched.connect(bench_dsn)
    raw = RawInserter(bench_dsn)
    raw_rates: list[float] = []
    add_rates: list[float] = []
    try:
        for spec in _specs(50, "warm"):  # connections, statement caches, the first page splits
            queue.add(*spec)
        for spec in _specs(50, "warm-raw"):
            raw.one(spec[2:])

        def raw_round() -> None:
            specs = _specs(jobs, "raw")
            start = time.perf_counter()
            for spec in specs:
                raw.one(spec[2:])
            raw_rates.append(jobs / (time.perf_counter() - start))

        def add_round() -> None:
            specs = _specs(jobs, "add")
            add = queue.add
            start = time.perf_counter()
            for spec in specs:
                add(*spec)
            add_rates.append(jobs / (time.perf_counter() - start))

        benchmark.pedantic(add_round, setup=raw_round, rounds=rounds, iterations=1, warmup_rounds=0)
    finally:
        raw.close()
        queue.close()

    add_rate = harness.median(add_rates)
    raw_rate = harness.median(raw_rates)
    ratio = add_rate / raw_rate
    targets = [Target(f"add() / raw single-row INSERT ({dialect})", ratio, ">=", TARGET_ADD_RATIO, "x")]
    record(
        benchmark,
        title=f"add(): one job per transaction vs raw single-row autocommit INSERT ({dialect})",
        figures={
            "jobs_per_round": jobs,
            "rounds": rounds,
            "add_jobs_per_s": add_rate,
            "raw_insert_rows_per_s": raw_rate,
            "ratio": ratio,
            "add_ms_per_job": 1000 / add_rate,
            "raw_ms_per_row": 1000 / raw_rate,
        },
        tables={"rounds": table(["round", "add() jobs/s", "raw rows/s"], zip(itertools.count(1), add_rates, raw_rates))},
        targets=targets if dialect == "mysql" else [],
        notes=[] if dialect == "mysql" else ["No target on SQLite: recorded for comparison."],
    )


def test_add_many(benchmark: Any, bench_dsn: str) -> None:
    jobs = pick(100_000, 5_000)
    rounds = pick(3, 1)
    dialect = harness.dialect_of(bench_dsn)
    queue = fastsched.connect(bench_dsn)
    raw = RawInserter(bench_dsn)
    raw_rates: list[float] = []
    many_rates: list[float] = []
    try:
        queue.add_many(_specs(BATCH, "warm"))
        raw.many(_specs(BATCH, "warm"))

        def raw_round() -> None:
            chunks = [_specs(BATCH, "raw") for _ in range(jobs // BATCH)]
            start = time.perf_counter()
            for chunk in chunks:
                raw.many(chunk)
            raw_rates.append(jobs / (time.perf_counter() - start))

        def many_round() -> None:
            chunks = [_specs(BATCH, "many") for _ in range(jobs // BATCH)]
            add_many = queue.add_many
            start = time.perf_counter()
            for chunk in chunks:
                add_many(chunk)
            many_rates.append(jobs / (time.perf_counter() - start))

        benchmark.pedantic(many_round, setup=raw_round, rounds=rounds, iterations=1, warmup_rounds=0)
        stored = len(queue.add_many(_specs(3, "check")))
        assert stored == 3
    finally:
        raw.close()
        queue.close()

    many_rate = harness.median(many_rates)
    raw_rate = harness.median(raw_rates)
    record(
        benchmark,
        title=f"add_many(): calls of {BATCH} jobs vs raw {BATCH}-row INSERT ({dialect})",
        figures={
            "jobs_per_round": jobs,
            "rounds": rounds,
            "add_many_jobs_per_s": many_rate,
            "raw_multirow_rows_per_s": raw_rate,
            "ratio": many_rate / raw_rate,
        },
        tables={
            "rounds": table(["round", "add_many() jobs/s", "raw rows/s"], zip(itertools.count(1), many_rates, raw_rates))
        },
        targets=[Target(f"add_many() jobs/s ({dialect})", many_rate, ">=", TARGET_ADD_MANY, "jobs/s")]
        if dialect == "mysql"
        else [],
        notes=[] if dialect == "mysql" else ["No target on SQLite: recorded for comparison."],
    )
