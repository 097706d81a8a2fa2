"""Depth: the cost of one claim cycle with 1,000 against 1,000,000 pending jobs (priorities 20
to 50 runnable, CRITICAL rows only deferred, a fifth of every priority deferred), and the query
plans of that cycle.

A cycle is what the master does each turn: ``plan_counts`` (one statement), ``core.plan``, then
``claim`` of every free slot's batch with the previous cycle's outcomes (all done) written in
the same transaction. 8 children, fetch limit 100. After each cycle the benchmark puts back as
many runnable jobs of the same priorities as were claimed (untimed), so the depth stays put.
Target: the cycle at a million <= 1.5x the cycle at a thousand.

Every statement of a cycle is captured as the server receives it (pymysql's
``Connection.query``; SQLite's trace callback) and EXPLAINed. Asserted, not timed: no statement
reads workerqueue by a full table scan, the claim SELECT and the waiting counts use the claim
index, and the claim needs no sort (the index gives its order).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import re
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import pymysql

import fastsched
from bench import harness
from bench.harness import Target, median, percentile, pick, record, table
from fastsched import core
from fastsched.dsn import parse_dsn
from fastsched.jobs import Outcomes
from fastsched.master import duties

TARGET_RATIO = 1.5
DEPTHS = pick([1_000, 1_000_000], [1_000, 10_000])
CYCLES = pick(200, 15)
DUTY_REPEATS = pick(3, 1)
WARMUP_CYCLES = 5
CHILDREN = 8
FETCH_LIMIT = 10  # small enough that every batch is full at both depths: the cycles compare like for like
PLAN_CAP = 1000  # the waiting-count cap passed to plan_counts
HOST = "bench-depth"
MASTER_PID = 990000
# Runnable priorities and their shares of the rows (CRITICAL rows exist only deferred: a waiting
# CRITICAL job would take every slot of every cycle).
MIX = ((20, 10), (30, 30), (40, 30), (50, 30))  # (priority, percent)
# A fifth of the rows (seq % 5 == 0) are deferred by a day, whatever their priority.
INDEX_WORD = "claim"  # the claim index is "claim" (MySQL) / "workerqueue_claim" (SQLite)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


# ----------------------------------------------------------------------------- filling


def _fill(dsn: str, count: int) -> None:
    """``count`` pending rows in one INSERT ... SELECT: a fifth deferred by a day, the rest runnable
    with next_try spread over the last hour; priorities by MIX; deferred CRITICAL rows too."""
    now = _utcnow()
    if harness.dialect_of(dsn) == "mysql":
        prio_case = _priority_case("MOD(seq DIV 5, 100)")
        sql = (
            "INSERT INTO workerqueue (command, parameter, priority, created, next_try) "
            f"SELECT 'BenchNoop', CONCAT('[', seq, ']'), "
            f"IF(MOD(seq, 5) = 0 AND MOD(seq, 7) = 0, 10, {prio_case}), %s, "
            f"IF(MOD(seq, 5) = 0, %s, %s - INTERVAL (MOD(seq, 3600000) * 1000) MICROSECOND) "
            f"FROM seq_1_to_{int(count)}"
        )
        conn = harness.mysql_connect(dsn)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, (now - dt.timedelta(hours=2), now + dt.timedelta(days=1), now))
        finally:
            conn.close()
    else:
        prio_case = _priority_case("((x / 5) % 100)")
        created = (now - dt.timedelta(hours=2)).strftime("%Y-%m-%d %H:%M:%S.%f")
        deferred = (now + dt.timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S.%f")
        base = (now - dt.timedelta(hours=1)).timestamp()
        conn2 = sqlite3.connect(harness.sqlite_path(dsn), timeout=60)
        try:
            conn2.execute(
                "INSERT INTO workerqueue (command, parameter, priority, created, next_try) "
                "WITH RECURSIVE seq(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM seq WHERE x < ?) "
                f"SELECT 'BenchNoop', '[' || x || ']', CASE WHEN x % 5 = 0 AND x % 7 = 0 "
                f"THEN 10 ELSE {prio_case} END, ?, CASE WHEN x % 5 = 0 THEN ? ELSE "
                "strftime('%Y-%m-%d %H:%M:%S', ? + (x % 3600), 'unixepoch') || '.' || printf('%06d', x % 1000000) END "
                "FROM seq",
                (count, created, deferred, base),
            )
            conn2.commit()
        finally:
            conn2.close()


def _priority_case(percentile_expr: str) -> str:
    """SQL CASE giving each row a priority by MIX, from an expression worth 0..99."""
    parts, edge = [], 0
    for priority, percent in MIX:
        edge += percent
        parts.append(f"WHEN {percentile_expr} < {edge} THEN {priority}")
    return "CASE " + " ".join(parts) + " END"


def _replenish(dsn_conn: Any, dialect: str, priorities: list[int], now: dt.datetime) -> None:
    """Put back one runnable job per claimed one, same priority (keeps the depth constant)."""
    if not priorities:
        return
    if dialect == "mysql":
        with dsn_conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO workerqueue (command, parameter, priority, created, next_try) VALUES (%s,%s,%s,%s,%s)",
                [("BenchNoop", "[0]", p, now, now) for p in priorities],
            )
    else:
        stamp = now.strftime("%Y-%m-%d %H:%M:%S.%f")
        dsn_conn.execute("BEGIN IMMEDIATE")
        dsn_conn.executemany(
            "INSERT INTO workerqueue (command, parameter, priority, created, next_try) VALUES (?,?,?,?,?)",
            [("BenchNoop", "[0]", p, stamp, stamp) for p in priorities],
        )
        dsn_conn.execute("COMMIT")


# ----------------------------------------------------------------------------- capture


@contextlib.contextmanager
def capture_sql(backend: Any, dialect: str) -> Iterator[list[str]]:
    """Every SQL statement the backend sends while the block runs, as the server gets it."""
    statements: list[str] = []
    if dialect == "mysql":
        original = pymysql.connections.Connection.query

        def query(self: Any, sql: Any, unbuffered: bool = False) -> Any:
            statements.extend(_split_begin(sql.decode() if isinstance(sql, bytes) else str(sql)))
            return original(self, sql, unbuffered)

        pymysql.connections.Connection.query = query  # type: ignore[method-assign]
        try:
            yield statements
        finally:
            pymysql.connections.Connection.query = original  # type: ignore[method-assign]
    else:
        conns = _sqlite_connections(backend)
        assert conns, "no sqlite3.Connection found on the SQLite backend to trace"
        for conn in conns:
            conn.set_trace_callback(statements.append)
        try:
            yield statements
        finally:
            for conn in conns:
                conn.set_trace_callback(None)


def _sqlite_connections(obj: Any, depth: int = 0) -> list[sqlite3.Connection]:
    found: list[sqlite3.Connection] = []
    if isinstance(obj, sqlite3.Connection):
        return [obj]
    if depth > 2:
        return found
    values = list(vars(obj).values()) if hasattr(obj, "__dict__") else []
    for value in values:
        if isinstance(value, sqlite3.Connection):
            found.append(value)
        elif hasattr(value, "__dict__") and not isinstance(value, type) and type(value).__module__.startswith("fastsched"):
            found.extend(_sqlite_connections(value, depth + 1))
    return found


class StatementTimer:
    """Server time per named query (MariaDB): wall time of pymysql's Connection.query, round trip
    included, attributed to the query of fastsched/sql/mysql/queries.sql whose text it starts with."""

    def __init__(self) -> None:
        from fastsched.backends.sqlfiles import load_queries

        self.prefixes = sorted(
            ((_normalize(re.split(r"%\(|%s|\{ids\}", sql)[0]), name) for name, sql in load_queries("mysql").items()),
            key=lambda item: -len(item[0]),
        )
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def name_of(self, sql: str) -> str:
        text = _normalize(sql)
        for prefix, name in self.prefixes:
            if prefix and text.startswith(prefix):
                return name
        return text.split(" ", 1)[0].upper()  # COMMIT, BEGIN, SET...

    def _add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        self.calls[name] = self.calls.get(name, 0) + 1

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Time Connection.query (every statement) and Connection.commit/begin (sent without query())."""
        conn_class = pymysql.connections.Connection
        originals = {name: getattr(conn_class, name) for name in ("query", "commit", "begin", "next_result")}
        timer = self
        following: list[str] = []  # the statement sent with a BEGIN: its result comes by next_result

        def query(self: Any, sql: Any, unbuffered: bool = False) -> Any:
            started = time.perf_counter()
            parts = _split_begin(sql.decode() if isinstance(sql, bytes) else str(sql))
            try:
                return originals["query"](self, sql, unbuffered)
            finally:
                timer._add(timer.name_of(parts[0]), time.perf_counter() - started)
                following[:] = [timer.name_of(part) for part in parts[1:]]

        def next_result(self: Any, unbuffered: bool = False) -> Any:
            started = time.perf_counter()
            try:
                return originals["next_result"](self, unbuffered)
            finally:
                if following:
                    timer._add(following.pop(0), time.perf_counter() - started)

        def command(name: str) -> Any:
            def call(self: Any) -> Any:
                started = time.perf_counter()
                try:
                    return originals[name](self)
                finally:
                    timer._add(name.upper(), time.perf_counter() - started)

            return call

        conn_class.query = query  # type: ignore[method-assign]
        conn_class.commit = command("commit")  # type: ignore[method-assign]
        conn_class.begin = command("begin")  # type: ignore[method-assign]
        conn_class.next_result = next_result  # type: ignore[method-assign]
        try:
            yield
        finally:
            for name, original in originals.items():
                setattr(conn_class, name, original)


def _split_begin(sql: str) -> list[str]:
    """A statement as the server runs it: a transaction's BEGIN is sent with its first statement
    (fastsched.backends.mysql.Cursor), ``BEGIN;SELECT ...`` is two."""
    if sql.startswith("BEGIN;"):
        return ["BEGIN", sql[len("BEGIN;"):]]
    return [sql]


def _normalize(sql: str) -> str:
    return " ".join(" ".join(line for line in sql.split("\n") if not line.strip().startswith("--")).split())


_EXPLAINABLE = re.compile(r"^\s*(SELECT|UPDATE|DELETE)\b", re.IGNORECASE)


def explain(dsn: str, statements: list[str]) -> list[dict[str, Any]]:
    """EXPLAIN each SELECT/UPDATE/DELETE statement that touches workerqueue."""
    plans = []
    dialect = harness.dialect_of(dsn)
    if dialect == "mysql":
        conn = harness.mysql_connect(dsn)
    else:
        conn = sqlite3.connect(harness.sqlite_path(dsn), timeout=60)
    try:
        for sql in statements:
            if not _EXPLAINABLE.match(sql) or "workerqueue" not in sql:
                continue
            if dialect == "mysql":
                with conn.cursor(pymysql.cursors.DictCursor) as cur:
                    cur.execute("EXPLAIN " + sql)
                    rows = [
                        {k: row.get(k) for k in ("id", "select_type", "table", "type", "key", "rows", "Extra")}
                        for row in cur.fetchall()
                    ]
            else:
                rows = [{"detail": r[3]} for r in conn.execute("EXPLAIN QUERY PLAN " + sql).fetchall()]
            plans.append({"sql": " ".join(sql.split()), "plan": rows})
    finally:
        conn.close()
    return plans


def _is_claim_select(sql: str) -> bool:
    s = sql.upper()
    # MariaDB's packed claim (claim_priority_packed) counts the rows it wraps: a claim all the same.
    packed = "JSON_ARRAYAGG(" in s
    return (s.startswith("SELECT") and "PID = 0" in s and "ORDER BY" in s and " LIMIT " in s
            and ("COUNT(" not in s or packed))


def _is_waiting_count(sql: str) -> bool:
    s = sql.upper()
    return s.startswith("SELECT") and "COUNT(" in s and "PID = 0" in s and "JSON_ARRAYAGG(" not in s


_BY_ID = re.compile(r"\bWHERE\s+id\s*(IN\s*\(\s*\d|=\s*\d)", re.IGNORECASE)


def _is_by_id(sql: str) -> bool:
    """A statement on rows named by id (outcomes, batch claims): it must go through the primary key."""
    return bool(_BY_ID.search(sql))


def plan_problems(dialect: str, plans: list[dict[str, Any]]) -> list[str]:
    """What is wrong with the plans: full scans of workerqueue, a claim or a waiting count not on
    the claim index, a claim that sorts, rows named by id not read through the primary key (a
    secondary index on ``done`` there reads every pending row)."""
    problems = []
    for entry in plans:
        sql, rows = entry["sql"], entry["plan"]
        short = sql[:120]
        if dialect == "mysql":
            wq_rows = [r for r in rows if r["table"] == "workerqueue"]
            for r in wq_rows:
                if r["type"] == "ALL" or r["key"] is None:
                    problems.append(f"full scan of workerqueue (type={r['type']}, key={r['key']}): {short}")
            keys = {str(r["key"]) for r in wq_rows}
            uses_claim = any(INDEX_WORD in k for k in keys)
            sorts = any("filesort" in str(r["Extra"] or "") for r in wq_rows)
            by_primary_key = bool(wq_rows) and keys == {"PRIMARY"}
        else:
            details = [r["detail"] for r in rows]
            for d in details:
                if re.match(r"SCAN workerqueue(\s|$)", d) and "INDEX" not in d:
                    problems.append(f"full scan of workerqueue ({d}): {short}")
            uses_claim = any(f"INDEX workerqueue_{INDEX_WORD}" in d or f"INDEX {INDEX_WORD}" in d for d in details)
            sorts = any("TEMP B-TREE FOR ORDER BY" in d for d in details)
            by_primary_key = any("PRIMARY KEY" in d for d in details) and not uses_claim
        if _is_claim_select(sql):
            if not uses_claim:
                problems.append(f"the claim SELECT does not use the claim index: {short}")
            if sorts:
                problems.append(f"the claim SELECT sorts its rows instead of reading them in index order: {short}")
        if _is_waiting_count(sql) and not uses_claim:
            problems.append(f"the waiting counts do not use the claim index: {short}")
        if _is_by_id(sql) and not by_primary_key:
            problems.append(f"rows named by id are not read through the primary key: {short}")
    return problems


def _plan_table(dialect: str, plans: list[dict[str, Any]]) -> dict[str, Any]:
    rows = []
    for entry in plans:
        sql = entry["sql"]
        label = sql if len(sql) <= 90 else sql[:87] + "..."
        for r in entry["plan"]:
            if dialect == "mysql":
                rows.append([label, r["table"], r["type"], r["key"], r["rows"], r["Extra"]])
            else:
                rows.append([label, r["detail"]])
            label = ""
    if dialect == "mysql":
        return table(["statement", "table", "type", "key", "rows (estimate)", "Extra"], rows)
    return table(["statement", "EXPLAIN QUERY PLAN"], rows)


# ----------------------------------------------------------------------------- the cycle


class Cycler:
    """One master's claim cycle, against the backend directly."""

    def __init__(self, dsn: str) -> None:
        from fastsched.backends import open_backend

        self.dialect = harness.dialect_of(dsn)
        self.backend = open_backend(parse_dsn(dsn))
        self.backend.init_schema()
        now = _utcnow()
        self.children = [MASTER_PID + 1 + i for i in range(CHILDREN)]
        self.backend.register_master(HOST, MASTER_PID, CHILDREN, now)
        self.backend.register_children(HOST, MASTER_PID, self.children, now)
        self.outcomes = Outcomes()
        if self.dialect == "mysql":
            self.side: Any = harness.mysql_connect(dsn)
        else:
            self.side = sqlite3.connect(harness.sqlite_path(dsn), timeout=60, isolation_level=None)

    def cycle(self) -> tuple[float, float, list[int]]:
        """One cycle; returns (plan_counts seconds, whole cycle seconds, claimed priorities)."""
        start = time.perf_counter()
        now = _utcnow()
        counts = self.backend.plan_counts(now, PLAN_CAP, now - dt.timedelta(seconds=60))
        counted = time.perf_counter()
        wanted = core.plan(counts.waiting, [0] * 5, CHILDREN, CHILDREN, FETCH_LIMIT)
        batches = self.backend.write_outcomes_and_claim(self.outcomes, wanted, self.children, HOST, FETCH_LIMIT, now)
        end = time.perf_counter()
        jobs = [job for batch in batches for job in batch.jobs]
        self.outcomes = Outcomes(done=[job.id for job in jobs])
        return counted - start, end - start, [job.priority for job in jobs]

    def run(self, cycles: int) -> dict[str, Any]:
        plan_s, cycle_s, claimed = [], [], []
        timer = StatementTimer() if self.dialect == "mysql" else None
        for i in range(WARMUP_CYCLES + cycles):
            if timer is not None and i >= WARMUP_CYCLES:
                with timer.active():
                    p, c, priorities = self.cycle()
            else:
                p, c, priorities = self.cycle()
            _replenish(self.side, self.dialect, priorities, _utcnow())
            if i >= WARMUP_CYCLES:
                plan_s.append(p)
                cycle_s.append(c)
                claimed.append(len(priorities))
        result: dict[str, Any] = {
            "cycle_ms_median": median(cycle_s) * 1000,
            "cycle_ms_p90": percentile(cycle_s, 90) * 1000,
            "plan_counts_ms_median": median(plan_s) * 1000,
            "jobs_per_cycle": sum(claimed) / len(claimed),
        }
        if timer is not None:
            result["statement_ms_per_cycle"] = {
                name: (timer.seconds[name] / cycles * 1000, timer.calls[name] / cycles) for name in timer.seconds
            }
        return result

    def duties(self, repeats: int = 3) -> dict[str, float]:
        """Median ms of what the master also runs every few seconds (not per cycle): the Load
        line's stats, the purge sweep, the malformed-row sweep, expired-master recovery."""
        now = _utcnow()
        calls = {
            "stats (Load line, every 10 s)": lambda: self.backend.stats(now),
            "purge sweep (every 5 s)": lambda: self.backend.purge(  # one call of the pool's run
                now - dt.timedelta(hours=1), limit=duties.PURGE_CHUNK, max_scan=duties.PURGE_SCAN
            ),
            "fail_malformed sweep (every 5 s)": lambda: self.backend.fail_malformed(now),
            "recover_expired (every 5 s)": lambda: self.backend.recover_expired(now - dt.timedelta(seconds=30)),
        }
        timings = {}
        for name, call in calls.items():
            samples = []
            for _ in range(repeats):
                started = time.perf_counter()
                call()
                samples.append(time.perf_counter() - started)
            timings[name] = median(samples) * 1000
        return timings

    def close(self) -> None:
        self.backend.close()
        self.side.close()


def test_depth(benchmark: Any, bench_dsn: str) -> None:
    dialect = harness.dialect_of(bench_dsn)
    fastsched.connect(bench_dsn).close()  # the schema
    results: dict[int, dict[str, Any]] = {}
    plans: dict[int, list[dict[str, Any]]] = {}
    duties: dict[int, dict[str, float]] = {}
    duty_plans: dict[int, list[dict[str, Any]]] = {}
    filled = 0

    def run_all() -> None:
        nonlocal filled
        for depth in DEPTHS:
            started = time.perf_counter()
            _fill(bench_dsn, depth - filled)
            filled = depth
            fill_s = time.perf_counter() - started
            cycler = Cycler(bench_dsn)
            try:
                results[depth] = cycler.run(CYCLES)
                results[depth]["fill_seconds"] = fill_s
                with capture_sql(cycler.backend, dialect) as statements:
                    cycler.cycle()
                plans[depth] = explain(bench_dsn, statements)
                results[depth]["statements_per_cycle"] = len(statements)
                duties[depth] = cycler.duties(DUTY_REPEATS)
                with capture_sql(cycler.backend, dialect) as statements:
                    cycler.duties(1)
                duty_plans[depth] = explain(bench_dsn, statements)
            finally:
                cycler.close()

    harness.run_once(benchmark, run_all)

    small, big = DEPTHS
    ratio = results[big]["cycle_ms_median"] / results[small]["cycle_ms_median"]
    pending = harness.state_counts(bench_dsn)["pending"]
    figures = {
        f"{k}_at_{d}": v for d, r in results.items() for k, v in r.items() if not isinstance(v, dict)
    }
    figures.update(ratio=ratio, pending_at_end=pending, children=CHILDREN, fetch_limit=FETCH_LIMIT)
    problems = plan_problems(dialect, plans[big])
    duty_problems = plan_problems(dialect, duty_plans[big])
    tables = {
        "cycle": table(
            ["pending", "cycle ms (median)", "cycle ms (p90)", "plan_counts ms", "jobs claimed/cycle"],
            [
                [d, r["cycle_ms_median"], r["cycle_ms_p90"], r["plan_counts_ms_median"], r["jobs_per_cycle"]]
                for d, r in results.items()
            ],
        ),
    }
    if dialect == "mysql":
        names = sorted(results[big]["statement_ms_per_cycle"], key=lambda n: -results[big]["statement_ms_per_cycle"][n][0])
        tables["time per statement and cycle (round trip included)"] = table(
            ["statement", "calls/cycle", f"ms/cycle at {small:,}", f"ms/cycle at {big:,}"],
            [
                [
                    name,
                    results[big]["statement_ms_per_cycle"][name][1],
                    results[small].get("statement_ms_per_cycle", {}).get(name, (None,))[0],
                    results[big]["statement_ms_per_cycle"][name][0],
                ]
                for name in names
            ],
        )
    tables["the master's periodic duties (ms per call)"] = table(
        ["duty", f"at {small:,} pending", f"at {big:,} pending", "ratio"],
        [[name, duties[small][name], duties[big][name], duties[big][name] / max(duties[small][name], 1e-9)]
         for name in duties[big]],
    )
    tables[f"plans at {big:,} pending"] = _plan_table(dialect, plans[big])
    tables[f"plans of the periodic duties at {big:,} pending"] = _plan_table(dialect, duty_plans[big])
    record(
        benchmark,
        title=f"Claim cycle at {small:,} vs {big:,} pending jobs ({dialect})",
        figures=figures,
        tables=tables,
        targets=[Target(f"claim cycle at {big:,} / at {small:,} ({dialect})", ratio, "<=", TARGET_RATIO, "x")],
        notes=([f"Plan problem (asserted): {p}" for p in problems]
               or [("Claim-cycle plans checked (asserted): every statement on workerqueue uses an index, the claim "
                   "SELECT and the waiting counts use the claim index, the claim does not sort.")])
        + [f"Periodic duty, not per cycle (reported, not asserted): {p}" for p in duty_problems],
    )
    assert plans[big], "no statement of the claim cycle was captured"
    assert any(_is_claim_select(p["sql"]) for p in plans[big]), "no claim SELECT was captured"
    assert not problems, "query plans:\n" + "\n".join(problems)


def test_plan_checker_catches_a_full_scan() -> None:
    """The checker itself: a plan without the index is reported (so a pass means something)."""
    mysql_plan = [{"sql": "SELECT id FROM workerqueue WHERE done = 0 AND pid = 0 ORDER BY next_try LIMIT 5",
                   "plan": [{"table": "workerqueue", "type": "ALL", "key": None, "rows": 10**6,
                             "Extra": "Using where; Using filesort"}]}]
    assert len(plan_problems("mysql", mysql_plan)) == 3
    sqlite_plan = [{"sql": mysql_plan[0]["sql"], "plan": [{"detail": "SCAN workerqueue"},
                                                          {"detail": "USE TEMP B-TREE FOR ORDER BY"}]}]
    assert len(plan_problems("sqlite", sqlite_plan)) == 3
    by_id = "UPDATE workerqueue SET done = 1 WHERE id IN (1,2,3) AND host_id = 1 AND done = 0"
    assert plan_problems("sqlite", [{"sql": by_id, "plan": [
        {"detail": "SEARCH workerqueue USING INDEX workerqueue_claim (done=?)"}]}])
    assert not plan_problems("sqlite", [{"sql": by_id, "plan": [
        {"detail": "SEARCH workerqueue USING INTEGER PRIMARY KEY (rowid=?)"}]}])
    assert plan_problems("mysql", [{"sql": by_id, "plan": [
        {"table": "workerqueue", "type": "range", "key": "claim", "rows": 9, "Extra": ""}]}])
    assert not plan_problems("mysql", [{"sql": by_id, "plan": [
        {"table": "workerqueue", "type": "range", "key": "PRIMARY", "rows": 3, "Extra": "Using where"}]}])

