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
