"""Children die, on purpose: random SIGKILLs during a 20,000-job run, jobs that crash their own
child (os._exit, SIGSEGV, SIGKILL, runaway memory under an address-space limit) and jobs that run
past their priority's time limit. On the real MariaDB, through ``python -m fastsched start``.

What must hold (faultkit.check_runs): every job completed or was failed with a reason; no two runs
of a job overlapped; a run only repeated when a child died in it (at-least-once).
"""

from __future__ import annotations

import random
import resource
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from faultkit import (
    ChildWatcher,
    PoolProc,
    check_runs,
    connect_raw,
    job_states,
    load_runs,
    record_figures,
    running_job,
    sql,
)

import fastsched

KILL_JOBS = 20_000
KILLS = 60  # SIGKILLs, each at a random point of the run (a random share of the jobs done)
PROGRESS_POLL = 0.02  # seconds between two looks at how many jobs are done
BUSY_WAIT = 0.1  # seconds the killer looks for a child in the middle of a job before it takes any child
JOB_MS = 0.3  # milliseconds each job of the kill test works, so that a kill often lands mid-job
KILL_SEED = 20240501
ADDRESS_SPACE_LIMIT = 512 * 1024 * 1024  # bytes (RLIMIT_AS) the pool of the memory test runs under
LIMIT_MINUTES = 0.02  # the HIGH run-time limit of the time-limit test (1.2 s)
KILL_GRACE = 5.0  # seconds: PoolSettings' default kill_grace (SIGTERM -> SIGKILL), not a CLI flag


def _add(dsn: str, jobs: list[tuple[Any, ...]]) -> list[int]:
    with fastsched.connect(dsn) as queue:
        return queue.add_many(jobs)


@pytest.fixture
def watcher() -> Iterator[ChildWatcher]:
    with ChildWatcher() as found:
        yield found


def _busy_children(pool: PoolProc, runs_dir: Path) -> list[int]:
    """The children in the middle of a job (an idle child's death proves little), else all of them."""
    deadline = time.monotonic() + BUSY_WAIT
    while True:
        children = pool.children()
        busy = [pid for pid in children if running_job(runs_dir, pid) is not None]
        if busy or time.monotonic() > deadline:
            return busy or children
        time.sleep(0.002)


def test_20000_jobs_while_children_are_killed_at_random(
    mysql_dsn: str, tmp_path: Path, watcher: ChildWatcher
) -> None:
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    # Mostly batched priorities (fetch_limit per claim), some LOW/NEGLIGIBLE (one job per claim).
    priorities = [10] * 3000 + [20] * 6000 + [30] * 10_500 + [40] * 300 + [50] * 200
    random.Random(KILL_SEED).shuffle(priorities)
    ids = _add(mysql_dsn, [(p, "fault.rec", str(runs_dir), i, JOB_MS) for i, p in enumerate(priorities)])
    assert len(set(ids)) == KILL_JOBS

    rng = random.Random(KILL_SEED)
    at = sorted(rng.uniform(0.02, 0.90) * KILL_JOBS for _ in range(KILLS))  # done counts to kill at
    kills = 0
    started = time.monotonic()
    progress = connect_raw(mysql_dsn)
    with (
        progress,
        PoolProc(
            mysql_dsn,
            tmp_path,
            "--workers",
            "4",
            "--fetch-limit",
            "50",
            "--until-empty",
            "--crash-limit",
            "100",
        ) as pool,
    ):
        watcher.watch(pool.pid)
        pool.started()
        while pool.proc.poll() is None:
            time.sleep(PROGRESS_POLL)
            with progress.cursor() as cur:
                cur.execute("SELECT COUNT(*) FROM workerqueue WHERE done = 1")
                done = cur.fetchone()[0]
            while at and done >= at[0] and pool.proc.poll() is None:
                victims = _busy_children(pool, runs_dir)
                if victims:
                    watcher.kill(rng.choice(victims))
                    kills += 1
                    at.pop(0)
        code = pool.wait()
        log = pool.log
    elapsed = time.monotonic() - started
    watcher.settle()

    assert code == 0, log[-4000:]
    assert kills == KILLS, f"only {kills} kills: the run ended too soon ({elapsed:.1f}s)"
    assert job_states(mysql_dsn) == {"pending": 0, "done": KILL_JOBS, "failed": 0}
    counts = check_runs(load_runs(runs_dir), ids, watcher.died_after)
    # Each kill interrupts at most the one job its child was running.
    assert counts["runs_interrupted"] <= kills
    assert counts["jobs_run_more_than_once"] <= kills
    assert counts["runs_interrupted"] > 0, "no kill hit a running job: the test proved nothing"
    crashed = sql(mysql_dsn, "SELECT COUNT(*) FROM workerqueue WHERE crashes > 0")[0][0]
    record_figures(
        tmp_path,
        {
            "jobs": KILL_JOBS,
            "child_kills": kills,
            "seconds": round(elapsed, 1),
            "jobs_with_a_crash": crashed,
            **counts,
        },
    )


def _limit_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_LIMIT, ADDRESS_SPACE_LIMIT))


def test_jobs_that_crash_their_child_are_failed_with_a_reason_and_others_complete(
    mysql_dsn: str, tmp_path: Path, watcher: ChildWatcher
) -> None:
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    normal = [(30, "fault.rec", str(runs_dir), i) for i in range(150)]
    # Each crasher among the normal jobs, so that it dies in a batch with others before and after it.
    crashers: list[tuple[Any, ...]] = [(30, name) for name in ("crash", "segfault", "kill9", "fault.hog")]
    jobs: list[tuple[Any, ...]] = list(normal)
    for offset, job in enumerate(crashers):
        jobs.insert(12 + offset * 37, job)
    rec_ids = [job_id for job_id, job in zip(_add(mysql_dsn, jobs), jobs) if job[1] == "fault.rec"]

    with PoolProc(
        mysql_dsn,
        tmp_path,
        "--import",
        "pooljobs",
        "--workers",
        "3",
        "--fetch-limit",
        "5",
        "--until-empty",
        "--crash-limit",
        "3",
        "--retry-limit",
        "1",
        "--retry-delay",
        "0",
        preexec_fn=_limit_address_space,
    ) as pool:
        watcher.watch(pool.pid)
        code = pool.wait(120)
        log = pool.log
    watcher.settle()

    assert code == 0, log[-4000:]
    counts = check_runs(load_runs(runs_dir), rec_ids, watcher.died_after)
    states = job_states(mysql_dsn)
    assert states == {"pending": 0, "done": len(normal), "failed": len(crashers)}, log[-4000:]
    rows = sql(
        mysql_dsn, "SELECT command, crashes, retrial, last_error FROM workerqueue WHERE done = 2 ORDER BY id"
    )
    reasons = {}
    for command, crashes, retrial, error in rows:
        reasons.setdefault(command, []).append(error)
        if command == "fault.hog":  # MemoryError is an exception the job raised: retried, then failed
            assert "MemoryError" in error and "gave up after 2 attempts" in error, error
        else:  # a child that died: counted as crashes, failed as a poison pill at the crash limit
            assert crashes == 3 and "poison pill" in error, (command, crashes, error)
    assert all("exit code 3" in e for e in reasons["crash"]), reasons["crash"]
    assert all("SIGSEGV" in e for e in reasons["segfault"]), reasons["segfault"]
    assert all("SIGKILL" in e for e in reasons["kill9"]), reasons["kill9"]
    assert "pool stopped: " in log  # the master lived through all of it
    record_figures(
        tmp_path,
        {
            "normal_jobs": len(normal),
            "crashing_jobs": len(crashers),
            "child_deaths": log.count("died ("),
            **counts,
            "reasons": {k: v[0][:90] for k, v in reasons.items()},
        },
    )


def test_jobs_over_their_priority_time_limit_are_terminated_then_killed(
    mysql_dsn: str, tmp_path: Path, watcher: ChildWatcher
) -> None:
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    limit = LIMIT_MINUTES * 60
    jobs: list[tuple[Any, ...]] = [
        (20, "fault.rec", str(runs_dir), "slow", 30_000),  # HIGH, 30 s: SIGTERM at the limit
        (20, "fault.stubborn", str(runs_dir), 30),  # HIGH, ignores SIGTERM: SIGKILL kill_grace later
        (30, "fault.rec", str(runs_dir), "medium", 2 * limit * 1000),  # MEDIUM has no short limit
    ]
    jobs += [(20, "fault.rec", str(runs_dir), i) for i in range(50)]  # HIGH but quick
    ids = _add(mysql_dsn, jobs)

    with PoolProc(
        mysql_dsn,
        tmp_path,
        "--workers",
        "3",
        "--fetch-limit",
        "1",
        "--until-empty",
        "--max-duration",
        f"HIGH={LIMIT_MINUTES}",
        "--retry-limit",
        "0",
    ) as pool:
        watcher.watch(pool.pid)
        code = pool.wait(60)
        log = pool.log
    watcher.settle()

    assert code == 0, log[-4000:]
    runs = {run.job: run for run in load_runs(runs_dir)}
    slow, stubborn = runs[ids[0]], runs[ids[1]]
    assert slow.end is None and stubborn.end is None
    # The limit counts from the moment the child began the job (before the task's first line) on
    # the master's side; each child died somewhere between the last look that found it alive and
    # the first that found it dead. "Not before the limit" is measured to the latter, "soon
    # enough" to the former, both from the child's own start: no bound rests on sampling luck.
    assert slow.began is not None and stubborn.began is not None, "fault.rec lost the child's start slot"
    slow_alive, stubborn_alive = watcher.died_after(slow.pid), watcher.died_after(stubborn.pid)
    slow_dead, stubborn_dead = watcher.seen_dead(slow.pid), watcher.seen_dead(stubborn.pid)
    assert None not in (slow_alive, stubborn_alive, slow_dead, stubborn_dead)
    assert slow_dead - slow.began >= limit, (slow.began, slow_dead)
    assert slow_alive - slow.began <= limit + 1.0, (slow.began, slow_alive)
    assert stubborn_dead - stubborn.began >= limit + KILL_GRACE, (stubborn.began, stubborn_dead)
    assert stubborn_alive - stubborn.began <= limit + KILL_GRACE + 1.5, (stubborn.began, stubborn_alive)
    slow_ran, stubborn_ran = slow_alive - slow.began, stubborn_alive - stubborn.began
    assert runs[ids[2]].end is not None, "a MEDIUM job was stopped by the HIGH limit"
    check_runs(list(runs.values()), ids[2:], watcher.died_after, may_fail=ids[:2])
    rows = dict(sql(mysql_dsn, "SELECT id, last_error FROM workerqueue WHERE done = 2"))
    assert set(rows) == {ids[0], ids[1]}
    for error in rows.values():
        assert f"exceeded the {LIMIT_MINUTES:g}-minute run-time limit for priority 20 (HIGH)" in error, error
    assert job_states(mysql_dsn)["done"] == len(jobs) - 2
    assert "SIGTERM to child" in log and "ignored SIGTERM" in log
    record_figures(
        tmp_path,
        {
            "limit_seconds": limit,
            "terminated_after_seconds": round(slow_ran, 2),
            "killed_after_seconds": round(stubborn_ran, 2),
            "kill_grace_seconds": KILL_GRACE,
        },
    )
