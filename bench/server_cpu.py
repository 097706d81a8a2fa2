"""What the MariaDB server spends per job of a default-flag drain, by schema variant: a raw
experiment (no fastsched code on its path), to decide schema changes by measurement.

    python bench/server_cpu.py --dsn mysql://root@127.0.0.1:4750/fastsched_cpu --rounds 5

It drains ``--jobs`` pending rows the way the pool does (fastsched/sql/mysql/queries.sql): per
cycle a waiting/running count, then one transaction that completes the batch claimed ``--depth``
cycles before (UPDATE done = 1, finished, dedup_hash = NULL by id), claims the next batch
(claim_priority: SELECT ... FOR UPDATE SKIP LOCKED with the pause tests) and writes the claim
(claim_batch: UPDATE pid, host_id, executed by id). With depth 2 the rows of one other batch are
claimed while a claim runs, as with 2 workers.

Measured per job: the CPU of the server thread serving this connection, per statement, exact
(/proc/<server>/task/<thread>/schedstat; the thread from information_schema.PROCESSLIST.TID), and
the whole server's CPU (its other threads: purge, page flushing, the redo log) and the redo bytes
written. The whole server's figure is only this experiment's when nobody else uses the server: run
it on a private mariadbd (tests/galerakit.py's plain mode starts one with the same settings).
Variants run interleaved, round after round; medians are printed.

The variants (the table is a copy of workerqueue's columns; only the secondary indexes differ):
  today      claim (done, pid, host_id, priority, next_try), claim_queue (done, queue, priority,
             next_try), dedup (dedup_hash)
  nopid      claim (done, priority, next_try): a claim moves no index entry; the claim reads past
             the claimed rows by their row (and the running workers would need another source)
  noq        no claim_queue: a completion moves two entries, not three
  nopid_noq  both
  nohash     today's indexes, jobs added without dedup (dedup_hash NULL throughout)
  qgen       claim_queue on a generated column that is NULL for the 'default' queue (its entries
             never move; a --queues pool claiming 'default' would then read rows of other queues)
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import itertools
import json
import os
import statistics
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pymysql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import harness

HOST_ID = 7
PIDS = (111111, 222222)
PRIORITY = 30
COUNT_CAP = 2000  # the drain's plan_counts cap: one free slot x fetch limit 1000 x headroom 2

COLUMNS = """
    id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT, command VARCHAR(100) NOT NULL,
    queue VARCHAR(100) NOT NULL DEFAULT 'default', parameter MEDIUMTEXT NOT NULL,
    priority TINYINT UNSIGNED NOT NULL DEFAULT 30, created DATETIME(6) NOT NULL,
    pid INT UNSIGNED NOT NULL DEFAULT 0, host_id INT UNSIGNED NOT NULL DEFAULT 0,
    executed DATETIME(6) NOT NULL DEFAULT '1000-01-01 00:00:00',
    finished DATETIME(6) NOT NULL DEFAULT '1000-01-01 00:00:00', next_try DATETIME(6) NOT NULL,
    retrial TINYINT NOT NULL DEFAULT 0, crashes TINYINT UNSIGNED NOT NULL DEFAULT 0,
    done TINYINT UNSIGNED NOT NULL DEFAULT 0, last_error TEXT NULL, dedup_hash BINARY(20) NULL,
    failed_hash BINARY(20) NULL, PRIMARY KEY (id)"""
PAUSE_TABLE = """CREATE TABLE IF NOT EXISTS fastsched_pause (
    priority TINYINT UNSIGNED NOT NULL DEFAULT 0, command VARCHAR(100) NOT NULL DEFAULT '',
    queue VARCHAR(100) NOT NULL DEFAULT '', paused_by VARCHAR(255) NOT NULL, paused_at DATETIME(6) NOT NULL,
    PRIMARY KEY (priority, command, queue)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"""
CLAIM = """SELECT id, command, parameter, priority, retrial, crashes FROM workerqueue FORCE INDEX (claim)
WHERE done = 0 AND pid = 0 AND host_id = 0 AND priority = %(priority)s AND next_try <= %(now)s
  AND NOT EXISTS (SELECT 1 FROM fastsched_pause AS whole
                  WHERE whole.priority IN (0, %(priority)s) AND whole.command = '' AND whole.queue = '')
  AND NOT EXISTS (SELECT 1 FROM fastsched_pause AS p
                  WHERE p.priority IN (0, %(priority)s) AND p.command IN ('', workerqueue.command)
                    AND p.queue IN ('', workerqueue.queue))
ORDER BY next_try, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED"""
CLAIM_BATCH = "UPDATE workerqueue SET pid = %(pid)s, host_id = %(host_id)s, executed = %(now)s WHERE id IN ({ids})"
COMPLETE = """UPDATE workerqueue SET done = 1, finished = %(now)s, dedup_hash = NULL
WHERE id IN ({ids}) AND host_id = %(host_id)s AND done = 0"""
WAITING = "SELECT priority, COUNT(*) FROM (" + " UNION ALL ".join(
    f"(SELECT priority FROM workerqueue FORCE INDEX (claim) WHERE done = 0 AND pid = 0 AND host_id = 0 "
    f"AND priority = {p} AND next_try <= %(now)s LIMIT %(cap)s)" for p in (10, 20, 30, 40, 50)
) + ") AS waiting GROUP BY priority"
RUNNING = """SELECT priority, COUNT(*) FROM (SELECT priority FROM workerqueue FORCE INDEX (claim)
WHERE done = 0 AND pid > 0 GROUP BY done, pid, host_id, priority) AS running GROUP BY priority"""

TODAY = "KEY claim (done, pid, host_id, priority, next_try), KEY claim_queue (done, queue, priority, next_try)"
NOPID = "KEY claim (done, priority, next_try), KEY claim_queue (done, queue, priority, next_try)"
DEDUP = ", UNIQUE KEY dedup (dedup_hash)"
# name: (secondary indexes, running workers countable from an index, dedup hashes)
VARIANTS: dict[str, tuple[str, bool, bool]] = {
    "today": (TODAY + DEDUP, True, True),
    "nopid": (NOPID + DEDUP, False, True),
    "noq": ("KEY claim (done, pid, host_id, priority, next_try)" + DEDUP, True, True),
    "nopid_noq": ("KEY claim (done, priority, next_try)" + DEDUP, False, True),
    "nohash": (TODAY + DEDUP, True, False),
    "qgen": ("qstate VARCHAR(101) AS (IF(queue = 'default', NULL, CONCAT(done, queue))) PERSISTENT, "
             "KEY claim (done, pid, host_id, priority, next_try), KEY claim_queue (qstate, priority, next_try)"
             + DEDUP, True, True),
}
PHASES = ("counts", "complete", "claim_select", "claim_update", "commit")


class Server:
    """The server process's CPU and one connection's thread CPU, from /proc (nanoseconds)."""

    def __init__(self, dsn: str) -> None:
        proc = harness.db_server_process(dsn)
        if proc is None:
            raise SystemExit("no MariaDB server process on this host")
        self.pid = proc.pid

    def total_ns(self) -> int:
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int((int(fields[11]) + int(fields[12])) * 1e9 / os.sysconf("SC_CLK_TCK"))

    def thread_ns(self, tid: int) -> int:
        with open(f"/proc/{self.pid}/task/{tid}/schedstat") as f:
            return int(f.read().split()[0])


def _status_number(cur: Any, prefix: str) -> int:
    cur.execute("SHOW ENGINE INNODB STATUS")
    for line in cur.fetchone()[2].splitlines():
        if line.startswith(prefix):
            return int(line.split()[-1])
    return 0


def _wait_purged(cur: Any, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while _status_number(cur, "History list length") > 50 and time.monotonic() < deadline:
        time.sleep(0.05)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def _fill(cur: Any, keys: str, hashed: bool, jobs: int) -> None:
    cur.execute(PAUSE_TABLE)
    cur.execute("DROP TABLE IF EXISTS workerqueue")
    cur.execute(f"CREATE TABLE workerqueue ({COLUMNS}, {keys}) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 "
                "COLLATE=utf8mb4_bin")
    created = _utcnow() - dt.timedelta(seconds=1)
    rows = []
    for i in range(jobs):
        parameter = json.dumps(["job", i])
        key = hashlib.sha1(f"BenchNoop\0{parameter}".encode()).digest() if hashed else None
        rows.append(("BenchNoop", parameter, PRIORITY, key, created, created))
    for start in range(0, jobs, 5000):
        cur.executemany("INSERT INTO workerqueue (command, parameter, priority, dedup_hash, created, next_try) "
                        "VALUES (%s, %s, %s, %s, %s, %s)", rows[start:start + 5000])
    cur.execute("ANALYZE TABLE workerqueue")
    cur.fetchall()


def drain(conn: Any, server: Server, variant: str, jobs: int, batch: int, depth: int) -> dict[str, float]:
    keys, running_indexed, hashed = VARIANTS[variant]
    cur = conn.cursor()
    _fill(cur, keys, hashed, jobs)
    _wait_purged(cur)
    cur.execute("SELECT TID FROM information_schema.PROCESSLIST WHERE ID = CONNECTION_ID()")
    tid = int(cur.fetchone()[0])
    spent = dict.fromkeys(PHASES, 0)
    redo_before = _status_number(cur, "Log sequence number")
    server_before, thread_before, wall_before = server.total_ns(), server.thread_ns(tid), time.perf_counter()
    claimed: list[list[int]] = []  # batches claimed, oldest first, not yet completed
    done = cycle = 0
    while True:
        params = {"now": _utcnow(), "host_id": HOST_ID, "priority": PRIORITY, "limit": batch, "cap": COUNT_CAP}
        marks = [server.thread_ns(tid)]
        if cycle % 2 == 0:  # the drain reads its counts about every other claim
            cur.execute(WAITING, params)
            cur.fetchall()
            if running_indexed:
                cur.execute(RUNNING)
                cur.fetchall()
        marks.append(server.thread_ns(tid))
        cur.execute("BEGIN")
        finished = claimed.pop(0) if len(claimed) >= depth or (claimed and not claimed[-1]) else []
        if finished:
            cur.execute(COMPLETE.replace("{ids}", ",".join(map(str, finished))), params)
            done += cur.rowcount
        marks.append(server.thread_ns(tid))
        cur.execute(CLAIM, params)
        ids = [row[0] for row in cur.fetchall()]
        marks.append(server.thread_ns(tid))
        if ids:
            cur.execute(CLAIM_BATCH.replace("{ids}", ",".join(map(str, ids))), {**params, "pid": PIDS[cycle % 2]})
        marks.append(server.thread_ns(tid))
        conn.commit()
        marks.append(server.thread_ns(tid))
        for phase, (a, b) in zip(PHASES, itertools.pairwise(marks)):
            spent[phase] += b - a
        cycle += 1
        if ids:
            claimed.append(ids)
        elif not any(claimed):
            break
        else:
            claimed.append([])
    wall = time.perf_counter() - wall_before
    thread = server.thread_ns(tid) - thread_before
    whole = server.total_ns() - server_before
    redo = _status_number(cur, "Log sequence number") - redo_before
    assert done == jobs, f"{done} of {jobs} completed"
    cur.execute("DROP TABLE workerqueue")

    def per_job(ns: float) -> float:
        return ns / jobs / 1000

    return {
        "jobs/s": jobs / wall,
        "server µs/job": per_job(whole),
        "its thread µs/job": per_job(thread),
        **{f"{phase} µs/job": per_job(ns) for phase, ns in spent.items()},
        "other threads µs/job": per_job(whole - thread),
        "redo B/job": redo / jobs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", required=True, help="mysql://user@host:port/database (created if missing)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=30_000)
    parser.add_argument("--batch", type=int, default=750, help="jobs per claim (the default drain's, about)")
    parser.add_argument("--depth", type=int, default=2, help="batches claimed and not done when a claim runs")
    args = parser.parse_args(argv)
    names = args.variants.split(",")
    parts = urllib.parse.urlsplit(args.dsn)
    database = parts.path.lstrip("/")
    conn = pymysql.connect(host=parts.hostname or "127.0.0.1", port=parts.port or 3306, user=parts.username or "root",
                           password=parts.password or "", autocommit=True)
    conn.cursor().execute(f"CREATE DATABASE IF NOT EXISTS `{database}` CHARACTER SET utf8mb4")
    conn.select_db(database)
    conn.cursor().execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
    server = Server(args.dsn)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    print(f"load average before: {os.getloadavg()}", flush=True)
    for round_ in range(args.rounds):
        for name in names:
            figures = drain(conn, server, name, args.jobs, args.batch, args.depth)
            results[name].append(figures)
            print(round_, name, "  ".join(f"{k} {v:,.1f}" for k, v in figures.items()), flush=True)
    print(f"load average after: {os.getloadavg()}")
    print(f"medians of {args.rounds} rounds:")
    for name, runs in results.items():
        print(f"{name:10}", "  ".join(f"{k} {statistics.median(r[k] for r in runs):,.1f}" for k in runs[0]))
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
