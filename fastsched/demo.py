"""``fastsched-pool demo``: a mixed workload over the five priorities, a real pool, a live display.

It enqueues ``jobs`` jobs (about 5 % CRITICAL, 15 % HIGH, 40 % MEDIUM, 25 % LOW, 15 % NEGLIGIBLE;
each sleeps a few milliseconds, and a few defer themselves once), starts
``fastsched-pool start --import fastsched.demo_work`` as a child process, and shows the queue until it
is empty: on a terminal one line per priority (waiting, running, done, a progress bar, its share
of the workers and its quadratic limit), redrawn in place; off a terminal a log line every few
seconds. Then it stops the pool and prints a summary: jobs, jobs/s and, per priority, how long
jobs waited from enqueue to start (p50 and p99): the quadratic rule at work.

The demo's task (``demo.work``) is registered by ``fastsched.demo_work``, which only the demo's pool
imports: the CLI imports this module for every command, and a user's pool must not run a command
it never registered.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any

import fastsched
from fastsched import core
from fastsched.backends import OperatorStore, open_backend
from fastsched.config import DEFAULT_LEASE
from fastsched.dsn import DSN, parse_dsn
from fastsched.errors import FastschedError
from fastsched.priority import Priority
from fastsched.status import seconds_text, shares

DEFAULT_JOBS = 600
DEFAULT_WORKERS = 8  # more than the five priorities, so the quadratic share shows
MIX = {  # share of the jobs per priority
    Priority.CRITICAL: 0.05,
    Priority.HIGH: 0.15,
    Priority.MEDIUM: 0.40,
    Priority.LOW: 0.25,
    Priority.NEGLIGIBLE: 0.15,
}
WORK_MS = (5, 40)  # milliseconds a job sleeps, uniformly
DEFER_SHARE = 0.03  # jobs that defer themselves once
DEFER_DELAY = 1.0  # seconds
SEED = 6719  # the workload is the same on every run (Friendica's PR number)
REFRESH_TTY = 0.2  # seconds between redraws on a terminal
REFRESH_LOG = 2.0  # seconds between progress lines off a terminal
POOL_START_TIMEOUT = 30.0  # seconds for the pool to start taking jobs
STOP_TIMEOUT = 30.0  # seconds the pool may take to stop
BAR_WIDTH = 24  # characters
COMMAND = "demo.work"


def workload(jobs: int, seed: int = SEED) -> list[tuple[int, str, int, int, bool]]:
    """(priority, command, n, milliseconds, defer_once) per job, priorities interleaved."""
    rng = random.Random(seed)
    counts = {p: int(jobs * share) for p, share in MIX.items()}
    counts[Priority.MEDIUM] += jobs - sum(counts.values())
    priorities = [int(p) for p, count in counts.items() for _ in range(count)]
    rng.shuffle(priorities)
    return [
        (p, COMMAND, n, rng.randint(*WORK_MS), rng.random() < DEFER_SHARE) for n, p in enumerate(priorities)
    ]


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100), nearest rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def _bar(fraction: float) -> str:
    filled = round(max(0.0, min(fraction, 1.0)) * BAR_WIDTH)
    return "[" + "#" * filled + "." * (BAR_WIDTH - filled) + "]"


class _Display:
    """One line per priority redrawn in place on a terminal, or a progress line every few seconds."""

    def __init__(self, totals: dict[int, int], workers: int, tty: bool, say: Callable[[str], None]) -> None:
        self.totals = totals
        self.workers = workers
        self.tty = tty
        self.say = say
        self.drawn = 0
        self.next_line = 0.0

    def update(self, stats: list[Any], running_workers: list[int], active: int, elapsed: float) -> None:
        waiting = [entry.waiting for entry in stats]
        share = shares(waiting, running_workers, active)
        done_total = sum(entry.done_last_hour for entry in stats)
        if not self.tty:
            if time.monotonic() < self.next_line:
                return
            self.next_line = time.monotonic() + REFRESH_LOG
            parts = " ".join(
                f"{Priority(e.priority).name}={e.waiting}/{e.running}/{e.done_last_hour}" for e in stats
            )
            self.say(
                f"demo {elapsed:5.1f}s: {done_total}/{sum(self.totals.values())} done, "
                f"{done_total / max(elapsed, 1e-9):.0f} jobs/s; waiting/running/done {parts}"
            )
            return
        lines = []
        for rank, entry in enumerate(stats):
            total = self.totals.get(entry.priority, 0)
            limit = share[rank]["limit"]
            lines.append(
                f"{Priority(entry.priority).name:<10} waiting {entry.waiting:5d}  running {entry.running:3d}  "
                f"done {entry.done_last_hour:5d}/{total:<5d} {_bar(entry.done_last_hour / total if total else 1)}  "
                f"workers {running_workers[rank]:2d}/{self.workers} "
                f"({running_workers[rank] / max(self.workers, 1):4.0%}, limit {'-' if limit is None else limit})"
            )
        lines.append(
            f"{elapsed:5.1f} s: {done_total}/{sum(self.totals.values())} jobs done, "
            f"{done_total / max(elapsed, 1e-9):.0f} jobs/s"
        )
        up = f"\x1b[{self.drawn}F" if self.drawn else ""
        sys.stdout.write(up + "".join(f"\x1b[2K{line}\n" for line in lines))
        sys.stdout.flush()
        self.drawn = len(lines)


def _pool_command(workers: int, host_id: str, workdir: str) -> list[str]:
    return [
        sys.executable, "-m", "fastsched", "start", "--import", "fastsched.demo_work", "--workers", str(workers),
        "--host-id", host_id, "--pidfile", os.path.join(workdir, "pool.pid"),
        "--retry-delay", f"{DEFER_DELAY:g}", "--log-level", "WARNING",
    ]


def _dsn_text(dsn: DSN) -> str:
    """The DSN as text, password included: for the pool's environment only, never shown."""
    if dsn.dialect == "sqlite":
        return dsn.masked()
    quote = urllib.parse.quote
    auth = quote(dsn.user, safe="") + (":" + quote(dsn.password, safe="") if dsn.password else "")
    host = f"[{dsn.host}]" if ":" in dsn.host else dsn.host
    query = ("?" + urllib.parse.urlencode(dsn.options)) if dsn.options else ""
    return f"mysql://{auth}{'@' if auth else ''}{host}:{dsn.port}/{quote(dsn.database, safe='')}{query}"


def _pool_env(dsn: DSN) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTSCHED_") or k == "FASTSCHED_IMPL"}
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(fastsched.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    env["FASTSCHED_DSN"] = _dsn_text(dsn)  # in the environment, not in argv where ps shows it
    return env


class _Failed(Exception):
    """The demo cannot go on; the message says why."""


def _wait_for_master(backend: OperatorStore, host_id: str, pool: subprocess.Popen[bytes], log_path: str) -> None:
    deadline = time.monotonic() + POOL_START_TIMEOUT
    while not any(p.role == "master" and p.host == host_id for p in backend.processes()):
        if pool.poll() is not None:
            raise _Failed(f"the demo's pool exited at start (exit code {pool.returncode}):\n{_log_tail(log_path)}")
        if time.monotonic() > deadline:
            raise _Failed(f"the demo's pool did not start in {POOL_START_TIMEOUT:g} s:\n{_log_tail(log_path)}")
        time.sleep(0.05)


def run(dsn: DSN | None, *, jobs: int = DEFAULT_JOBS, workers: int = DEFAULT_WORKERS,
        say: Callable[[str], None] = print, tty: bool | None = None) -> int:
    """Run the demo; return the exit code (0 when every job ran)."""
    tty = sys.stdout.isatty() if tty is None else tty
    workdir = tempfile.mkdtemp(prefix="fastsched-demo-")
    temporary = dsn is None
    dsn = dsn or parse_dsn("sqlite:///" + os.path.join(workdir, "demo.sqlite3"))
    log_path = os.path.join(workdir, "pool.log")
    host_id = f"demo-{os.getpid()}"
    pool: subprocess.Popen[bytes] | None = None
    queue = fastsched.connect(dsn)
    backend = open_backend(dsn)
    try:
        before = queue.stats()
        pending = sum(e.waiting + e.deferred + e.running for e in before)
        if pending:
            raise _Failed(f"the queue of {dsn} holds {pending} pending jobs: the demo needs an empty queue "
                          f"(leave out --dsn to use a temporary SQLite file)")
        baseline = {e.priority: e.done_last_hour for e in before}
        specs = workload(jobs)
        totals = {int(p): 0 for p in Priority}
        for spec in specs:
            totals[spec[0]] += 1
        mix = ", ".join(f"{totals[int(p)]} {p.name}" for p in Priority)
        where = "a temporary SQLite file" if temporary else str(dsn)
        say(f"fastsched demo: {jobs} jobs ({mix}), {WORK_MS[0]}-{WORK_MS[1]} ms each, on {workers} workers, "
            f"in {where}")
        with open(log_path, "wb") as log_file:
            pool = subprocess.Popen(_pool_command(workers, host_id, workdir), env=_pool_env(dsn),
                                    stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT)
        _wait_for_master(backend, host_id, pool, log_path)
        ids = queue.add_many(specs)
        started = time.monotonic()
        display = _Display(totals, workers, tty, say)
        while True:
            now = fastsched.queue.utcnow()
            stats = [
                dataclasses.replace(e, done_last_hour=e.done_last_hour - baseline.get(e.priority, 0))
                for e in backend.stats(now)
            ]
            counts = backend.plan_counts(now, 1, now - dt.timedelta(seconds=DEFAULT_LEASE))
            elapsed = time.monotonic() - started
            display.update(stats, list(counts.running), counts.active, elapsed)
            if not any(e.waiting or e.deferred or e.running for e in stats):
                break
            if pool.poll() is not None:
                raise _Failed(f"the demo's pool exited early (exit code {pool.returncode}):\n{_log_tail(log_path)}")
            time.sleep(REFRESH_TTY if tty else min(REFRESH_LOG, 0.25))
        elapsed = time.monotonic() - started
        _stop(pool)
        pool = None
        _summary(queue, ids, elapsed, workers, say)
        return 0
    except _Failed as exc:
        say(str(exc))
        return 1
    except KeyboardInterrupt:
        say("interrupted: stopping the demo's pool")
        return 1
    except FastschedError as exc:
        say(f"the demo failed: {exc}")
        return 1
    finally:
        if pool is not None:
            _stop(pool)
        backend.close()
        queue.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _stop(pool: subprocess.Popen[bytes]) -> None:
    if pool.poll() is None:
        pool.send_signal(signal.SIGTERM)
        try:
            pool.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pool.kill()
            pool.wait()


def _log_tail(path: str, lines: int = 20) -> str:
    with open(path, errors="replace") as file:
        return "\n".join("  " + line for line in file.read().splitlines()[-lines:])


def _summary(queue: Any, ids: list[int], elapsed: float, workers: int, say: Callable[[str], None]) -> None:
    waits: dict[int, list[float]] = {int(p): [] for p in Priority}
    deferred = 0
    for job_id in ids:
        job = queue.get(job_id)
        if job.retrial:  # its last start came after a deferral: not a first wait
            deferred += 1
        elif job.executed is not None:
            waits[job.priority].append(max((job.executed - job.created).total_seconds(), 0.0))
    say("")
    say(f"done: {len(ids)} jobs in {elapsed:.1f} s, {len(ids) / max(elapsed, 1e-9):.1f} jobs/s on {workers} workers "
        f"({deferred} deferred themselves once)")
    say("wait from enqueue to start, per priority (jobs that never deferred):")
    say(f"  {'priority':<12}{'jobs':>6}{'p50':>12}{'p99':>12}")
    for p in Priority:
        values = waits[int(p)]
        say(f"  {p.name:<12}{len(values):>6}{seconds_text(percentile(values, 50)):>12}"
            f"{seconds_text(percentile(values, 99)):>12}")
    limits = ", ".join(str(x) for x in core.quadratic_limits(workers, len(Priority)))
    fewer = (
        " With fewer workers than priorities in play, a freed worker goes back to its own priority first, "
        "so the lowest wait until a higher one runs out of work (docs/concepts.md)."
        if workers < len(Priority) else ""
    )
    say(f"With all five priorities waiting, the quadratic rule gives the {workers} workers the limits {limits}, "
        "highest priority first, and waiting CRITICAL work always goes first: a priority's wait grows with its "
        f"backlog per worker.{fewer} `fastsched-pool status` and `fastsched-pool explain ID` show the same rules "
        "on a live queue.")
