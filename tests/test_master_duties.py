"""The master's duties, lease, database link and coalescing, in-process with injected time."""
from __future__ import annotations

import datetime as dt
import math
import threading
import time

import pytest

from fastsched.errors import DatabaseError, DatabaseUnavailable
from fastsched.master import duties
from fastsched.master.coalesce import COALESCE_MAX, Coalescer
from fastsched.master.dblink import DB_RETRY_MAX, DB_RETRY_MIN, DbLink, Lease
from fastsched.master.metrics import DbKind, PoolMetrics

NOW = dt.datetime(2030, 1, 2, 3, 4, 5)


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class FakeBackend:
    """Answers like a backend; ``down`` makes every call fail as a dropped connection."""

    def __init__(self) -> None:
        self.down = False
        self.alive = True
        self.calls: list[str] = []
        self.closed = 0

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if self.down:
            raise DatabaseUnavailable(f"{name}: the server has gone away")

    def heartbeat(self, host: str, pid: int, workers: int, now: dt.datetime) -> bool:
        self._call("heartbeat")
        return self.alive

    def register_children(self, host: str, pid: int, pids: list[int], now: dt.datetime) -> None:
        self._call("register_children")

    def close(self) -> None:
        self.closed += 1


class FakeRegistration:
    def __init__(self, link: DbLink, backend: FakeBackend) -> None:
        self.link = link
        self.backend = backend
        self.synced = 0

    def heartbeat(self) -> bool:
        return bool(self.link.call(DbKind.WRITE, self.backend.heartbeat, "h", 1, 2, NOW))

    def sync_children(self) -> None:
        self.synced += 1


class FakeChildren:
    def __init__(self, count: int = 2) -> None:
        self.count = count
        self.killed: list[int] = []

    def __len__(self) -> int:
        return self.count

    def kill_from_watchdog(self) -> list[int]:
        self.killed.append(self.count)
        return list(range(self.count))


def make_link(clock: FakeClock, backend: FakeBackend, lease: float = 8.0) -> tuple[DbLink, PoolMetrics]:
    metrics = PoolMetrics()
    ticks = iter(range(10**6))
    return DbLink(lambda: backend, metrics, lease, clock, perf=lambda: next(ticks) * 0.5), metrics


def test_the_link_times_each_call_by_its_kind_and_marks_the_database_down_on_an_error() -> None:
    clock, backend = FakeClock(), FakeBackend()
    link, metrics = make_link(clock, backend)
    assert link.call(DbKind.STAT, backend.heartbeat, "h", 1, 2, NOW) is True
    assert metrics.db_seconds_by_kind[DbKind.STAT] == 0.5 == metrics.db_seconds  # one tick of the perf clock
    backend.down = True
    with pytest.raises(DatabaseUnavailable):
        link.call(DbKind.WRITE, link.backend.heartbeat, "h", 1, 2, NOW)
    assert link.down and not metrics.db_up and metrics.db_errors == 1
    assert metrics.db_seconds_by_kind[DbKind.WRITE] == 0.5
    assert backend.closed == 1  # a dropped connection is closed: the next call reconnects
    assert link.retry_at == clock.now + DB_RETRY_MIN


def test_the_back_off_doubles_up_to_its_cap_and_a_quarter_of_the_lease() -> None:
    clock, backend = FakeClock(), FakeBackend()
    backend.down = True
    link, _ = make_link(clock, backend, lease=100.0)
    waits = []
    for _ in range(12):
        with pytest.raises(DatabaseError):
            link.call(DbKind.WRITE, link.backend.heartbeat, "h", 1, 2, NOW)
        waits.append(round(link.retry_at - clock.now, 6))
    assert waits[:4] == [0.1, 0.2, 0.4, 0.8] and waits[-1] == DB_RETRY_MAX
    short, _ = make_link(clock, backend, lease=2.0)
    for _ in range(10):
        with pytest.raises(DatabaseError):
            short.call(DbKind.WRITE, backend.heartbeat, "h", 1, 2, NOW)
    assert short.retry_at - clock.now == 0.5  # a quarter of the lease


def test_the_heartbeat_renews_the_lease_retries_a_down_database_and_reports_a_lost_master() -> None:
    clock, backend = FakeClock(), FakeBackend()
    link, _ = make_link(clock, backend, lease=8.0)
    lease = Lease(8.0)
    registration = FakeRegistration(link, backend)
    lost: list[bool] = []
    beat = duties.Heartbeat(link, lease, registration, 1.0, lambda: lost.append(True))  # type: ignore[arg-type]
    beat.started(clock.now)
    assert lease.valid_until == clock.now + 4.0 and beat.next_due() == clock.now + 1.0
    clock.now += 1.0
    backend.down = True
    beat.run(clock.now)
    assert link.down and lease.valid_until == 1004.0  # not renewed
    assert beat.next_due() == link.retry_at == clock.now + DB_RETRY_MIN  # retried at the back-off's end
    backend.down = False
    clock.now += 0.1
    beat.run(clock.now)
    assert not link.down and lease.valid_until == clock.now + 4.0 and registration.synced == 1
    backend.alive = False
    clock.now += 1.0
    beat.run(clock.now)
    assert lost == [True]


def test_the_outage_policy_kills_the_children_once_when_the_lease_runs_out() -> None:
    clock, backend = FakeClock(), FakeBackend()
    link, _ = make_link(clock, backend)
    lease = Lease(8.0)
    lease.renew(clock.now)
    children = FakeChildren()
    expired: list[float] = []
    policy = duties.OutagePolicy(link, lease, children, expired.append)  # type: ignore[arg-type]
    assert policy.next_due() == math.inf  # the database answers
    backend.down = True
    with pytest.raises(DatabaseError):
        link.call(DbKind.WRITE, link.backend.heartbeat, "h", 1, 2, NOW)
    assert policy.next_due() == lease.valid_until == 1004.0
    clock.now = 1003.9
    policy.run(clock.now)
    assert expired == []
    clock.now = 1004.0
    policy.run(clock.now)
    assert expired == [1004.0]
    assert policy.next_due() > clock.now  # once per outage: only the still-down warning is due
    policy.run(clock.now + 1)
    assert expired == [1004.0]
    lease.renew(1010.0)  # the database came back, then went away again
    assert policy.next_due() == 1014.0


def test_the_watchdog_thread_kills_the_children_once_the_published_lease_runs_out() -> None:
    clock = FakeClock()
    lease = Lease(8.0)
    lease.renew(clock.now)
    children = FakeChildren(3)
    dog = duties.Watchdog(lease, children, 0.001, clock)  # type: ignore[arg-type]
    dog.start()
    try:
        time.sleep(0.05)
        assert children.killed == []
        clock.now = lease.valid_until + 0.001
        deadline = time.monotonic() + 5
        while not children.killed and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(0.05)
        assert children.killed == [3]  # once for this lease, however long it stays out
    finally:
        dog.stop()
    assert not dog.is_alive() and threading.active_count() >= 1


def test_shutdown_grace_and_run_due_and_the_loops_deadline() -> None:
    busy = [2]
    forced: list[bool] = []
    grace = duties.ShutdownGrace(lambda: busy[0], 30.0, lambda: forced.append(True))
    assert grace.next_due() == math.inf
    grace.begin(100.0)

    class Tick:
        def __init__(self, due: float) -> None:
            self.due = due
            self.ran: list[float] = []

        def next_due(self) -> float:
            return self.due

        def run(self, mono: float) -> None:
            self.ran.append(mono)
            self.due = mono + 5

    early, late = Tick(101.0), Tick(200.0)
    every: list[duties.Duty] = [early, grace, late]
    assert duties.next_deadline(every) == 101.0
    duties.run_due(every, 101.0)
    assert early.ran == [101.0] and late.ran == [] and forced == []
    assert duties.next_deadline(every) == 106.0
    duties.run_due(every, 130.0)
    assert forced == [True] and grace.next_due() == math.inf
    assert duties.next_deadline(every) == 135.0


def test_coalescing_waits_for_a_batch_about_to_end_but_never_longer_than_its_limit() -> None:
    c = Coalescer()
    assert c.hold(10.0, 1, [9.99]) == 0.0  # no averages yet
    c.claimed(0.01)  # a claim takes 10 ms
    c.batch_ran(0.004)  # a batch 4 ms
    # A batch sent 1 ms ago ends in ~3 ms, within half a claim (5 ms): wait for it.
    assert c.hold(10.0, 1, [9.999]) == pytest.approx(0.003)
    # The waits before one claim add up to half a claim at most, whatever is about to end then.
    assert c.hold(10.006, 1, [10.005]) == 0.0
    c.stop_holding()  # the master claimed: the next waits count from zero
    assert c.hold(10.006, 1, [10.005]) == pytest.approx(0.003)
    assert c.hold(10.0, 0, [9.999]) == 0.0  # nobody free to claim for
    assert c.hold(10.0, 1, [9.99]) == 0.0  # already late: claim now
    slow = Coalescer()
    slow.claimed(1.0)
    slow.batch_ran(0.5)
    assert slow.hold(0.49, 1, [0.0]) <= COALESCE_MAX


def test_pool_metrics_tell_how_much_each_counter_grew_since_a_copy() -> None:
    metrics = PoolMetrics()
    metrics.add_db_time(DbKind.CLAIM, 0.25)
    metrics.jobs_done += 3
    metrics.jobs_done_by_priority[20] += 3
    mark = metrics.copy()
    metrics.add_db_time(DbKind.WRITE, 0.5)
    metrics.jobs_done += 2
    metrics.jobs_done_by_priority[20] += 2
    metrics.workers = 4
    grown = metrics.since(mark)
    assert grown.jobs_done == 2 and grown.jobs_done_by_priority[20] == 2
    assert grown.db_seconds == 0.5 == grown.db_seconds_by_kind[DbKind.WRITE]
    assert grown.db_seconds_by_kind[DbKind.CLAIM] == 0.0
    assert grown.workers == 4  # a gauge is what it is now
    assert mark.jobs_done == 3 and mark.db_seconds_by_kind[DbKind.WRITE] == 0.0  # the copy did not move


def test_every_exported_counter_is_a_counter_of_the_master() -> None:
    from fastsched.master.metrics import exported_counters

    names = [name for name, _ in exported_counters()]
    assert "jobs_failed" in names and "claims" in names and "children_died" in names
    assert "workers" not in names and "db_up" not in names  # gauges are exported as gauges
    assert all(isinstance(getattr(PoolMetrics(), name), int) for name in names)
