"""Masters die, on purpose: SIGKILL in the middle of a run and start again (three times), and two
masters with different host ids on one database, one of them killed: the survivor releases the
dead master's claims once its lease is over, and runs them. On the real MariaDB.
"""

from __future__ import annotations

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
    is_alive,
    job_states,
    load_runs,
    record_figures,
    sql,
    wait_until,
)

import fastsched

RESTART_JOBS = 4000
KILL_AT = (0.15, 0.40, 0.65)  # shares of the jobs done when the master is killed
JOB_MS = 2.0  # milliseconds each job works, so that a killed master's children are mid-job
LEASE = 3.0  # seconds: the lease of the two-master test
HEARTBEAT = 1.0  # seconds: PoolSettings' default heartbeat interval (not a CLI flag)
MAINTENANCE = 5.0  # seconds: PoolSettings' default maintenance interval, when recovery runs
ORPHANS_DIE_WITHIN = 2.0  # seconds for a killed master's children to follow it (PDEATHSIG)


@pytest.fixture
def watcher() -> Iterator[ChildWatcher]:
    with ChildWatcher() as found:
        yield found


def _add_recorded(dsn: str, runs_dir: Path, count: int) -> list[int]:
    with fastsched.connect(dsn) as queue:
        return queue.add_many([(30, "fault.rec", str(runs_dir), i, JOB_MS) for i in range(count)])


def _done(conn: Any) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM workerqueue WHERE done = 1")
        return int(cur.fetchone()[0])


def _held(dsn: str, host: str) -> int:
    return int(
        sql(
            dsn,
            "SELECT COUNT(*) FROM workerqueue JOIN fastsched_host ON fastsched_host.id = host_id"
            " WHERE done = 0 AND pid <> 0 AND fastsched_host.name LIKE %s",  # its instances' claims
            (host.replace("%", r"\%").replace("_", r"\_") + "#%",),
        )[0][0]
    )


def _kill_master(pool: PoolProc) -> tuple[float, list[int]]:
    """SIGKILL the master; its children must follow it at once (they would run jobs nobody owns)."""
    children = pool.children()
    assert children, pool.tail()
    at = pool.kill()
    wait_until(
        lambda: not any(is_alive(pid) for pid in children),
        ORPHANS_DIE_WITHIN,
        f"the children {children} of the killed master to die",
    )
    return at, children


def test_sigkill_of_the_master_mid_run_then_restart_completes_everything(
    mysql_dsn: str, tmp_path: Path, watcher: ChildWatcher
) -> None:
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    ids = _add_recorded(mysql_dsn, runs_dir, RESTART_JOBS)
    options = ("--workers", "4", "--fetch-limit", "10", "--until-empty")
    held_at_kill = []
    master_killed_at: dict[int, float] = {}  # child pid -> when its master was killed
    started = time.monotonic()
    conn = connect_raw(mysql_dsn)
    pool = PoolProc(mysql_dsn, tmp_path, *options)
    host = pool.host_id
    try:
        for share in KILL_AT:
            watcher.watch(pool.pid)
            pool.started()
            wait_until(lambda share=share: _done(conn) >= share * RESTART_JOBS, 120, f"{share:.0%} of the jobs done")
            killed_at, children = _kill_master(pool)
            master_killed_at.update(dict.fromkeys(children, killed_at))
            held_at_kill.append(_held(mysql_dsn, host))
            pool = PoolProc(mysql_dsn, tmp_path, *options, host_id=host, rundir=pool.rundir)
        watcher.watch(pool.pid)
        code = pool.wait(120)
        log = pool.log
    finally:
        pool.close()
        conn.close()
    elapsed = time.monotonic() - started
    watcher.settle()

    assert code == 0, log[-4000:]
    assert f"the previous master with host id {host}" in log and "is dead: recovering its claims" in log
    assert f"released {held_at_kill[-1]} jobs claimed by a previous master" in log
    assert job_states(mysql_dsn) == {"pending": 0, "done": RESTART_JOBS, "failed": 0}
    counts = check_runs(load_runs(runs_dir), ids, watcher.died_after, master_killed_at=master_killed_at)
    assert all(held > 0 for held in held_at_kill), f"a kill found the master holding nothing: {held_at_kill}"
    record_figures(
        tmp_path,
        {
            "jobs": RESTART_JOBS,
            "master_kills": len(KILL_AT),
            "restarts": len(KILL_AT),
            "claims_held_at_each_kill": held_at_kill,
            "seconds": round(elapsed, 1),
            **counts,
        },
    )


def test_two_masters_one_killed_the_other_recovers_its_jobs_after_the_lease(
    mysql_dsn: str, tmp_path: Path, watcher: ChildWatcher
) -> None:
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    jobs = 2400
    ids = _add_recorded(mysql_dsn, runs_dir, jobs)
    options = ("--workers", "3", "--fetch-limit", "10", "--lease", str(LEASE))
    conn = connect_raw(mysql_dsn)
    with (
        conn,
        PoolProc(mysql_dsn, tmp_path, *options, host_id="fault-victim") as victim,
        PoolProc(mysql_dsn, tmp_path, *options, host_id="fault-survivor") as survivor,
    ):
        for pool in (victim, survivor):
            watcher.watch(pool.pid)
            pool.started()
        wait_until(lambda: _done(conn) >= 0.3 * jobs, 120, "30% of the jobs done")
        wait_until(lambda: _held(mysql_dsn, "fault-victim") > 0, 10, "the victim to hold claims")
        killed_at, children = _kill_master(victim)
        held = _held(mysql_dsn, "fault-victim")
        survivor.wait_for_log("master fault-victim missed its heartbeat", timeout=LEASE + MAINTENANCE + 10)
        recovered_after = time.monotonic() - killed_at
        wait_until(lambda: _done(conn) == jobs, 120, "every job done")
        assert survivor.stop() == 0, survivor.tail()
        log = survivor.log
    watcher.settle()

    # Released no sooner than a lease after its last heartbeat, and at the next maintenance after that.
    assert LEASE - HEARTBEAT <= recovered_after <= LEASE + MAINTENANCE + 2.0, recovered_after
    assert held > 0, "the victim held no claims when it was killed: the test proved nothing"
    assert f"released its {held} claimed jobs" in log, log[-3000:]
    assert job_states(mysql_dsn) == {"pending": 0, "done": jobs, "failed": 0}
    counts = check_runs(
        load_runs(runs_dir), ids, watcher.died_after, master_killed_at=dict.fromkeys(children, killed_at)
    )
    record_figures(
        tmp_path,
        {
            "jobs": jobs,
            "masters": 2,
            "master_kills": 1,
            "claims_held_by_the_dead_master": held,
            "lease_seconds": LEASE,
            "recovered_after_seconds": round(recovered_after, 2),
            **counts,
        },
    )
