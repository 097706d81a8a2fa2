"""The database fails, on purpose: a private MariaDB stopped (SIGTERM) and crashed (SIGKILL)
under a running pool and started again; deadlocks (1213) and lock wait timeouts (1205) produced
for real against the backend; the connection dropped right at a claim's COMMIT, with the answer
lost or delivered. The shared MariaDB at 127.0.0.1:3306 is never stopped: the outage test runs
its own server (faultkit.PrivateMariaDB).
"""

from __future__ import annotations

import itertools
import logging
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
from faultkit import (
    ChildWatcher,
    FaultProxy,
    PoolProc,
    PrivateMariaDB,
    check_runs,
    connect_raw,
    job_states,
    load_runs,
    private_mariadb,
    record_figures,
    running_job,
    wait_until,
)

import fastsched
from fastsched.backends.mysql import MySQLBackend, MySQLDialect
from fastsched.dsn import parse_dsn
from fastsched.jobs import Outcomes
from fastsched.queue import utcnow

OUTAGE_JOBS = 3000
OUTAGE_LEASE = 10.0  # seconds: children are killed after half of it without the database
SHORT_OUTAGE = 1.5  # seconds down, less than half the lease even with a slow server stop and start
LONG_OUTAGE = 7.0  # seconds down, more than half the lease: the children are killed, their jobs released
LONG_JOB_MS = 8000.0  # milliseconds: jobs still running when the long outage gets the children killed
PASSWORD = "Outage-Secret-7q"  # the private server's user password: it must never be logged
LOCK_WAIT = 1  # seconds: innodb_lock_wait_timeout of the backend in the 1205 test
DROPS = 4  # connection drops at a claim's COMMIT, of each kind


@pytest.fixture
def watcher() -> Iterator[ChildWatcher]:
    with ChildWatcher() as found:
        yield found


@pytest.fixture(scope="module")
def mariadb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateMariaDB]:
    with private_mariadb(tmp_path_factory.mktemp("mariadb")) as server:
        yield server


def _done(dsn: str) -> int:
    try:
        conn = connect_raw(dsn, connect_timeout=2)
    except pymysql.MySQLError:
        return -1
    with conn, conn.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM workerqueue WHERE done = 1")
        return int(cur.fetchone()[0])


class AttemptCounter:
    """Listens on a stopped server's port: when each connection attempt came, then hangs up."""

    def __init__(self, port: int) -> None:
        self.times: list[float] = []
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", port))
        self._sock.listen(16)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.times.append(time.monotonic())
            conn.close()

    def close(self) -> None:
        self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(5)


def test_mariadb_stopped_and_crashed_mid_run_the_pool_retries_and_resumes(
    mariadb: PrivateMariaDB, tmp_path: Path, watcher: ChildWatcher
) -> None:
    dsn = mariadb.database(PASSWORD)
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    with fastsched.connect(dsn) as queue:
        ids = queue.add_many([(30, "fault.rec", str(runs_dir), i, 3.0) for i in range(OUTAGE_JOBS)])
    outages = []
    with PoolProc(
        dsn, tmp_path, "--workers", "4", "--fetch-limit", "10", "--lease", str(OUTAGE_LEASE), dsn_in_env=True
    ) as pool:
        watcher.watch(pool.pid)
        pool.started()
        # 1. A clean shutdown, shorter than half the lease: the children go on, their results wait.
        wait_until(lambda: _done(dsn) >= OUTAGE_JOBS * 0.2, 120, "20% of the jobs done")
        stopped = mariadb.stop(signal.SIGTERM)
        time.sleep(SHORT_OUTAGE)
        mariadb.start()
        outages.append({"how": "SIGTERM", "stop_seconds": round(stopped, 2), "down_seconds": SHORT_OUTAGE})
        pool.wait_for_log("database reachable again", timeout=30)
        # 2. A crash, longer than half the lease, while two children run long jobs: the children
        # are killed, their jobs released, and run again once the database is back.
        wait_until(lambda: _done(dsn) >= OUTAGE_JOBS * 0.5, 120, "50% of the jobs done")
        with fastsched.connect(dsn) as queue:
            # LOW and NEGLIGIBLE, of a command never seen: one job per batch, nothing claimed ahead
            # behind either (a batch of fault.rec would be expected to end in ms), and each
            # priority gets a child of its own.
            long_ids = queue.add_many(
                [(p, "fault.rec_long", str(runs_dir), f"long{p}", LONG_JOB_MS) for p in (40, 50)]
            )
        ids += long_ids
        wait_until(
            lambda: {running_job(runs_dir, pid) for pid in pool.children()} >= set(long_ids),
            30,
            "the long jobs to run",
        )
        killed_at = time.monotonic()
        mariadb.stop(signal.SIGKILL)
        counter = AttemptCounter(mariadb.port)  # the pool's reconnection attempts, while it is down
        time.sleep(LONG_OUTAGE)
        counter.close()
        mariadb.start()
        outages.append({"how": "SIGKILL", "down_seconds": round(time.monotonic() - killed_at, 2)})
        pool.wait_for_log("database reachable again", timeout=30, count=2)
        wait_until(lambda: _done(dsn) == len(ids), 120, "every job done")
        code = pool.stop()
        log = pool.log
    watcher.settle()

    assert code == 0, log[-4000:]
    assert PASSWORD not in log
    assert log.count("ERROR fastsched.pool: database error: ") == 2, log[-4000:]
    assert f"(more than half the lease of {OUTAGE_LEASE:g}s): killing the children" in log  # the long outage only
    assert log.count("killing the children") == 1
    assert job_states(dsn) == {"pending": 0, "done": len(ids), "failed": 0}
    counts = check_runs(load_runs(runs_dir), ids, watcher.died_after)
    assert counts["runs_interrupted"] == len(long_ids), counts  # the long jobs, killed with their children
    # Back-off: the gaps between attempts double from 0.1 s up to a quarter of the lease.
    gaps = [round(b - a, 2) for a, b in itertools.pairwise(counter.times)]
    assert len(counter.times) >= 4, counter.times
    assert gaps[0] < 0.6 and max(gaps) <= OUTAGE_LEASE / 4 + 0.5, gaps
    assert all(
        later >= 0.8 * earlier for earlier, later in itertools.pairwise(gaps) if earlier < OUTAGE_LEASE / 4
    ), gaps
    record_figures(
        tmp_path,
        {
            "jobs": OUTAGE_JOBS,
            "outages": outages,
            "server_restarts": 2,
            "reconnect_attempts_while_down": len(counter.times),
            "backoff_gaps_seconds": gaps,
            "children_killed_for_the_outage": 1,
            **counts,
        },
    )


# --- deadlocks and lock wait timeouts, real ones ------------------------------------------------


class ShortLockWaitDialect(MySQLDialect):
    """The dialect, with innodb_lock_wait_timeout = LOCK_WAIT on its connections."""

    def connect(self, queries: dict[str, str]) -> tuple[Any, bool]:
        conn, consecutive = super().connect(queries)
        with conn.cursor() as cur:
            cur.execute(f"SET SESSION innodb_lock_wait_timeout = {LOCK_WAIT}")
        return conn, consecutive


def _claimed_jobs(dsn: str, count: int, host: str) -> list[int]:
    with fastsched.connect(dsn) as queue:
        ids = queue.add_many([(30, "Locked", i) for i in range(count)])
    conn = connect_raw(dsn)
    with conn, conn.cursor() as cur:
        cur.execute("INSERT IGNORE INTO fastsched_host (name) VALUES (%s)", (host,))
        cur.execute(
            "UPDATE workerqueue SET pid = 4242, host_id = (SELECT id FROM fastsched_host WHERE name = %s)"
            f" WHERE id IN ({','.join(map(str, ids))})",
            (host,),
        )
    return ids


def test_a_lock_wait_timeout_1205_is_retried_transparently(
    mysql_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    (job_id,) = _claimed_jobs(mysql_dsn, 1, "lockwait")
    dsn = parse_dsn(mysql_dsn)
    backend = MySQLBackend(dsn, ShortLockWaitDialect(dsn))
    locker = connect_raw(mysql_dsn, autocommit=False)
    with locker.cursor() as cur:
        cur.execute("SELECT id FROM workerqueue WHERE id = %s FOR UPDATE", (job_id,))
    release = threading.Timer(LOCK_WAIT * 1.5, locker.commit)
    caplog.set_level(logging.INFO, logger="fastsched")
    started = time.monotonic()
    release.start()
    try:
        backend.write_outcomes("lockwait", utcnow(), Outcomes(done=[job_id]))
    finally:
        release.join()
        locker.close()
        backend.close()
    waited = time.monotonic() - started
    assert LOCK_WAIT <= waited <= LOCK_WAIT * 1.5 + 3, waited
    retries = [r.getMessage() for r in caplog.records if "re-running the transaction" in r.getMessage()]
    assert retries and "1205" in retries[0], retries
    assert job_states(mysql_dsn)["done"] == 1


def _waits_for_a_lock(dsn: str, thread_id: int) -> bool:
    conn = connect_raw(dsn)
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT COUNT(*) FROM information_schema.innodb_trx "
            "WHERE trx_mysql_thread_id = %s AND trx_state = 'LOCK WAIT'",
            (thread_id,),
        )
        return bool(cur.fetchone()[0])


def test_a_deadlock_1213_is_retried_transparently(mysql_dsn: str, caplog: pytest.LogCaptureFixture) -> None:
    first, second, *filler = _claimed_jobs(mysql_dsn, 202, "deadlock")
    backend = MySQLBackend(parse_dsn(mysql_dsn))
    locker = connect_raw(mysql_dsn, autocommit=False)
    caplog.set_level(logging.INFO, logger="fastsched")
    errors: list[BaseException] = []

    def complete_both() -> None:  # locks `first`, then waits for `second`
        try:
            backend.write_outcomes("deadlock", utcnow(), Outcomes(done=[first, second]))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    backend.processes()  # connected, schema checked: its next statement is the UPDATE
    backend_thread = backend.connection.conn.thread_id()
    with locker.cursor() as cur:
        # The locker changes many rows (and locks only those: READ COMMITTED), so that InnoDB rolls
        # back the lighter transaction of the deadlock: the backend's.
        cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        cur.execute("UPDATE workerqueue SET retrial = 1 WHERE id >= %s", (min(filler),))
        cur.execute("UPDATE workerqueue SET retrial = 1 WHERE id = %s", (second,))
        worker = threading.Thread(target=complete_both)
        worker.start()
        wait_until(
            lambda: _waits_for_a_lock(mysql_dsn, backend_thread), 10, "the backend to wait for `second`"
        )
        cur.execute("UPDATE workerqueue SET retrial = 1 WHERE id = %s", (first,))  # the cycle: a deadlock
        time.sleep(0.3)
    locker.commit()
    worker.join(30)
    locker.close()
    backend.close()
    assert not errors, errors
    retries = [r.getMessage() for r in caplog.records if "re-running the transaction" in r.getMessage()]
    assert retries and "1213" in retries[0], retries
    assert job_states(mysql_dsn)["done"] == 2


# --- the connection dropped at a claim's COMMIT ------------------------------------------------


def test_a_connection_dropped_between_claim_and_dispatch_loses_nothing(
    mysql_dsn: str, tmp_path: Path, watcher: ChildWatcher
) -> None:
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    jobs = 3000
    with fastsched.connect(mysql_dsn) as queue:
        ids = queue.add_many([(30, "fault.rec", str(runs_dir), i, 2.0) for i in range(jobs)])
    parts = parse_dsn(mysql_dsn)
    proxy = FaultProxy(parts.port)
    proxied = f"mysql://{parts.user}@127.0.0.1:{proxy.port}/{parts.database}"
    try:
        with PoolProc(proxied, tmp_path, "--workers", "4", "--fetch-limit", "10") as pool:
            watcher.watch(pool.pid)
            pool.started()
            for lost_answer in [True, False] * DROPS:
                proxy.arm(lost_answer)
                wait_until(lambda: proxy.armed() == 0, 60, "the drop to fire")
                time.sleep(0.3)
            wait_until(lambda: job_states(mysql_dsn)["done"] == jobs, 120, "every job done")
            code = pool.stop()
            log = pool.log
    finally:
        proxy.close()
    watcher.settle()

    assert code == 0, log[-4000:]
    assert proxy.fired == {"lost_answer": DROPS, "after_answer": DROPS}, (proxy.fired, log[-3000:])
    assert job_states(mysql_dsn) == {"pending": 0, "done": jobs, "failed": 0}
    counts = check_runs(load_runs(runs_dir), ids, watcher.died_after)
    released = [
        int(line.split("released ")[1].split()[0])
        for line in log.splitlines()
        if "claimed by a claim whose answer was lost" in line
    ]
    assert released, "no claim committed without its answer was released: the test proved nothing"
    record_figures(
        tmp_path,
        {
            "jobs": jobs,
            "dropped_at_commit_answer_lost": proxy.fired["lost_answer"],
            "dropped_after_the_answer": proxy.fired["after_answer"],
            "proxy_connections": proxy.connections,
            "jobs_released_after_a_lost_answer": released,
            **counts,
        },
    )
