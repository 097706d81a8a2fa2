"""Tasks with policies, for the end-to-end tests of tests/test_task_policy.py (imported into the
pool with ``imports=("tests.taskjobs",)``). Each writes JSON lines to the file named by its first
argument (O_APPEND: lines of several processes never interleave)."""
from __future__ import annotations

import asyncio
import json
import os

import fastsched
from fastsched.context import current_job

_started_by_hook: list[int] = []  # pids whose on_child_start hook ran, in this process


def write(path: str, **fields: object) -> None:
    line = json.dumps({"pid": os.getpid(), **fields})
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@fastsched.on_child_start
def note_child_start() -> None:
    _started_by_hook.append(os.getpid())
    path = os.environ.get("TASKJOBS_HOOK_FILE")
    if path:
        write(path, event="child_start")


@fastsched.task
async def async_record(path: str, n: int) -> None:
    """An async task that awaits before it writes: recorded done only if the body ran to its end."""
    await asyncio.sleep(0.01)
    write(path, event="async", n=n, id=current_job().id, loop=id(asyncio.get_running_loop()),
          hook_ran=os.getpid() in _started_by_hook)


@fastsched.task
async def async_fail(path: str) -> None:
    await asyncio.sleep(0)
    write(path, event="async_fail")
    raise RuntimeError("async body failed")


class Permanent(Exception):
    pass


@fastsched.task(no_retry=Permanent)
def permanent(path: str) -> None:
    write(path, event="permanent", retrial=current_job().retrial)
    raise Permanent("the account is gone")


@fastsched.task
def fail_at_once(path: str) -> None:
    write(path, event="fail", retrial=current_job().retrial)
    raise fastsched.Fail("no such recipient")


@fastsched.task(retry_limit=2)
def retry_twice(path: str) -> None:
    job = current_job()
    write(path, event="retry", retrial=job.retrial)
    raise fastsched.Retry(delay=0)


@fastsched.task(timeout=0.5, retry_limit=0)
def too_slow(path: str) -> None:
    write(path, event="too_slow")
    import time

    time.sleep(30)


def _growing(retrial: int) -> float:
    return 0.01 * retrial


@fastsched.task(retry_limit=3, retry_delay=_growing)
def flaky(path: str) -> None:
    write(path, event="flaky", retrial=current_job().retrial)
    raise RuntimeError("still flaky")


@fastsched.task(queue="mail")
def mail_record(path: str, n: int) -> None:
    write(path, event="mail", n=n, id=current_job().id)


@fastsched.task
def record_pid(path: str, n: int) -> None:
    write(path, event="pid", n=n)


@fastsched.task(timeout=0.5, retry_limit=0)
async def async_too_slow(path: str) -> None:
    write(path, event="async_too_slow")
    await asyncio.sleep(30)
    write(path, event="async_too_slow_end")
