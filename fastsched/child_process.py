"""What runs inside a pool child: module-level functions only (the master's side is
``fastsched.master.childset``).

A child is forked by the master (``multiprocessing.get_context("fork")``) and never touches the
database. It receives batches on its pipe, runs them and replies, as ``fastsched.protocol`` says.

Fencing: a shared ``RawArray('d', 1)`` for all children, the fence, holds the monotonic time until
which the master's lease is known good: the master moves it to (start of its last successful
heartbeat) + half the lease after each heartbeat. No other master may take this master's claims
before the lease has run out since that heartbeat, on the database's clock, so a child whose fence
has passed kills its job's process group (the child leads a process group of its own; a job's
subprocesses are in it unless they leave it) and dies, and starts no job while it is past. This
holds when the master cannot act: stopped (SIGSTOP, a debugger, a frozen cgroup), swapping, stuck.
A fenced child exits by SIGKILL of its group; the master knows it by the fence it published.

Signals: a child stops on its master's word only. The master sets ``progress[PROGRESS_TERM]``
before it sends SIGTERM (a run-time limit); a SIGTERM without it (systemd's control-group kill,
``kill -TERM -<pgid>``, an init that signals the group) is not for the child: the master got it
too and stops the pool gracefully, letting the job finish. SIGINT is ignored.
"""
from __future__ import annotations

import contextlib
import ctypes
import inspect
import json
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from time import monotonic
from typing import Any

from fastsched import context
from fastsched.protocol import (
    DEFER,
    DONE,
    ERROR,
    EXIT_CHILD_ERROR,
    EXIT_ORPHANED,
    EXIT_TERMINATED,
    FATAL,
    NOTE,
    PROGRESS_FENCED,
    PROGRESS_INDEX,
    PROGRESS_REVOKE,
    PROGRESS_SEQ,
    PROGRESS_START,
    PROGRESS_TERM,
    NoteMessage,
    Reply,
)
from fastsched.retry_policy import truncate_error
from fastsched.tasks import TaskPolicy, default_registry

__all__ = [
    "child_main",
    "fenced",
    "run_batch",
]

CHILD_START_FAILURE_PAUSE = 2.0  # seconds a child whose on_child_start hook raised waits before it exits
FENCE_POLL = 0.05  # seconds: the longest a fence guard sleeps before it reads the fence again

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


class _Terminated(BaseException):
    """Raised in the child by SIGTERM: the master stopped the job (run-time limit)."""


_terminating = False
_progress: Any = None  # this child's progress array, for the SIGTERM handler
_in_job = False  # a job's code runs now (the fence guard kills only then)


def _on_sigterm(signum: int, frame: Any) -> None:
    global _terminating
    if _progress is not None and len(_progress) > PROGRESS_TERM and not _progress[PROGRESS_TERM]:
        # Not the master's word: a signal to the whole group or cgroup. The master stops the pool.
        with contextlib.suppress(OSError):
            os.write(2, b"fastsched child %d: SIGTERM not sent by the master: ignored\n" % os.getpid())
        return
    _terminating = True
    raise _Terminated()


def _lead_own_group() -> None:
    """Lead a process group of our own: the fence kills the job's subprocesses with it, and a
    signal to the master's group (a terminal, a shell's ``kill -<pgid>``) does not reach us."""
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)


def _kill_own_group() -> None:
    """SIGKILL this child and every process of its group (the job's subprocesses)."""
    _flush()
    if os.getpgrp() == os.getpid():
        with contextlib.suppress(OSError):
            os.killpg(os.getpid(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def fenced(fence: Any) -> bool:
    """Whether the master's lease may have run out: its fence has passed."""
    return fence is not None and monotonic() >= fence[0]


def _guard_fence(fence: Any) -> None:
    """The fence guard, a thread of the child: it kills the job once the fence has passed."""
    while True:
        left = fence[0] - monotonic()
        if left <= 0 and _in_job:
            if _progress is not None and len(_progress) > PROGRESS_FENCED:
                _progress[PROGRESS_FENCED] = fence[0]
            _kill_own_group()
        time.sleep(min(max(left, 0.0), FENCE_POLL) or FENCE_POLL)


def _setup_signals() -> None:
    """Drop the master's handlers: SIGINT is ignored (the master handles shutdown), SIGTERM ends the
    job at once when it is the master's word (see the module's doc), everything else is the default."""
    try:
        signal.set_wakeup_fd(-1)
    except (ValueError, OSError):
        pass
    for signum in signal.valid_signals():
        try:
            handler = signal.getsignal(signum)
        except (ValueError, OSError):
            continue
        if callable(handler):
            signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm)


def _die_with_parent(master_pid: int) -> None:
    """Ask Linux to SIGKILL this child when the master dies, then make sure it has not died already.

    A child that outlived its master would go on running a job that another master recovers and
    runs again, at the same time.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != master_pid:
        os._exit(EXIT_ORPHANED)


def _signature_mismatch(function: Callable[..., Any], args: list[Any]) -> str | None:
    """Why ``function(*args)`` cannot be called, or None when it can (the TypeError came from inside)."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return None
    try:
        signature.bind(*args)
    except TypeError as exc:
        return f"arguments {json.dumps(args)[:200]} do not match the task's signature {signature}: {exc}"
    return None


_loop: Any = None  # this child's event loop, made for its first coroutine


def _run_coroutine(coroutine: Any) -> Any:
    """Run an ``async def`` task's coroutine to its end on this child's own event loop."""
    global _loop
    if _loop is None or _loop.is_closed():
        import asyncio

        _loop = asyncio.new_event_loop()
        asyncio.set_event_loop(_loop)
    return _loop.run_until_complete(coroutine)


def _ended_by_policy(exc: BaseException, policy: TaskPolicy | None) -> tuple[int, Any] | None:
    """The note for an exception that says how the job ends (Fail, Retry, the task's no_retry);
    None for one that is an ordinary failed attempt."""
    if isinstance(exc, context.Fail):
        return FATAL, truncate_error(exc.reason)
    if isinstance(exc, context.Retry):
        return DEFER, exc.delay
    if policy is not None and policy.no_retry and isinstance(exc, policy.no_retry):
        return FATAL, truncate_error(
            f"{type(exc).__name__}: {exc} (in the task's no_retry: not retried)\n\n{traceback.format_exc()}"
        )
    return None


def run_batch(
    seq: int,
    jobs: Sequence[tuple[Any, ...]],
    tasks: Mapping[str, Callable[..., Any]],
    progress: Any,
    stop: Any,
    send: Callable[[Any], None],
    policies: Mapping[str, TaskPolicy] | None = None,
    fence: Any = None,
    timings: list[tuple[str, int, float]] | None = None,
) -> int:
    """Run ``jobs`` (``protocol.JobToRun`` tuples) in order, sending a note for each job that did not
    succeed; return how many started. None starts once the stop flag is set, once the fence has
    passed, or once the master has revoked the batch (``progress[PROGRESS_REVOKE] == seq``).

    ``policies``: command -> TaskPolicy (its no_retry); default: the default registry's.
    ``timings``: gets one ``(command, jobs, seconds)`` per run of consecutive started jobs of one
    command (a job's time runs from its start to the next one's, so the step between jobs counts).
    """
    global _in_job

    def append(entry: tuple[int, int, Any]) -> None:
        send(NoteMessage(NOTE, seq, entry[0], entry[1], entry[2]))

    loads = json.loads
    get = tasks.get
    begin_job, set_args, take_deferral = context.begin_job, context.set_args, context.take_deferral
    policy_of = (default_registry.policies() if policies is None else policies).get
    iscoroutine = inspect.iscoroutine
    progress[PROGRESS_INDEX] = -1.0
    progress[PROGRESS_SEQ] = seq
    index = 0
    end_batch = context.end_batch
    run_command: Any = None  # the command of the current run of jobs, for timings
    run_jobs = 0
    run_started = 0.0
    for job in jobs:
        if stop[0] or progress[PROGRESS_REVOKE] == seq or fenced(fence):
            break
        progress[PROGRESS_START] = now = monotonic()
        progress[PROGRESS_INDEX] = index
        _, command, parameter, _, _ = job  # protocol.JobToRun's fields
        if timings is not None:
            if command != run_command:
                if run_jobs:
                    timings.append((run_command, run_jobs, now - run_started))
                run_command, run_jobs, run_started = command, 0, now
            run_jobs += 1
        begin_job(job)
        if parameter == "[]":
            args: Any = []
        else:
            try:
                args = loads(parameter)
            except (ValueError, RecursionError) as exc:  # RecursionError: nested too deeply to decode
                append((index, FATAL, f"parameter is not valid JSON: {exc}"))
                index += 1
                continue
            if type(args) is not list:
                append((index, FATAL, f"parameter must be a JSON array of args, got {type(args).__name__}"))
                index += 1
                continue
        function = get(command)
        if function is None:
            append((index, FATAL, f"unknown command: {command}"))
            index += 1
            continue
        set_args(args)
        _in_job = True
        try:
            result = function(*args)
            if result is not None and iscoroutine(result):
                _run_coroutine(result)
        except BaseException as exc:  # noqa: BLE001 - the job boundary: nothing a job raises ends the child
            _in_job = False
            if _terminating or isinstance(exc, _Terminated):
                _exit(EXIT_TERMINATED)
            ended = _ended_by_policy(exc, policy_of(command))
            mismatch = _signature_mismatch(function, args) if ended is None and isinstance(exc, TypeError) else None
            if ended is not None:
                append((index, ended[0], ended[1]))
            elif mismatch is not None:
                append((index, FATAL, mismatch))
            else:
                append((index, ERROR, truncate_error(traceback.format_exc())))
            take_deferral()  # a defer() before the exception says nothing: the exception decides
        else:
            _in_job = False
            deferred, delay = take_deferral()
            if deferred:
                append((index, DEFER, delay))
        index += 1
    if run_jobs and timings is not None:
        timings.append((run_command, run_jobs, monotonic() - run_started))
    end_batch()
    return index


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass


def _exit(code: int) -> None:
    """End the child without running any inherited finalizer (it would talk on the master's sockets)."""
    _flush()
    os._exit(code)


def _run_child_start_hook(hook: Callable[[], Any]) -> None:
    """Run an ``on_child_start`` hook; if it raises, say so and end the child (EXIT_CHILD_ERROR)
    after CHILD_START_FAILURE_PAUSE, before any job. The master starts another child: a hook that
    always fails (its database is down) must not make it fork, claim and release in a tight loop."""
    try:
        hook()
    except Exception:  # noqa: BLE001 - the application's code: reported, then the child ends
        name = f"{getattr(hook, '__module__', '?')}.{getattr(hook, '__qualname__', repr(hook))}"
        with contextlib.suppress(Exception):  # not BaseException: the master's SIGTERM still ends it
            traceback.print_exc()
            sys.stderr.write(
                f"fastsched child {os.getpid()}: on_child_start hook {name} failed; this child runs no job "
                f"and exits in {CHILD_START_FAILURE_PAUSE:g}s, then the master starts another\n"
            )
        _flush()
        time.sleep(CHILD_START_FAILURE_PAUSE)
        raise _ChildStartFailed from None


class _ChildStartFailed(Exception):
    """An on_child_start hook raised (reported already)."""


def child_main(
    conn: Any,
    progress: Any,
    stop: Any,
    master_pid: int,
    retry_limit: int,
    tasks: Mapping[str, Callable[..., Any]],
    fence: Any = None,
) -> None:
    """The child's whole life: receive batches, run them, reply; exit on None, EOF or the
    master's SIGTERM. ``fence``: the master's fence (see the module's doc), None for none."""
    global _progress
    code = 0
    try:
        _progress = progress
        _setup_signals()
        _lead_own_group()
        _die_with_parent(master_pid)
        if fence is not None:
            threading.Thread(target=_guard_fence, args=(fence,), name="fastsched-fence", daemon=True).start()
        context.set_retry_limits(retry_limit, {
            name: policy.retry_limit
            for name, policy in default_registry.policies().items()
            if policy.retry_limit is not None
        })
        for hook in default_registry.child_start_hooks():
            _run_child_start_hook(hook)
        recv = conn.recv
        send = conn.send
        while True:
            try:
                message = recv()
            except (EOFError, OSError):
                break  # the master is gone or closed our pipe
            if message is None:
                break
            seq, jobs = message  # a protocol.BatchMessage (unpacked: its fields in order)
            started = monotonic()
            timings: list[tuple[str, int, float]] = []
            processed = run_batch(seq, jobs, tasks, progress, stop, send, fence=fence, timings=timings)
            _flush()
            send(Reply(DONE, seq, processed, monotonic() - started, timings))
    except _Terminated:
        code = EXIT_TERMINATED
    except _ChildStartFailed:
        code = EXIT_CHILD_ERROR
    except BaseException:  # noqa: BLE001 - whatever it is, the child must end with os._exit
        code = EXIT_CHILD_ERROR
        with contextlib.suppress(BaseException):
            traceback.print_exc()
    _exit(code)
