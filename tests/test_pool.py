"""The pool end to end, on real pools against real databases (SQLite file and MariaDB).

Each pool runs in a subprocess (``python -c``), so the test process never forks, and is driven
like an operator would: signals, a second master, SIGKILL. Jobs are the registered tasks of
tests/pooljobs.py; those that record write JSON lines (start/end, job id, pid, time) to a file,
read back here to check exactly-once, who ran what, and that no job ever ran twice at once.
"""
from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import fastsched
from fastsched.jobs import JobState
from fastsched.priority import Priority

ROOT = Path(__file__).resolve().parent.parent

# Small numbers so the whole file stays quick: a lease of 2 s, heartbeats every 0.25 s.
FAST: dict[str, Any] = {
    "workers": 2,
    "fetch_limit": 5,
    "poll_interval": 0.02,
    "lease": 2.0,
    "heartbeat_interval": 0.25,
    "maintenance_interval": 0.5,
    "retry_delay": "0.05",
    "shutdown_grace": 10.0,
    "kill_grace": 0.5,
}

POOL_MAIN = r"""
import json, logging, sys
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s")
from fastsched.config import PoolSettings
from fastsched.dsn import parse_dsn
from fastsched.pool import Pool
options = json.loads(sys.argv[1])
options["dsn"] = parse_dsn(options["dsn"])
options["imports"] = tuple(options["imports"])
if "max_duration_minutes" in options:
    options["max_duration_minutes"] = {int(k): v for k, v in options["max_duration_minutes"].items()}
sys.exit(Pool(PoolSettings(**options)).run(install_signal_handlers=True))
"""


class PoolProcess:
    """A pool master running in a subprocess, its log in a file."""

    launcher: tuple[str, ...] = ("-c", POOL_MAIN)  # what python runs, before the options' JSON

    def __init__(self, dsn: str, log_path: Path, env: dict[str, str] | None = None, **settings: Any) -> None:
        options = {**FAST, "imports": ["tests.pooljobs"], **settings, "dsn": dsn}
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 - kept open for the life of the pool
        self.proc = subprocess.Popen(
            [sys.executable, *self.launcher, json.dumps(options)],
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        self.pid = self.proc.pid

    def wait(self, timeout: float = 30.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"the pool did not exit within {timeout}s; log:\n{self.log()}") from None

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 30.0) -> int:
        self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@pytest.fixture
def pools(tmp_path: Path) -> Iterator[Callable[..., PoolProcess]]:
    """Start pools with ``pools(dsn, **settings)``; every one is killed at the end, its log printed."""
    started: list[PoolProcess] = []

    def start(dsn: str, **settings: Any) -> PoolProcess:
        pool = PoolProcess(dsn, tmp_path / f"pool{len(started)}.log", **settings)
        started.append(pool)
        return pool

    yield start
    for pool in started:
        pool.close()
        print(f"--- log of pool pid {pool.pid} ---\n{pool.log_path.read_text()}")


@pytest.fixture
def q(dsn: str) -> Iterator[fastsched.Queue]:
    queue = fastsched.connect(dsn)
    yield queue
    queue.close()


@pytest.fixture
def rec(tmp_path: Path) -> str:
    return str(tmp_path / "records.jsonl")


def records(path: str) -> list[dict[str, Any]]:
    if not os.path.exists(path):
        return []
    with open(path) as file:
        return [json.loads(line) for line in file if line.strip()]


def events(path: str, event: str) -> list[dict[str, Any]]:
    return [r for r in records(path) if r["event"] == event]


def wait_for(condition: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def all_done(q: fastsched.Queue, ids: list[int]) -> bool:
    return all(q.get(i).state in (JobState.DONE, JobState.FAILED) for i in ids)


def pid_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as file:
            return any(line.split()[1:2] == ["Z"] for line in file if line.startswith("State:"))
    except FileNotFoundError:
        return True


def assert_no_overlap(path: str) -> None:
    """No job ever had two runs at the same time (a run without an end was killed: it ends at the next start)."""
    runs: dict[int, list[tuple[str, float]]] = defaultdict(list)
    for r in records(path):
        runs[r["id"]].append((r["event"], r["t"]))
    for job_id, seq in runs.items():
        open_run = False
        for event, _ in sorted(seq, key=lambda item: item[1]):
            if event == "start":
                open_run = True  # a previous start without an end was killed before this one began
            else:
                assert open_run, f"job {job_id} ended without a start"
                open_run = False


# ------------------------------------------------------------------------------------------------ tests


def test_every_job_of_a_mixed_workload_runs_exactly_once_in_a_child(dsn, q, rec, pools):
    priorities = list(Priority)
    ids = q.add_many([(priorities[i % 5], "record", rec, i) for i in range(200)])
    pool = pools(dsn, workers=3, fetch_limit=7, until_empty=True)
    assert pool.wait() == 0

    starts, ends = events(rec, "start"), events(rec, "end")
    assert Counter(r["n"] for r in starts) == {i: 1 for i in range(200)}
    assert Counter(r["n"] for r in ends) == {i: 1 for i in range(200)}
    assert {r["id"] for r in ends} == set(ids)
    child_pids = {r["pid"] for r in ends}
    assert pool.pid not in child_pids and os.getpid() not in child_pids
    assert 1 <= len(child_pids) <= 3  # children are kept, not one per job
    for r in ends:
        job = q.get(r["id"])
        assert job.state is JobState.DONE
        assert job.pid == r["pid"]  # the claim recorded the child that ran it
        assert job.priority == r["priority"]
    assert all(s.waiting == s.running == s.deferred == s.failed == 0 for s in q.stats())
    assert q.backend.processes() == []  # unregistered on exit


def test_until_empty_waits_for_a_dead_masters_claims_and_runs_them(dsn, q, rec, pools):
    job_id = q.add(Priority.HIGH, "record", rec, "orphan")
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    q.backend.register_master("gone-host", 4242, 1, now)  # died just now holding the job: its lease runs on
    (batch,) = q.backend.claim([0, 1, 0, 0, 0], [4343], "gone-host", 1, now)
    assert [job.id for job in batch.jobs] == [job_id]

    pool = pools(dsn, until_empty=True)
    assert pool.wait() == 0

    assert [r["id"] for r in events(rec, "end")] == [job_id]  # recovered after the lease, run once
    assert q.get(job_id).state is JobState.DONE


def test_critical_work_overtakes_a_backlog(dsn, q, rec, pools):
    q.add_many([(Priority.LOW, "record", rec, i, 0.03) for i in range(40)])
    pool = pools(dsn, workers=1, fetch_limit=1, until_empty=True)
    wait_for(lambda: len(events(rec, "end")) >= 2, what="the backlog to start")
    q.add(Priority.CRITICAL, "record", rec, "critical")
    assert pool.wait() == 0

    order = [r["n"] for r in events(rec, "start")]
    position = order.index("critical")
    assert position <= 5, order  # right after the job(s) already running or claimed
    assert len(order) - position > 25  # most of the backlog was still waiting


def test_a_flood_of_one_priority_does_not_starve_the_others(dsn, q, rec, pools):
    q.add_many([(Priority.MEDIUM, "record", rec, f"m{i}", 0.02) for i in range(80)])
    q.add_many([(Priority.LOW, "record", rec, f"low{i}") for i in range(2)])
    q.add_many([(Priority.NEGLIGIBLE, "record", rec, f"neg{i}") for i in range(2)])
    pool = pools(dsn, workers=2, fetch_limit=1, until_empty=True)
    assert pool.wait() == 0

    ends = [r["n"] for r in sorted(events(rec, "end"), key=lambda r: r["t"])]
    assert len(ends) == 84
    for name in ("low0", "low1", "neg0", "neg1"):
        assert ends.index(name) < 40, ends  # a slot each, long before the flood drained


def test_the_load_governor_keeps_children_idle_when_the_host_is_loaded(dsn, q, rec, pools):
    q.add_many([(Priority.MEDIUM, "record", rec, i, 0.15) for i in range(5)])
    pool = pools(dsn, workers=3, fetch_limit=1, max_load=0.001, until_empty=True)  # any load is too much
    assert pool.wait() == 0

    runs = {}
    for r in records(rec):
        runs.setdefault(r["n"], {})[r["event"]] = r["t"]
    spans = sorted((run["start"], run["end"]) for run in runs.values())
    assert len(spans) == 5
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end  # one job at a time: the governor allowed a single busy child


def test_dedup_and_force_priority_give_the_pool_one_job(dsn, q, rec, pools):
    first = q.add(Priority.LOW, "record", rec, "same")
    again = q.add(Priority.NEGLIGIBLE, "record", rec, "same")
    forced = q.add({"priority": Priority.HIGH, "force_priority": True}, "record", rec, "same")
    assert first == again == forced
    assert q.get(first).priority == Priority.HIGH
    pool = pools(dsn, until_empty=True)
    assert pool.wait() == 0

    starts = events(rec, "start")
    assert [(r["id"], r["priority"]) for r in starts] == [(first, Priority.HIGH)]
    assert q.get(first).state is JobState.DONE


def test_defer_then_succeed_and_the_retry_limit(dsn, q, rec, pools):
    deferred = q.add(Priority.HIGH, "defer_then_succeed", rec, 2)
    own_delay = q.add(Priority.HIGH, "defer_then_succeed", rec, 1, 0.5)
    failing = q.add(Priority.HIGH, "fail", rec, "boom-42")
    pool = pools(dsn, retry_limit=2)
    wait_for(lambda: all_done(q, [deferred, own_delay, failing]), what="the jobs to finish")
    assert pool.stop() == 0

    job = q.get(deferred)
    assert job.state is JobState.DONE and job.retrial == 2
    assert [r["n"] for r in records(rec) if r["id"] == deferred] == [2, 2, 2, 2]  # 3 starts, 1 end
    runs = [r["t"] for r in events(rec, "start") if r["id"] == own_delay]
    assert len(runs) == 2 and runs[1] - runs[0] >= 0.5  # defer(0.5) was honoured
    job = q.get(failing)
    assert job.state is JobState.FAILED
    assert "RuntimeError: boom-42" in job.last_error and "retry limit 2" in job.last_error
    assert len([r for r in events(rec, "start") if r["id"] == failing]) == 3  # the first try and 2 retries


def test_a_job_over_its_run_time_limit_is_killed_and_the_pool_goes_on(dsn, q, rec, pools):
    slow = q.add(Priority.MEDIUM, "Sleep", 60)
    unlimited = q.add(Priority.HIGH, "record", rec, "high", 1.0)
    pool = pools(dsn, retry_limit=0, max_duration_minutes={"30": 0.01, "20": 0}, kill_grace=0.3)
    wait_for(lambda: q.get(slow).state is JobState.FAILED, what="the slow job to be killed")
    after = q.add(Priority.MEDIUM, "record", rec, "after")
    wait_for(lambda: all_done(q, [unlimited, after]), what="the other jobs")
    assert pool.stop() == 0

    job = q.get(slow)
    assert "exceeded the 0.01-minute run-time limit for priority 30" in job.last_error
    assert (job.finished - job.executed).total_seconds() < 5
    assert q.get(unlimited).state is JobState.DONE  # 1 s at HIGH: no limit there
    assert q.get(after).state is JobState.DONE


def test_sigkill_of_a_child_mid_job_retries_that_job_and_loses_nothing(dsn, q, rec, pools):
    ids = q.add_many(
        [(Priority.MEDIUM, "record", rec, "slow", 1.0)] + [(Priority.MEDIUM, "record", rec, n) for n in "abc"]
    )
    pool = pools(dsn, workers=1, fetch_limit=4)
    started = wait_for(lambda: events(rec, "start"), what="the slow job to start")[0]
    running = q.get(ids[0])
    assert running.state is JobState.RUNNING and running.pid == started["pid"]  # the claim names the child
    os.kill(started["pid"], signal.SIGKILL)
    wait_for(lambda: all_done(q, ids), what="every job to finish")
    assert pool.proc.poll() is None  # the pool went on
    assert pool.stop() == 0

    assert Counter(r["n"] for r in events(rec, "start")) == {"slow": 2, "a": 1, "b": 1, "c": 1}
    assert Counter(r["n"] for r in events(rec, "end")) == {"slow": 1, "a": 1, "b": 1, "c": 1}
    job = q.get(ids[0])
    assert job.state is JobState.DONE and job.crashes == 1 and job.retrial == 0
    assert_no_overlap(rec)


def test_a_poison_pill_is_failed_after_the_crash_limit(dsn, q, rec, pools):
    pills = [q.add(Priority.HIGH, command) for command in ("crash", "kill9", "segfault")]
    fine = q.add(Priority.HIGH, "record", rec, "fine")
    pool = pools(dsn, crash_limit=2, until_empty=True)
    assert pool.wait() == 0

    for job_id in pills:
        job = q.get(job_id)
        assert job.state is JobState.FAILED, job
        assert job.crashes == 2 and "killed its worker 2 times" in job.last_error
    assert "signal 9" in q.get(pills[1]).last_error and "signal 11" in q.get(pills[2]).last_error
    assert q.get(fine).state is JobState.DONE


def test_sigkill_of_the_master_then_a_restart_completes_everything(dsn, q, rec, pools):
    ids = q.add_many([(Priority.MEDIUM, "record", rec, i, 0.1) for i in range(24)])
    first = pools(dsn, host_id="node-a", workers=2, fetch_limit=2)
    wait_for(lambda: len(events(rec, "end")) >= 4, what="some jobs to finish")
    first.signal(signal.SIGKILL)
    killed_at = time.time()
    first.wait()
    children = {r["pid"] for r in records(rec)}
    wait_for(lambda: all(pid_gone(pid) for pid in children), timeout=3, what="the orphaned children to die")

    second = pools(dsn, host_id="node-a", workers=2, fetch_limit=2, until_empty=True)
    assert second.wait() == 0  # no wait for the lease: the dead master's pid is gone
    assert all(q.get(i).state is JobState.DONE for i in ids)
    ends = Counter(r["n"] for r in events(rec, "end"))
    assert set(ends) == set(range(24))
    for r in events(rec, "start"):
        if r["t"] > killed_at:
            assert r["pid"] not in children
    assert_no_overlap(rec)


def test_graceful_stop_finishes_the_running_job_and_releases_the_rest(dsn, q, rec, pools):
    # A command never seen goes one job at a time: a first one teaches the pool that record jobs
    # are quick, so that the next three go in one batch (the budget is large: however slow the machine).
    pool = pools(dsn, workers=1, fetch_limit=3, batch_budget_ms=10_000)
    warm = q.add(Priority.MEDIUM, "record", rec, "warm")
    wait_for(lambda: q.get(warm).state is JobState.DONE, what="the first job to run")
    ids = q.add_many([(Priority.MEDIUM, "record", rec, "slow", 1.0), (Priority.MEDIUM, "record", rec, "a"),
                      (Priority.MEDIUM, "record", rec, "b")])
    wait_for(lambda: len(events(rec, "start")) == 2, what="the slow job to start")
    assert q.get(ids[1]).state is JobState.RUNNING  # claimed in the same batch
    assert pool.stop() == 0

    assert [r["n"] for r in records(rec)] == ["warm", "warm", "slow", "slow"]  # finished, nothing else started
    assert q.get(ids[0]).state is JobState.DONE
    for job_id in ids[1:]:
        job = q.get(job_id)
        assert job.state is JobState.WAITING and job.pid == 0 and job.crashes == 0 and job.retrial == 0
    assert q.backend.processes() == []


def test_a_second_stop_request_kills_the_running_job_and_releases_it(dsn, q, rec, pools):
    job_id = q.add(Priority.MEDIUM, "record", rec, "slow", 30)
    pool = pools(dsn, workers=1)
    wait_for(lambda: events(rec, "start"), what="the slow job to start")
    pool.signal(signal.SIGTERM)
    time.sleep(0.2)
    pool.signal(signal.SIGTERM)
    assert pool.wait(10) == 4  # EXIT_KILLED
    job = q.get(job_id)
    assert job.state is JobState.WAITING and job.crashes == 0  # the operator's doing: no crash counted
    assert pid_gone(events(rec, "start")[0]["pid"])


def test_two_masters_run_every_job_once_and_never_at_the_same_time(dsn, q, rec, pools):
    ids = q.add_many([(list(Priority)[i % 5], "record", rec, i, 0.004) for i in range(300)])
    a = pools(dsn, host_id="m1", fetch_limit=4, until_empty=True)
    b = pools(dsn, host_id="m2", fetch_limit=4, until_empty=True)
    assert a.wait() == 0 and b.wait() == 0

    assert Counter(r["n"] for r in events(rec, "start")) == {i: 1 for i in range(300)}
    assert Counter(r["n"] for r in events(rec, "end")) == {i: 1 for i in range(300)}
    hosts = Counter(q.get(i).host for i in ids)
    assert set(hosts) == {"m1", "m2"}, hosts  # both masters worked
    assert_no_overlap(rec)


def test_unknown_commands_are_failed_and_nothing_is_imported_or_called(dsn, q, rec, tmp_path, pools):
    pwned = tmp_path / "pwned"
    bad = {
        "os.system": q.add(Priority.HIGH, "os.system", f"touch {pwned}"),
        "builtins.eval": q.add(Priority.HIGH, "builtins.eval", f"open({str(pwned)!r}, 'w')"),
        "tests.pooljobs.touch": q.add(Priority.HIGH, "tests.pooljobs.touch", str(pwned)),
        "NoSuchTask": q.add(Priority.HIGH, "NoSuchTask"),
    }
    mismatch = q.add(Priority.HIGH, "record")  # registered, but its args do not fit
    fine = q.add(Priority.HIGH, "record", rec, "fine")
    pool = pools(dsn, until_empty=True, retry_limit=0)  # no retry left: failed at the first hand-back
    assert pool.wait() == 0

    for command, job_id in bad.items():
        job = q.get(job_id)
        assert job.state is JobState.FAILED and f"unknown command: {command} (" in (job.last_error or ""), job
        assert job.retrial == 0
    job = q.get(mismatch)
    assert job.state is JobState.FAILED and "do not match" in job.last_error and job.retrial == 0
    assert q.get(fine).state is JobState.DONE
    assert not pwned.exists()


def test_a_periodic_task_is_enqueued_once_per_period_across_two_masters(dsn, q, tmp_path, pools):
    ticks = str(tmp_path / "ticks.jsonl")
    env = {"FASTSCHED_TEST_TICKS": ticks}
    imports = ["tests.pooljobs", "tests.poolperiodic"]
    a = pools(dsn, host_id="p1", imports=imports, env=env)
    b = pools(dsn, host_id="p2", imports=imports, env=env)
    wait_for(lambda: records(ticks), what="the first tick")
    time.sleep(3.4)
    assert a.stop() == 0 and b.stop() == 0

    ids = sorted({r["id"] for r in records(ticks)})
    enqueued = sorted(q.get(i).created for i in ids)
    assert 3 <= len(enqueued) <= 5, enqueued  # one per second
    gaps = [(later - earlier).total_seconds() for earlier, later in itertools.pairwise(enqueued)]
    assert min(gaps) >= 0.9, gaps  # never twice in one period, whichever master took it
    assert len(records(ticks)) == len(ids)  # and each ran once


def test_a_second_master_with_the_same_host_id_refuses_to_start(dsn, q, pools):
    first = pools(dsn, host_id="same")
    wait_for(lambda: [p for p in q.backend.processes() if p.role == "master"], what="the first master")
    second = pools(dsn, host_id="same")
    assert second.wait() != 0
    assert "PoolAlreadyRunning" in second.log()
    assert first.proc.poll() is None
    assert first.stop() == 0


def test_a_master_declared_dead_kills_its_children_before_the_job_runs_again(dsn, q, rec, pools):
    job_id = q.add(Priority.MEDIUM, "record", rec, "slow", 1.5)
    pool = pools(dsn, host_id="zombie", workers=1)
    first = wait_for(lambda: events(rec, "start"), what="the job to start")[0]
    # What another master does to one whose heartbeat is older than the lease: release, unregister.
    q.backend.recover_expired(q.backend.server_now() + dt.timedelta(hours=1))
    wait_for(lambda: q.get(job_id).state is JobState.DONE, what="the job to complete")
    assert pool.stop() == 0

    starts = events(rec, "start")
    assert len(starts) == 2 and starts[1]["pid"] != first["pid"]
    assert pid_gone(first["pid"])
    assert len(events(rec, "end")) == 1
    assert_no_overlap(rec)


# --- database outages (MariaDB through a proxy the test can cut) ---------------------------------


class Proxy:
    """A TCP proxy in front of MariaDB. ``hang()`` stops forwarding while keeping every connection
    open (a server that stopped answering: queries block), ``resume()`` lets the traffic through."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.flowing = threading.Event()
        self.flowing.set()
        self.closed = False
        self.refusing = False
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.refusing:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while not self.closed:
                self.flowing.wait()
                ready, _, _ = select.select([source], [], [], 0.05)
                if not ready or not self.flowing.is_set():
                    continue
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def hang(self) -> None:
        self.flowing.clear()

    def refuse(self) -> None:
        """Drop every connection and refuse new ones (the server is down)."""
        self.refusing = True
        for sock in list(self.sockets):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def accept_again(self) -> None:
        self.refusing = False

    def resume(self) -> None:
        self.flowing.set()

    def close(self) -> None:
        self.closed = True
        self.flowing.set()
        self.listener.close()


@pytest.fixture
def proxied(mysql_dsn: str) -> Iterator[tuple[str, Proxy]]:
    parts = urllib.parse.urlsplit(mysql_dsn)
    proxy = Proxy(parts.hostname or "127.0.0.1", parts.port or 3306)
    yield mysql_dsn.replace(f"@{parts.hostname}:{parts.port}/", f"@127.0.0.1:{proxy.port}/"), proxy
    proxy.close()


@pytest.mark.parametrize("taken_over", [False, True], ids=["db-back", "recovered-by-another-master"])
def test_a_hung_database_gets_the_children_killed_before_the_lease_runs_out(mysql_dsn, proxied, rec, pools, taken_over):
    dsn, proxy = proxied
    q = fastsched.connect(mysql_dsn)  # the test's own connection does not go through the proxy
    try:
        job_id = q.add(Priority.MEDIUM, "record", rec, "slow", 2.5)
        pool = pools(dsn, host_id="cut-off", workers=1, lease=3.0, heartbeat_interval=0.25)
        first = wait_for(lambda: events(rec, "start"), what="the job to start")[0]
        proxy.hang()  # the master blocks in its next statement, with no read timeout
        hung_at = time.monotonic()
        wait_for(lambda: pid_gone(first["pid"]), timeout=4, what="the watchdog to kill the child")
        assert time.monotonic() - hung_at < 3.0  # before a lease has passed
        if taken_over:
            time.sleep(1.5)  # the lease runs out: another master recovers the claims
            released = q.backend.recover_expired(q.backend.processes()[0].heartbeat + dt.timedelta(seconds=0.1))
            assert released == [("cut-off", 1)]
        proxy.resume()
        wait_for(lambda: q.get(job_id).state is JobState.DONE, timeout=15, what="the job to run again and finish")
        assert pool.stop() == 0
        # The watchdog or the child's own fence, whichever reads the lapsed lease first.
        assert "watchdog" in pool.log() or "killed itself at its fence" in pool.log()
        if taken_over:
            assert "declared dead" in pool.log()
        starts = events(rec, "start")
        assert len(starts) == 2 and starts[1]["t"] > first["t"] + 1.0
        assert len(events(rec, "end")) == 1
        assert q.get(job_id).crashes == 0  # not the job's fault
        assert_no_overlap(rec)
    finally:
        q.close()


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as file:
        fields = file.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def test_a_master_waiting_on_a_down_database_or_a_long_stop_does_not_spin(mysql_dsn, proxied, rec, pools):
    dsn, proxy = proxied
    q = fastsched.connect(mysql_dsn)
    try:
        first = q.add(Priority.MEDIUM, "record", rec, "slow", 2.0)
        pool = pools(dsn, host_id="down", workers=1, lease=6.0, heartbeat_interval=0.25, maintenance_interval=0.2)
        wait_for(lambda: events(rec, "start"), what="the job to start")
        proxy.refuse()  # the server is down: every statement fails at once
        before = cpu_seconds(pool.pid)
        time.sleep(1.5)
        assert cpu_seconds(pool.pid) - before < 0.5  # it backs off instead of spinning
        proxy.accept_again()
        wait_for(lambda: q.get(first).state is JobState.DONE, what="the job to finish")
        assert "database error" in pool.log() and "reachable again" in pool.log()

        second = q.add(Priority.MEDIUM, "record", rec, "second", 2.0)
        # Started in its child, not only claimed: a stop releases claimed jobs no child has begun.
        wait_for(lambda: any(r["n"] == "second" for r in events(rec, "start")), what="the second job to start")
        pool.signal(signal.SIGTERM)  # the graceful stop waits for the job: it must not spin meanwhile
        before = cpu_seconds(pool.pid)
        time.sleep(1.0)
        assert cpu_seconds(pool.pid) - before < 0.4
        assert pool.wait() == 0
        assert q.get(second).state is JobState.DONE
    finally:
        q.close()


def test_the_load_line_reads_its_counts_again_only_within_its_budget(dsn: str, q: fastsched.Queue) -> None:
    """The Load line's per-priority counts cost a second at a million pending jobs on MariaDB:
    a master reads them again only after 100x the last read's time, repeating them meanwhile."""
    from fastsched.backends import open_backend
    from fastsched.clock import utcnow
    from fastsched.config import PoolSettings
    from fastsched.dsn import parse_dsn
    from fastsched.master import duties
    from fastsched.master.dblink import DbLink
    from fastsched.master.metrics import DbKind, PoolMetrics

    q.add(Priority.LOW, "noop")
    backend = open_backend(dsn)
    reads: list[float] = []
    real_stats = backend.stats

    def slow_stats(now: Any) -> Any:
        reads.append(now)
        time.sleep(0.2)  # a deep queue's count
        return real_stats(now)

    backend.stats = slow_stats  # type: ignore[method-assign]
    metrics = PoolMetrics()
    settings = PoolSettings(dsn=parse_dsn(dsn), host_id="load-line")
    link = DbLink(lambda: backend, metrics, settings.lease, mono=time.monotonic)
    view = duties.LoadView(children=2, busy=0, active=2, waiting=1, allowed=2)
    lines = duties.LogLines(link, metrics, settings, lambda: view, wall=utcnow)
    try:
        lines.run(100.0)
        lines.run(100.0 + duties.LOG_INTERVAL)  # 10 s later, within the 20 s it earned
        assert len(reads) == 1
        assert [e.waiting for e in lines.last_stats] == [0, 0, 0, 1, 0]
        lines.run(100.0 + 10 * duties.STATS_BUDGET_FACTOR)  # past any budget a read under 10 s earns
        assert len(reads) == 2
        assert metrics.db_seconds_by_kind[DbKind.STAT] == metrics.db_seconds > 0  # stat, whatever its name
    finally:
        backend.close()


@pytest.mark.parametrize("fetch_limit", [1, 7])
def test_critical_jobs_go_first_and_shares_follow_the_true_counts(dsn, q, pools, fetch_limit):
    """Issue 12, item 1: 150 NEGLIGIBLE, 150 HIGH and 5 CRITICAL jobs, 2 workers, --until-empty.

    Read from the claims the rows record (each batch: one claim time and one child): once the
    first claim is made, no non-CRITICAL job is claimed while a CRITICAL one still waits; and
    while HIGH and NEGLIGIBLE both wait, a claim never gives the second child the priority the
    first one is on (the starvation guard over the true counts: each gets a worker)."""
    ids = q.add_many([(Priority.NEGLIGIBLE, "noop", "n", i) for i in range(150)])
    ids += q.add_many([(Priority.HIGH, "noop", "h", i) for i in range(150)])
    ids += q.add_many([(Priority.CRITICAL, "noop", "c", i) for i in range(5)])
    pool = pools(dsn, workers=2, fetch_limit=fetch_limit, until_empty=True)
    assert pool.wait(120) == 0

    jobs = [q.get(i) for i in ids]
    assert {job.state for job in jobs} == {JobState.DONE}
    claimed_at = {job.id: job.executed for job in jobs}
    critical = [job for job in jobs if job.priority == Priority.CRITICAL]
    others = [job for job in jobs if job.priority != Priority.CRITICAL]
    assert max(claimed_at[j.id] for j in critical) <= min(claimed_at[j.id] for j in others)

    batches: dict[tuple[Any, int], int] = {}  # (claim time, child) -> priority
    for job in jobs:
        assert batches.setdefault((job.executed, job.pid), job.priority) == job.priority
    waiting_until = {  # the last claim time of each priority: it waited until then
        p: max(job.executed for job in jobs if job.priority == p) for p in (Priority.HIGH, Priority.NEGLIGIBLE)
    }
    children = {pid for _, pid in batches}
    assert len(children) == 2
    for (at, pid), priority in sorted(batches.items(), key=lambda item: item[0][0]):
        if priority == Priority.CRITICAL:
            continue
        other = Priority.NEGLIGIBLE if priority == Priority.HIGH else Priority.HIGH
        if waiting_until[other] <= at:
            continue  # nothing of the other priority waited any more
        (sibling,) = children - {pid}
        held = [(t, p) for (t, child), p in batches.items() if child == sibling and t <= at]
        if held:
            assert max(held)[1] != priority, f"claim at {at} gave both children {priority} while {other} waited"
