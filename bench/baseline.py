"""Raw-driver baselines measured in the same run as fastsched: no fastsched code on these paths.

The Friendica-shaped table is Friendica's ``workerqueue`` at HEAD (a0a8aeb304): its columns and
its eight secondary indexes (shared/reference/friendica-worker.md §1.1), created beside
fastsched's own table in the benchmark's private database as ``friendica_workerqueue``.
"""
from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing_extensions import Self

FRIENDICA_TABLE = "friendica_workerqueue"
CLAIM_BATCH = 100  # jobs per raw claim: "claim-100-then-complete"
INSERT_BATCH = 1000  # rows per raw multi-row INSERT
RAW_PID = 4242  # the pid a raw claimer writes

_FRIENDICA_INDEXES = (
    ("command", "command"),
    ("done_command_parameter", "done, command, parameter(64)"),
    ("done_executed", "done, executed"),
    ("done_priority_retrial_created", "done, priority, retrial, created"),
    ("done_priority_next_try", "done, priority, next_try"),
    ("done_pid_next_try", "done, pid, next_try"),
    ("done_pid_retrial", "done, pid, retrial"),
    ("done_pid_priority_created", "done, pid, priority, created"),
)

FRIENDICA_MYSQL_DDL = f"""
CREATE TABLE IF NOT EXISTS {FRIENDICA_TABLE} (
    id        INT UNSIGNED NOT NULL AUTO_INCREMENT,
    command   VARCHAR(100) NULL,
    parameter MEDIUMTEXT NULL,
    priority  TINYINT UNSIGNED NOT NULL DEFAULT 0,
    created   DATETIME NOT NULL DEFAULT '0001-01-01 00:00:00',
    pid       INT UNSIGNED NOT NULL DEFAULT 0,
    executed  DATETIME NOT NULL DEFAULT '0001-01-01 00:00:00',
    next_try  DATETIME NOT NULL DEFAULT '0001-01-01 00:00:00',
    retrial   TINYINT NOT NULL DEFAULT 0,
    done      BOOLEAN NOT NULL DEFAULT 0,
    PRIMARY KEY (id),
    {", ".join(f"KEY {name} ({cols})" for name, cols in _FRIENDICA_INDEXES)}
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci
"""

# SQLite has no prefix indexes: the whole parameter is indexed (Friendica never ran on SQLite).
FRIENDICA_SQLITE_DDL = [
    f"""CREATE TABLE IF NOT EXISTS {FRIENDICA_TABLE} (
        id INTEGER PRIMARY KEY AUTOINCREMENT, command TEXT, parameter TEXT,
        priority INTEGER NOT NULL DEFAULT 0, created TEXT NOT NULL DEFAULT '0001-01-01 00:00:00',
        pid INTEGER NOT NULL DEFAULT 0, executed TEXT NOT NULL DEFAULT '0001-01-01 00:00:00',
        next_try TEXT NOT NULL DEFAULT '0001-01-01 00:00:00', retrial INTEGER NOT NULL DEFAULT 0,
        done INTEGER NOT NULL DEFAULT 0)""",
    *(
        f"CREATE INDEX IF NOT EXISTS fw_{name} ON {FRIENDICA_TABLE} ({cols.replace('(64)', '')})"
        for name, cols in _FRIENDICA_INDEXES
    ),
]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)


def _rows(count: int, start: int, priority: int) -> list[tuple[Any, ...]]:
    created = _now() - dt.timedelta(seconds=1)
    return [
        ("BenchNoop", json.dumps([start + i]), priority, created, created)
        for i in range(count)
    ]


# ---------------------------------------------------------------------------- MariaDB


def mysql_create_friendica(conn: Any) -> None:
    with conn.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {FRIENDICA_TABLE}")
        cur.execute(FRIENDICA_MYSQL_DDL)


def mysql_fill_friendica(conn: Any, count: int, priority: int = 30) -> None:
    """``count`` runnable rows, in 1,000-row INSERTs (autocommit)."""
    sql = f"INSERT INTO {FRIENDICA_TABLE} (command, parameter, priority, created, next_try) VALUES (%s,%s,%s,%s,%s)"
    with conn.cursor() as cur:
        for start in range(0, count, INSERT_BATCH):
            cur.executemany(sql, _rows(min(INSERT_BATCH, count - start), start, priority))


def mysql_claim_complete_loop(conn: Any, priority: int = 30) -> int:
    """Drain the Friendica-shaped table the raw way, in one process: claim 100 (SELECT ... FOR
    UPDATE SKIP LOCKED + UPDATE, one transaction), then mark them done (a second one). Returns
    how many jobs it completed."""
    conn.autocommit(False)
    total = 0
    try:
        with conn.cursor() as cur:
            while True:
                now = _now()
                cur.execute(
                    f"SELECT id FROM {FRIENDICA_TABLE} WHERE done = 0 AND pid = 0 AND priority = %s"
                    " AND next_try < %s ORDER BY retrial, created, id LIMIT %s FOR UPDATE SKIP LOCKED",
                    (priority, now + dt.timedelta(seconds=1), CLAIM_BATCH),
                )
                ids = [row[0] for row in cur.fetchall()]
                if not ids:
                    conn.commit()
                    return total
                marks = ",".join(["%s"] * len(ids))
                cur.execute(
                    f"UPDATE {FRIENDICA_TABLE} SET pid = %s, executed = %s WHERE id IN ({marks}) AND done = 0 AND pid = 0",
                    (RAW_PID, now, *ids),
                )
                conn.commit()
                cur.execute(f"UPDATE {FRIENDICA_TABLE} SET done = 1 WHERE id IN ({marks}) AND pid = %s", (*ids, RAW_PID))
                conn.commit()
                total += len(ids)
    finally:
        conn.autocommit(True)


# ---------------------------------------------------------------------------- SQLite


def sqlite_connect(path: str) -> sqlite3.Connection:
    """A raw connection with the pragmas of a durable WAL queue (see ``SQLITE_PRAGMAS``)."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    for pragma in SQLITE_PRAGMAS:
        conn.execute(pragma)
    return conn


SQLITE_PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL")


def sqlite_create_friendica(conn: sqlite3.Connection) -> None:
    conn.execute(f"DROP TABLE IF EXISTS {FRIENDICA_TABLE}")
    for statement in FRIENDICA_SQLITE_DDL:
        conn.execute(statement)


def _iso(value: dt.datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S")


def sqlite_fill_friendica(conn: sqlite3.Connection, count: int, priority: int = 30) -> None:
    sql = f"INSERT INTO {FRIENDICA_TABLE} (command, parameter, priority, created, next_try) VALUES (?,?,?,?,?)"
    for start in range(0, count, INSERT_BATCH):
        rows = [(c, p, pr, _iso(cr), _iso(nt)) for c, p, pr, cr, nt in _rows(min(INSERT_BATCH, count - start), start, priority)]
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(sql, rows)
        conn.execute("COMMIT")


def sqlite_claim_complete_loop(conn: sqlite3.Connection, priority: int = 30) -> int:
    """The same loop as on MariaDB; BEGIN IMMEDIATE takes the write lock that SKIP LOCKED avoids."""
    total = 0
    while True:
        now = _now()
        conn.execute("BEGIN IMMEDIATE")
        ids = [
            row[0]
            for row in conn.execute(
                f"SELECT id FROM {FRIENDICA_TABLE} WHERE done = 0 AND pid = 0 AND priority = ?"
                " AND next_try < ? ORDER BY retrial, created, id LIMIT ?",
                (priority, _iso(now + dt.timedelta(seconds=1)), CLAIM_BATCH),
            )
        ]
        if not ids:
            conn.execute("COMMIT")
            return total
        marks = ",".join("?" * len(ids))
        conn.execute(
            f"UPDATE {FRIENDICA_TABLE} SET pid = ?, executed = ? WHERE id IN ({marks}) AND done = 0 AND pid = 0",
            (RAW_PID, _iso(now), *ids),
        )
        conn.execute("COMMIT")
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(f"UPDATE {FRIENDICA_TABLE} SET done = 1 WHERE id IN ({marks}) AND pid = ?", (*ids, RAW_PID))
        conn.execute("COMMIT")
        total += len(ids)


class CommitFloor:
    """The two durable commits a job's start waits for, and nothing else: a one-row INSERT that
    commits itself (the add's) then a one-row UPDATE that commits itself (the claim's), one after
    the other on one raw connection, on a small table of their own in the benchmark's database
    (MariaDB) or file (SQLite, with the queue's WAL and synchronous=FULL)."""

    TABLE = "latency_floor"

    def __init__(self, dsn: str) -> None:
        from fastsched.dsn import parse_dsn

        parsed = parse_dsn(dsn)
        self._sqlite = parsed.dialect == "sqlite"
        if self._sqlite:
            self._conn: Any = sqlite_connect(parsed.database)
            self._conn.execute(f"CREATE TABLE IF NOT EXISTS {self.TABLE} (id INTEGER PRIMARY KEY, v INTEGER)")
            self._cursor: Any = self._conn.cursor()
            self._mark = "?"
        else:
            import pymysql

            self._conn = pymysql.connect(
                host=parsed.host, port=parsed.port, user=parsed.user, password=parsed.password,
                database=parsed.database, autocommit=True,
            )
            self._cursor = self._conn.cursor()
            self._cursor.execute(
                f"CREATE TABLE IF NOT EXISTS {self.TABLE} (id INT AUTO_INCREMENT PRIMARY KEY, v INT) ENGINE=InnoDB"
            )
            self._mark = "%s"

    def once(self) -> float:
        """Seconds the two commits took, back to back."""
        cursor, mark = self._cursor, self._mark
        started = time.perf_counter()
        cursor.execute(f"INSERT INTO {self.TABLE} (v) VALUES (1)")
        cursor.execute(f"UPDATE {self.TABLE} SET v = v + 1 WHERE id = {mark}", (cursor.lastrowid,))
        return time.perf_counter() - started

    def close(self) -> None:
        self._conn.close()


class CommitStalls:
    """The database's own stalls during a run: CommitFloor's two commits, again and again on a
    thread of their own, every ``every`` seconds; a pair that took longer than ``over`` seconds is
    kept as its (start, end) on time.monotonic(), the clock the jobs' reports use. A job that waited
    across one of these waited for the disk, whatever the pool did (on this VM a file's fdatasync
    alone stalls 70-230 ms now and then, and MariaDB's commits up to 580 ms)."""

    def __init__(self, dsn: str, *, over: float, every: float = 0.01) -> None:
        self._floor = CommitFloor(dsn)
        self._over, self._every = over, every
        self.stalls: list[tuple[float, float]] = []
        self.pairs = 0
        self.longest = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="commit-stalls", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            started = time.monotonic()
            took = self._floor.once()
            self.pairs += 1
            self.longest = max(self.longest, took)
            if took > self._over:
                self.stalls.append((started, started + took))

    def overlaps(self, start: float, end: float) -> bool:
        """Whether a stall fell within [start, end]."""
        return any(s < end and e > start for s, e in self.stalls)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self._floor.close()


def timed(fn: Any, *args: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start
