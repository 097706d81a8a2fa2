"""A producer must never stall the pool (issue 11, item 9), on the real MariaDB.

``add(..., connection=app)`` of a duplicate of a running job, inside an application transaction
that stays open: the master's completion write of that job must not wait for the application to
commit (the upsert used to X-lock the running job's row until then, which stopped the master's
loop and let its watchdog kill every running job). Then the same with a real pool: an application
transaction holding such an add open for longer than the lease while an unrelated long job runs:
nothing is killed, the heartbeats go on, both jobs complete once.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from faultkit import ChildWatcher, PoolProc, connect_raw, load_runs, sql, wait_until

import fastsched
from fastsched.backends import open_backend
from fastsched.dbclock import utcnow
from fastsched.jobs import Outcomes

HOST = "producer-host"
WAIT = 20.0  # seconds a write that is not blocked may take on a loaded machine (it takes milliseconds)


@pytest.fixture
def queue(mysql_dsn: str) -> Iterator[fastsched.Queue]:
    with fastsched.connect(mysql_dsn) as q:
        yield q


def _claim(queue: fastsched.Queue) -> list[int]:
    batches = queue.backend.claim([0, 0, 100, 0, 0], [4242], HOST, 100, utcnow())
    return [job.id for batch in batches for job in batch.jobs]


def _complete_in_thread(dsn: str, job_id: int) -> tuple[threading.Thread, list[Any]]:
    """The master's completion write of ``job_id``, on a connection of its own, in a thread."""
    result: list[Any] = []

    def complete() -> None:
        backend = open_backend(fastsched.queue.parse_dsn(dsn))
        try:
            backend.write_outcomes(HOST, utcnow(), Outcomes(done=[job_id]))
            result.append("written")
        except Exception as exc:  # noqa: BLE001 - reported by the test
            result.append(exc)
        finally:
            backend.close()

    thread = threading.Thread(target=complete, daemon=True)
    thread.start()
    return thread, result


@pytest.mark.parametrize("dedup", [True, "waiting"], ids=["dedup", "dedup-waiting"])
def test_an_application_transaction_adding_a_duplicate_of_a_running_job_does_not_block_its_completion(
    mysql_dsn: str, queue: fastsched.Queue, dedup: object
) -> None:
    running = queue.add(fastsched.PRIORITY_MEDIUM, "Sync", 7)
    assert _claim(queue) == [running]
    app = connect_raw(mysql_dsn, autocommit=False)
    try:
        with app.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("SELECT 1")  # the application's own work, its snapshot taken
        added = queue.add({"dedup": dedup}, "Sync", 7, connection=app)
        thread, result = _complete_in_thread(mysql_dsn, running)
        thread.join(WAIT)
        blocked = thread.is_alive()
        app.commit()
    finally:
        app.close()
    thread.join(WAIT)
    assert not blocked, "the completion of the running job waited for the application's transaction"
    assert result == ["written"]
    states = dict(sql(mysql_dsn, "SELECT id, done FROM workerqueue"))
    assert states[running] == 1
    if dedup is True:
        assert added == running and len(states) == 1  # merged into the running job, as dedup says
    else:
        assert added != running and states[added] == 0  # queued: the running one gave its key up


def test_a_rolled_back_application_transaction_leaves_nothing_behind(
    mysql_dsn: str, queue: fastsched.Queue
) -> None:
    running = queue.add(fastsched.PRIORITY_MEDIUM, "Sync", 8)
    assert _claim(queue) == [running]
    app = connect_raw(mysql_dsn, autocommit=False)
    try:
        with app.cursor() as cur:
            cur.execute("BEGIN")
        queue.add_many([(30, "Sync", 8), (30, "Sync", 9)], connection=app)
        app.rollback()
    finally:
        app.close()
    assert [row[0] for row in sql(mysql_dsn, "SELECT id FROM workerqueue")] == [running]


LEASE = 6.0


def _runs_of(runs_dir: Path, job_id: int) -> list[Any]:
    return [run for run in load_runs(runs_dir) if run.job == job_id]


def _heartbeat_age(dsn: str, host_id: str) -> dt.timedelta:
    ((age,),) = sql(
        dsn, "SELECT TIMEDIFF(UTC_TIMESTAMP(6), MAX(heartbeat)) FROM process WHERE host = %s", (host_id,)
    )
    return age if isinstance(age, dt.timedelta) else dt.timedelta(0)


def test_an_application_transaction_open_longer_than_the_lease_stops_no_running_job(
    mysql_dsn: str, tmp_path: Path
) -> None:
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    hold = 1.5 * LEASE  # the application's transaction stays open this long
    with fastsched.connect(mysql_dsn) as queue:
        unrelated = queue.add(fastsched.PRIORITY_HIGH, "fault.rec_long", str(runs_dir), 1, (hold + 2 * LEASE) * 1000)
        duplicated = queue.add(fastsched.PRIORITY_MEDIUM, "fault.rec", str(runs_dir), 2, 2000.0)
    with ChildWatcher() as watcher, PoolProc(
        mysql_dsn, tmp_path, "--workers", "2", "--lease", str(LEASE), host_id="producer-pool"
    ) as pool:
        watcher.watch(pool.pid)
        pool.started()
        wait_until(lambda: _runs_of(runs_dir, unrelated) and _runs_of(runs_dir, duplicated), WAIT, "both jobs to start")
        app = connect_raw(mysql_dsn, autocommit=False)
        ages = []
        try:
            with app.cursor() as cur:
                cur.execute("BEGIN")
            # A duplicate of the running job, in the application's transaction, which stays open
            # while the running job ends (its completion is written meanwhile) and beyond a lease.
            with fastsched.connect(mysql_dsn) as producer:
                producer.add(fastsched.PRIORITY_MEDIUM, "fault.rec", str(runs_dir), 2, 2000.0, connection=app)
            until = time.monotonic() + hold
            while time.monotonic() < until:
                ages.append(_heartbeat_age(mysql_dsn, pool.host_id))
                time.sleep(0.25)
            app.commit()
        finally:
            app.close()
        wait_until(
            lambda: any(run.end for run in _runs_of(runs_dir, unrelated)) or len(_runs_of(runs_dir, unrelated)) > 1,
            WAIT * 2, "the unrelated job to end (or to start again)",
        )
        code = pool.stop()
        log = pool.log
    assert code == 0, log[-3000:]
    unrelated_runs, duplicated_runs = _runs_of(runs_dir, unrelated), _runs_of(runs_dir, duplicated)
    assert len(unrelated_runs) == 1 and unrelated_runs[0].end is not None, f"{unrelated_runs}\n{log[-3000:]}"
    assert len(duplicated_runs) == 1 and duplicated_runs[0].end is not None, f"{duplicated_runs}\n{log[-3000:]}"
    assert max(ages) < dt.timedelta(seconds=LEASE / 2), f"the heartbeats stopped: {max(ages)}\n{log[-3000:]}"
    states = dict(sql(mysql_dsn, "SELECT id, CONCAT(done, '/', crashes) FROM workerqueue"))
    assert states == {unrelated: "1/0", duplicated: "1/0"}, log[-3000:]
