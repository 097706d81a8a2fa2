"""One clock: the database server's (issue 11, items 7 and 8), on the real MariaDB.

A producer whose clock is off must neither delay its jobs (2 minutes ahead) nor jump the line
(2 minutes behind): created and next_try come from the server's clock, a delay is added there,
and a time the caller gives is kept as given. A master's heartbeat is the server's time too.
The "host clock" is skewed by replacing the wall clock fastsched reads on this host, under every
name a loaded fastsched module has for it (so the test means the same on code that read it elsewhere).
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Iterator

import pytest
from faultkit import connect_raw, sql

import fastsched
import fastsched.queue

SKEW = dt.timedelta(minutes=2)


def _skew_host_clock(monkeypatch: pytest.MonkeyPatch, by: dt.timedelta) -> None:
    real = fastsched.queue.utcnow

    def skewed() -> dt.datetime:
        return real() + by

    patched = []
    for name, module in list(sys.modules.items()):
        if (name == "fastsched" or name.startswith("fastsched.")) and getattr(module, "utcnow", None) is real:
            monkeypatch.setattr(module, "utcnow", skewed)
            patched.append(name)
    assert "fastsched.queue" in patched and abs(fastsched.queue.utcnow() - real() - by) < dt.timedelta(seconds=5)


@pytest.fixture
def queue(mysql_dsn: str) -> Iterator[fastsched.Queue]:
    with fastsched.connect(mysql_dsn) as q:
        yield q


def _times(dsn: str, job_id: int) -> tuple[dt.datetime, dt.datetime, dt.datetime]:
    ((created, next_try, server_now),) = sql(
        dsn, "SELECT created, next_try, UTC_TIMESTAMP(6) FROM workerqueue WHERE id = %s", (job_id,)
    )
    return created, next_try, server_now


@pytest.mark.parametrize("skew", [SKEW, -SKEW], ids=["ahead", "behind"])
def test_a_producer_with_a_skewed_clock_neither_delays_its_job_nor_jumps_the_line(
    mysql_dsn: str, queue: fastsched.Queue, monkeypatch: pytest.MonkeyPatch, skew: dt.timedelta
) -> None:
    first = queue.add(fastsched.PRIORITY_MEDIUM, "Cmd", "on time")
    _skew_host_clock(monkeypatch, skew)
    with fastsched.connect(mysql_dsn) as skewed:  # a producer on a host whose clock is off
        second = skewed.add(fastsched.PRIORITY_MEDIUM, "Cmd", "skewed")
        (later,) = skewed.add_many([(fastsched.PRIORITY_MEDIUM, "Cmd", "skewed, many")])
        app = connect_raw(mysql_dsn, autocommit=False)
        try:
            in_app = skewed.add(fastsched.PRIORITY_MEDIUM, "Cmd", "skewed, in the app's transaction", connection=app)
            app.commit()
        finally:
            app.close()
        assert skewed.get(second).state is fastsched.JobState.WAITING
    created_first, next_first, _ = _times(mysql_dsn, first)
    for job_id in (second, later, in_app):
        created, next_try, server_now = _times(mysql_dsn, job_id)
        assert next_try <= server_now, f"job {job_id} from a clock {skew} off is not runnable now"
        assert created >= created_first and next_try >= next_first, "the skewed job jumped the line"
        assert server_now - created < dt.timedelta(seconds=30)
    # The claim order (next_try, id) is the order of the adds.
    order = [row[0] for row in sql(mysql_dsn, "SELECT id FROM workerqueue ORDER BY next_try, id")]
    assert order == [first, second, later, in_app]


def test_a_delay_is_added_to_the_servers_clock(mysql_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _skew_host_clock(monkeypatch, SKEW)
    with fastsched.connect(mysql_dsn) as queue:
        job_id = queue.add({"delay": 60}, "Cmd")
        assert queue.get(job_id).state is fastsched.JobState.DEFERRED
    created, next_try, server_now = _times(mysql_dsn, job_id)
    assert next_try - created == dt.timedelta(seconds=60)
    assert abs(server_now - created) < dt.timedelta(seconds=30)


def test_times_the_caller_gives_are_kept(mysql_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _skew_host_clock(monkeypatch, SKEW)
    queue = fastsched.connect(mysql_dsn)
    parent = dt.datetime(2020, 5, 17, 8, 30, 0, 123456)
    at = dt.datetime(2031, 1, 2, 3, 4, 5, 678901)
    follow_up = queue.add({"created": parent}, "Cmd", 1)
    scheduled = queue.add({"delay": at}, "Cmd", 2)
    assert _times(mysql_dsn, follow_up)[:2] == (parent, parent)
    created, next_try, _ = _times(mysql_dsn, scheduled)
    assert next_try == at
    both = queue.add({"created": parent, "delay": 30}, "Cmd", 3)
    created, next_try, server_now = _times(mysql_dsn, both)
    queue.close()
    assert created == parent and abs(next_try - server_now - dt.timedelta(seconds=30)) < dt.timedelta(seconds=30)


def test_heartbeats_are_stamped_by_the_servers_clock(mysql_dsn: str, queue: fastsched.Queue) -> None:
    backend = queue.backend
    backend.register_master("clock-host", 4242, 2, None)
    backend.register_children("clock-host", 4242, [4243], None)
    assert backend.heartbeat("clock-host", 4242, 2, None)
    rows = sql(mysql_dsn, "SELECT pid, heartbeat, UTC_TIMESTAMP(6) FROM process WHERE host = 'clock-host'")
    assert {row[0] for row in rows} == {4242, 4243}
    for _, heartbeat, server_now in rows:
        assert dt.timedelta(0) <= server_now - heartbeat < dt.timedelta(seconds=30)
    assert abs(backend.server_now() - rows[0][2]) < dt.timedelta(seconds=30)
