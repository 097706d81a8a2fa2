"""The loop's wait (Wakeups) and a master's leaving (Registration.leave), in-process with injected time."""
from __future__ import annotations

import shutil
import tempfile
import threading
import time
from typing import Any

from fastsched import wakeup
from fastsched.errors import DatabaseUnavailable
from fastsched.master.dblink import DB_RETRY_MAX, DB_RETRY_MIN, DbLink
from fastsched.master.metrics import PoolMetrics
from fastsched.master.registration import Registration
from fastsched.master.waiting import Wakeups
from tests.masterkit import FakeTime


class Database:
    """Fails the first ``outage`` calls as a dropped connection; records what reached it."""

    def __init__(self, outage: int) -> None:
        self.outage = outage
        self.calls: list[str] = []

    def _call(self, name: str) -> None:
        if self.outage > 0:
            self.outage -= 1
            raise DatabaseUnavailable(f"{name}: the server has gone away")
        self.calls.append(name)

    def release_claims(self, owner: str, keep: Any) -> int:
        self._call("release_claims")
        return 0

    def unregister(self, host: str, pid: int) -> None:
        self._call("unregister")

    def close(self) -> None:
        pass


def leaving(db: Database, time_: FakeTime) -> Registration:
    link = DbLink(lambda: db, PoolMetrics(), 8.0, time_.mono, perf=time_.mono)
    return Registration(
        link, None, host="h", pid=1, workers=2, lease=8.0,  # type: ignore[arg-type] - no child is listed
        wall=lambda: None, mono=time_.mono, sleep=time_.sleep,  # type: ignore[arg-type, return-value]
    )


def test_leaving_writes_the_last_outcomes_before_it_unregisters_and_retries_an_outage() -> None:
    db, time_ = Database(outage=2), FakeTime(50.0)
    written: list[float] = []

    def write_last() -> bool:
        written.append(time_.now)
        return True

    assert leaving(db, time_).leave(write_last, within=4.0)
    assert db.calls == ["release_claims", "unregister"]
    assert len(written) == 3  # written again before each attempt to unregister
    assert time_.slept == [DB_RETRY_MIN, DB_RETRY_MIN * 2]


def test_leaving_gives_up_after_its_time_and_never_unregisters_with_outcomes_unwritten() -> None:
    db, time_ = Database(outage=0), FakeTime(50.0)
    assert not leaving(db, time_).leave(lambda: False, within=3.0)
    assert db.calls == []  # the outcomes never reached the database: the claims stay for the lease
    assert sum(time_.slept) >= 3.0 and max(time_.slept) <= DB_RETRY_MAX


def test_a_stop_request_ends_the_wait_at_once() -> None:
    wakeups = Wakeups()
    wakeups.open("test-db", "host-a", 0.5)
    try:
        threading.Timer(0.05, wakeups.poke).start()
        started = time.monotonic()
        woken = wakeups.wait([], 30.0)
        assert time.monotonic() - started < 20.0
        assert not woken.added
        assert wakeups.wait([], 0.0).ready == []  # the poke was read: the next wait does not return for it
    finally:
        wakeups.close()


def test_a_job_added_on_this_host_wakes_the_wait_and_names_its_priority(monkeypatch: Any) -> None:
    runtime = tempfile.mkdtemp(prefix="fsw", dir="/tmp")  # short: a socket's path has a length limit
    monkeypatch.setenv("XDG_RUNTIME_DIR", runtime)
    wakeups = Wakeups()
    wakeups.open("test-db", "host-a", 0.5)
    try:
        wakeup.notify("test-db", 20)
        woken = wakeups.wait([], 30.0)
        assert woken.added and woken.priorities == [20]
    finally:
        wakeups.close()
        shutil.rmtree(runtime)
