"""The pool's guarantees under the faults an operator's machines bring (issue 11), on the real
MariaDB: real pools started with ``fastsched-pool start``, broken from outside.

- item 1: a claim whose COMMIT answer is lost while another child runs a long job: the claimed
  rows must not stay claimed (no child runs them), neither while the pool runs nor after it stops;
- item 2: a second pool with the same host id in another PID namespace (a container, another
  machine) is refused with exit code 5 while the first one's heartbeat is fresh;
- item 4: a master frozen with SIGSTOP: its child must stop its job before another master, once
  the lease has run out, runs that job again (no overlap);
- item 5: a master thawed after a stall longer than half the lease, and frozen again as soon as it
  has dispatched: what it dispatched must not run on beside the other master's run of it;
- item 11: SIGTERM to every process of the pool at once (systemd's default KillMode): a graceful
  stop, the running job finishes, no crash is counted;
- item 12: a master declared dead while a finished job's completion waited to be written: the
  completion is written if no master has claimed the job since, so it does not run again.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from faultkit import (
    ChildWatcher,
    FaultProxy,
    PoolProc,
    check_runs,
    load_runs,
    record_figures,
    short_tempdir,
    sql,
    wait_until,
)

import fastsched

# seconds: a child fences itself half a lease after its master's last heartbeat began, so a loaded
# machine must not delay a heartbeat by half a lease less one interval (2 s here).
LEASE = 6.0
MAINTENANCE = 5.0  # seconds between two recoveries of dead masters (PoolSettings' default)
WAIT = 60.0  # seconds anything may take on a loaded machine; every wait ends on an event


@pytest.fixture
def watcher() -> Iterator[ChildWatcher]:
    with ChildWatcher() as found:
        yield found


def _add(dsn: str, runs_dir: Path, count: int, ms: float, priority: int = 30, first: int = 0) -> list[int]:
    with fastsched.connect(dsn) as queue:
        return queue.add_many([(priority, "fault.rec", str(runs_dir), first + i, ms) for i in range(count)])


def _started(runs_dir: Path, job_id: int, pids: set[int] | None = None) -> bool:
    """Whether a run of ``job_id`` started (in one of ``pids``, if given)."""
    return any(run.job == job_id and (pids is None or run.pid in pids) for run in load_runs(runs_dir))


def _ended(runs_dir: Path, job_id: int) -> bool:
    return any(run.job == job_id and run.end is not None for run in load_runs(runs_dir))


def test_claims_whose_commit_answer_was_lost_are_released_while_a_long_job_runs_and_at_stop(
    mysql_dsn: str, tmp_path: Path
) -> None:
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    parts = mysql_dsn.rsplit("@", 1)
    host, _, rest = parts[1].partition("/")
    proxy = FaultProxy(int(host.rpartition(":")[2]))
    proxied = f"{parts[0]}@127.0.0.1:{proxy.port}/{rest}"
    (long_job,) = _add(mysql_dsn, runs_dir, 1, 20_000.0, priority=20)
    try:
        with PoolProc(proxied, tmp_path, "--workers", "2", "--lease", "10") as pool:
            pool.started()
            wait_until(lambda: _started(runs_dir, long_job), WAIT, "the long job to start")
            proxy.arm(lost_answer=True)
            backlog = _add(mysql_dsn, runs_dir, 40, 5.0, first=1)
            wait_until(lambda: proxy.fired["lost_answer"] == 1, WAIT, "a claim's COMMIT answer to be lost")
            # While the long job still runs, the lost claim's rows go back to the queue and run
            # (they used to stay claimed until no child at all was busy).
            wait_until(
                lambda: all(_started(runs_dir, job) for job in backlog) or _ended(runs_dir, long_job),
                WAIT, "the backlog to run, or the long job to end",
            )
            long_job_ended_first = _ended(runs_dir, long_job)
            assert pool.stop() == 0, pool.tail()
            log = pool.log
    finally:
        proxy.close()
    assert not long_job_ended_first, f"the lost claim's jobs waited for the long job to end\n{log[-3000:]}"
    assert all(_started(runs_dir, job) for job in backlog), log[-3000:]
    assert sql(mysql_dsn, "SELECT COUNT(*) FROM workerqueue WHERE done = 0 AND pid <> 0")[0][0] == 0, log[-3000:]


def test_a_second_pool_with_the_same_host_id_in_another_pid_namespace_is_refused(
    mysql_dsn: str, tmp_path: Path, watcher: ChildWatcher
) -> None:
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    (job,) = _add(mysql_dsn, runs_dir, 1, 4000.0)
    with PoolProc(mysql_dsn, tmp_path, "--workers", "1", "--lease", str(LEASE), host_id="twin") as first:
        watcher.watch(first.pid)
        first.started()
        wait_until(lambda: _started(runs_dir, job), WAIT, "the job to start")
        # Another "machine": a PID namespace of its own (first's pid means nothing there) and a
        # runtime directory of its own (no shared pidfile or wake-up socket).
        with PoolProc(
            mysql_dsn, tmp_path, "--workers", "1", "--lease", str(LEASE), host_id="twin",
            rundir=short_tempdir(), wrapper=("unshare", "--pid", "--fork", "--mount-proc", "--kill-child"),
        ) as second:
            code = second.wait(WAIT)
            second_log = second.log
        wait_until(lambda: any(r.job == job and r.end is not None for r in load_runs(runs_dir)), WAIT, "the job")
        assert first.stop() == 0, first.tail()
    watcher.settle()
    assert code == 5, second_log[-3000:]
    assert "already running" in second_log and "twin" in second_log, second_log[-3000:]
    runs = [r for r in load_runs(runs_dir) if r.job == job]
    assert len(runs) == 1, f"the job ran {len(runs)} times: {runs}"


def test_a_frozen_master_s_child_stops_its_job_before_another_master_runs_it(
    mysql_dsn: str, tmp_path: Path, watcher: ChildWatcher
) -> None:
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    (job,) = _add(mysql_dsn, runs_dir, 1, 30_000.0)
    # A short grace: the thawed master's stop need not wait out the job's second run (it is killed
    # and released; what the test checks is that the two runs never overlapped).
    options = ("--workers", "1", "--lease", str(LEASE), "--shutdown-grace", "1")
    with PoolProc(mysql_dsn, tmp_path, *options, host_id="frozen") as frozen:
        watcher.watch(frozen.pid)
        frozen.started()
        wait_until(lambda: _started(runs_dir, job), WAIT, "the job to start")
        assert _started(runs_dir, job, set(frozen.children()))
        other = PoolProc(mysql_dsn, tmp_path, *options, host_id="thawed")  # started once the job runs
        watcher.watch(other.pid)
        other.started()
        os.kill(frozen.pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        try:
            other.wait_for_log("master frozen", timeout=WAIT)
            wait_until(lambda: _started(runs_dir, job, set(other.children())), WAIT, "the other master to run it")
            again_after = time.monotonic() - stopped_at
        finally:
            os.kill(frozen.pid, signal.SIGCONT)
            other.stop()
            other.close()
        frozen.stop()
    watcher.settle()
    runs = sorted((r for r in load_runs(runs_dir) if r.job == job), key=lambda r: r.start)
    first_end = watcher.died_after(runs[0].pid) if runs[0].end is None else runs[0].end
    assert first_end is not None, "the frozen master's child outlived the test"
    gap = runs[1].start - first_end  # > 0: the first run was over before the second began
    record_figures(tmp_path, {"lease_seconds": LEASE, "rerun_after_seconds": round(again_after, 2),
                              "gap_between_runs_seconds": round(gap, 3)})
    check_runs(load_runs(runs_dir), [job], watcher.died_after, may_fail=[job])


def test_a_master_thawed_after_half_a_lease_dispatches_nothing_that_outlives_its_next_stall(
    mysql_dsn: str, tmp_path: Path, watcher: ChildWatcher
) -> None:
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    (first,) = _add(mysql_dsn, runs_dir, 1, 40_000.0)
    # Two workers each: the first job, its run fenced, is claimed again beside the new one, which
    # must not wait behind it (the priorities share the workers).
    options = ("--workers", "2", "--lease", str(LEASE))
    with PoolProc(mysql_dsn, tmp_path, *options, host_id="stalling") as stalling:
        watcher.watch(stalling.pid)
        stalling.started()
        wait_until(lambda: _started(runs_dir, first), WAIT, "the first job to start")
        os.kill(stalling.pid, signal.SIGSTOP)  # a stall longer than half the lease, shorter than it
        try:
            (second,) = _add(mysql_dsn, runs_dir, 1, 40_000.0, priority=20, first=1)
            time.sleep(0.7 * LEASE)
        finally:
            os.kill(stalling.pid, signal.SIGCONT)
        # As soon as the thawed master has dispatched the new job, the stall returns: whatever it
        # dispatched must stop on its own before another master, a lease later, runs it again.
        wait_until(lambda: _started(runs_dir, second), WAIT, "the thawed master to dispatch the new job")
        os.kill(stalling.pid, signal.SIGSTOP)
        try:
            with PoolProc(mysql_dsn, tmp_path, *options, host_id="steady") as steady:
                watcher.watch(steady.pid)
                steady.started()
                wait_until(lambda: _started(runs_dir, second, set(steady.children())), WAIT,
                           "the other master to run the new job")
                steady.kill()
        finally:
            os.kill(stalling.pid, signal.SIGCONT)
        stalling.kill()
    watcher.settle()
    check_runs(load_runs(runs_dir), [first, second], watcher.died_after, may_fail=[first, second])


def test_a_sigterm_to_every_process_of_the_pool_is_a_graceful_stop(
    mysql_dsn: str, tmp_path: Path, watcher: ChildWatcher
) -> None:
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    (job,) = _add(mysql_dsn, runs_dir, 1, 2000.0)
    with PoolProc(mysql_dsn, tmp_path, "--workers", "2", "--shutdown-grace", "30") as pool:
        watcher.watch(pool.pid)
        pool.started()
        wait_until(lambda: _started(runs_dir, job), WAIT, "the job to start")
        # As systemd's KillMode=control-group does: every process of the unit, at once.
        for pid in [pool.pid, *pool.children()]:
            os.kill(pid, signal.SIGTERM)
        code = pool.wait(WAIT)
        log = pool.log
    assert code == 0, log[-3000:]
    assert [r.end is not None for r in load_runs(runs_dir) if r.job == job] == [True], log[-3000:]
    ((done, crashes),) = sql(mysql_dsn, "SELECT done, crashes FROM workerqueue WHERE id = %s", (job,))
    assert (done, crashes) == (1, 0), log[-3000:]
    assert "terminated by the master" not in log and "crash 1 of" not in log, log[-3000:]


def test_a_master_whose_clock_is_behind_is_not_declared_dead(
    mysql_dsn: str, tmp_path: Path, watcher: ChildWatcher
) -> None:
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    (job,) = _add(mysql_dsn, runs_dir, 1, 3 * LEASE * 1000 + MAINTENANCE * 1000)
    options = ("--workers", "1", "--lease", str(LEASE))
    with PoolProc(
        mysql_dsn, tmp_path, *options, host_id="behind", launcher=(str(Path(__file__).parent / "skewed_pool.py"), "-40")
    ) as behind:
        watcher.watch(behind.pid)
        behind.started()
        wait_until(lambda: _started(runs_dir, job), WAIT, "the job to start")
        with PoolProc(mysql_dsn, tmp_path, *options, host_id="on-time") as on_time:
            watcher.watch(on_time.pid)
            on_time.started()
            wait_until(lambda: _ended(runs_dir, job), WAIT, "the job to end")
            assert on_time.stop() == 0, on_time.tail()
            on_time_log = on_time.log
        assert behind.stop() == 0, behind.tail()
        behind_log = behind.log
    watcher.settle()
    runs = [r for r in load_runs(runs_dir) if r.job == job]
    assert len(runs) == 1, f"the job ran {len(runs)} times\n{on_time_log[-3000:]}"
    assert "missed its heartbeat" not in on_time_log, on_time_log[-3000:]
    # It claims on the server's clock: its job did not wait for its own clock to reach next_try.
    assert re.search(r"this host's clock is (39\.9|40\.0)\d* s behind the database server's", behind_log)


def test_a_master_whose_clock_is_ahead_runs_no_delayed_job_early(mysql_dsn: str, tmp_path: Path) -> None:
    """A master whose clock is 40 s ahead would find a job delayed by 8 s runnable at once."""
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    with PoolProc(
        mysql_dsn, tmp_path, "--workers", "1", host_id="ahead",
        launcher=(str(Path(__file__).parent / "skewed_pool.py"), "40"),
    ) as ahead:
        ahead.started()
        with fastsched.connect(mysql_dsn) as queue:
            added = time.monotonic()
            job = queue.add({"priority": 30, "delay": 8}, "fault.rec", str(runs_dir), 0, 0.0)
        wait_until(lambda: _ended(runs_dir, job), WAIT, "the delayed job to run")
        assert ahead.stop() == 0, ahead.tail()
        ahead_log = ahead.log
    (run,) = [r for r in load_runs(runs_dir) if r.job == job]
    assert run.start - added >= 8.0 - 0.5, f"it ran {run.start - added:.2f} s after it was added, delayed 8 s"
    assert "ahead of the database server's" in ahead_log


def test_an_sqlite_application_transaction_longer_than_half_the_lease_is_no_outage(
    sqlite_dsn: str, tmp_path: Path, watcher: ChildWatcher
) -> None:
    import sqlite3

    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    (job,) = _add(sqlite_dsn, runs_dir, 1, 4 * LEASE * 1000)
    with PoolProc(sqlite_dsn, tmp_path, "--workers", "1", "--lease", str(LEASE)) as pool:
        watcher.watch(pool.pid)
        pool.started()
        wait_until(lambda: _started(runs_dir, job), WAIT, "the job to start")
        app = sqlite3.connect(sqlite_dsn.removeprefix("sqlite:///"), isolation_level=None)
        app.execute("BEGIN IMMEDIATE")  # the application's transaction holds the write lock
        app.execute("UPDATE fastsched_meta SET value = value WHERE name = 'schema_version'")
        time.sleep(LEASE)  # longer than half the lease: the pool's heartbeats wait for the lock meanwhile
        app.execute("COMMIT")
        app.close()
        wait_until(lambda: _ended(runs_dir, job) or not _started(runs_dir, job, set(pool.children())),
                   WAIT, "the job to end (or its child to be killed)")
        assert pool.stop() == 0, pool.tail()
        log = pool.log
    watcher.settle()
    runs = [r for r in load_runs(runs_dir) if r.job == job]
    assert [r.end is not None for r in runs] == [True], f"runs: {runs}\n{log[-3000:]}"


def test_a_completion_pending_when_its_master_was_declared_dead_is_written_if_nobody_took_the_job(
    mysql_dsn: str, tmp_path: Path, watcher: ChildWatcher
) -> None:
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    (job,) = _add(mysql_dsn, runs_dir, 1, 300.0)  # ends well before its child's fence
    options = ("--workers", "1", "--lease", str(LEASE))
    # The master that declares the frozen one dead serves another queue: it releases the job's
    # claim but never runs the job itself.
    with PoolProc(mysql_dsn, tmp_path, *options, "--queues", "elsewhere", host_id="declarer") as declarer:
        watcher.watch(declarer.pid)
        declarer.started()
        with PoolProc(mysql_dsn, tmp_path, *options, host_id="declared") as frozen:
            watcher.watch(frozen.pid)
            frozen.started()
            wait_until(lambda: _started(runs_dir, job), WAIT, "the job to start")
            os.kill(frozen.pid, signal.SIGSTOP)  # the job ends meanwhile; its reply waits in the pipe
            try:
                wait_until(lambda: _ended(runs_dir, job), WAIT, "the job to end")
                declarer.wait_for_log("missed its heartbeat", timeout=WAIT)
                claims = sql(mysql_dsn, "SELECT done, pid FROM workerqueue WHERE id = %s", (job,))
            finally:
                os.kill(frozen.pid, signal.SIGCONT)
            frozen.wait_for_log("declared dead", timeout=WAIT)
            wait_until(lambda: sql(mysql_dsn, "SELECT done FROM workerqueue WHERE id = %s", (job,))[0][0] != 0
                       or len([r for r in load_runs(runs_dir) if r.job == job]) > 1, WAIT, "the job to be done")
            assert frozen.stop() == 0, frozen.tail()
            log = frozen.log
        assert declarer.stop() == 0, declarer.tail()
    watcher.settle()
    assert claims == [(0, 0)], f"the job's claim was not released while its master was frozen: {claims}"
    runs = [r for r in load_runs(runs_dir) if r.job == job]
    assert len(runs) == 1, f"the completed job ran {len(runs)} times\n{log[-3000:]}"
    assert sql(mysql_dsn, "SELECT done FROM workerqueue WHERE id = %s", (job,)) == [(1,)], log[-3000:]
