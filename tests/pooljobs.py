"""Registered tasks for the pool's end-to-end tests (tests/test_pool.py imports them into the pool
with ``PoolSettings(imports=("tests.pooljobs",))``).

Tasks that record write one JSON line per event to the file named by their first argument, with
O_APPEND so lines from several processes never interleave: {"event": "start"|"end", "id", "pid",
"n", "priority", "retrial", "t"}. Tests read them back to assert exactly-once and no overlap.
"""
from __future__ import annotations

import ctypes
import json
import os
import signal
import time

import fastsched
from fastsched.context import current_job


def _write(path: str, event: str, n: object) -> None:
    job = current_job()
    line = json.dumps(
        {"event": event, "id": job.id, "pid": os.getpid(), "n": n, "priority": job.priority,
         "retrial": job.retrial, "command": job.command, "t": time.time()}
    )
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@fastsched.task
def noop(*args: object) -> None:
    """Nothing (args only make jobs distinct, past dedup)."""


@fastsched.task
def record(path: str, n: object = None, seconds: float = 0.0) -> None:
    """Record a start, sleep ``seconds``, record an end."""
    _write(path, "start", n)
    if seconds:
        time.sleep(seconds)
    _write(path, "end", n)


@fastsched.task("Sleep")
def sleep(seconds: float) -> None:
    time.sleep(seconds)


@fastsched.task
def fail(path: str, message: str) -> None:
    _write(path, "start", message)
    raise RuntimeError(message)


@fastsched.task
def defer_then_succeed(path: str, times: int, delay: float | None = None) -> None:
    """Defer ``times`` times, then record a success."""
    _write(path, "start", times)
    if current_job().retrial < times:
        fastsched.defer(delay)
        return
    _write(path, "end", times)


@fastsched.task
def crash() -> None:
    os._exit(3)


@fastsched.task
def kill9() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@fastsched.task
def segfault() -> None:
    ctypes.string_at(0)


@fastsched.task
def touch(path: str) -> None:
    with open(path, "a"):
        pass


@fastsched.task
def stubborn(path: str, n: object, seconds: float) -> None:
    """Record a start, then sleep ``seconds`` ignoring SIGTERM (only SIGKILL stops it)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _write(path, "start", n)
    time.sleep(seconds)
    _write(path, "end", n)


def _claimed_rows(dsn: str, query: str, param: int) -> int:
    """One count from the queue's table, on a connection of the job's own (the child has none)."""
    from fastsched.dsn import parse_dsn

    d = parse_dsn(dsn)
    if d.dialect == "sqlite":
        import sqlite3

        conn: object = sqlite3.connect(d.database, timeout=30)
        sql = query.replace("%s", "?")
    else:
        import pymysql

        conn = pymysql.connect(host=d.host, port=d.port, user=d.user, password=d.password, database=d.database)
        sql = query
    try:
        cursor = conn.cursor()  # type: ignore[attr-defined]
        cursor.execute(sql, (param,))
        return int(cursor.fetchone()[0])
    finally:
        conn.close()  # type: ignore[attr-defined]


def _until(condition: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


@fastsched.task
def census(path: str, dsn: str, n: object, rows: int = 0, claimed_id: int = 0, until_file: str = "") -> None:
    """Record how many rows this job's child holds claimed (its batch, and a batch sent ahead of
    it), as {"event": "census", "claimed": ...}; first wait (up to 30 s each) until the child holds
    ``rows`` rows, then until job ``claimed_id`` is claimed by this child (recorded as
    "claimed_id_seen"), then until ``until_file`` exists; then record an end. A second attempt
    (the first one's child died) waits for nothing."""
    pid = os.getpid()
    mine = "SELECT COUNT(*) FROM workerqueue WHERE done = 0 AND pid = %s"
    job = current_job()
    again = f"{path}.{job.id}.ran"  # run before (its child died): no waiting this time
    if os.path.exists(again):
        rows, claimed_id, until_file = 0, 0, ""
    with open(again, "a"):
        pass
    if rows:
        _until(lambda: _claimed_rows(dsn, mine, pid) >= rows, 30.0)
    line = {"event": "census", "id": job.id, "pid": pid, "n": n, "claimed": _claimed_rows(dsn, mine, pid),
            "t": time.time()}
    if claimed_id:
        line["claimed_id_seen"] = _until(
            lambda: _claimed_rows(dsn, "SELECT pid FROM workerqueue WHERE id = %s", claimed_id) == pid, 30.0
        )
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (json.dumps(line) + "\n").encode())
    finally:
        os.close(fd)
    if until_file:
        _until(lambda: os.path.exists(until_file), 30.0)
    _write(path, "end", n)
