"""The path from an add() on this host to the job's start: the wake-up drives the pool, not its poll.

A woken master claims before the duties that are due and does them right after; these tests check
what that must not break: jobs still start, exactly once, and the master keeps its heartbeat (and
so its claims) under a steady stream of wake-ups. Real pools in subprocesses, on SQLite and MariaDB.
"""
from __future__ import annotations

import os
import time
from collections import Counter
from typing import Any

from fastsched.jobs import JobState
from fastsched.priority import Priority
from tests.test_pool import all_done, assert_no_overlap, events, pools, q, rec, wait_for  # noqa: F401 - fixtures

# Nothing but a wake-up gets the pool going within a test's waits: its poll and heartbeat are far apart.
SLOW_POLL = {"poll_interval": 60.0, "heartbeat_interval": 20.0, "lease": 60.0, "maintenance_interval": 60.0}
WAKE_WAIT = 5.0  # seconds a job may take to start: a quarter of the heartbeat interval, so only a wake-up explains it


def test_jobs_added_on_this_host_start_without_waiting_for_a_poll(dsn, q, rec, pools):
    pool = pools(dsn, workers=2, fetch_limit=1, **SLOW_POLL)
    first = q.add(Priority.MEDIUM, "record", rec, "first")
    wait_for(lambda: q.get(first).state is JobState.DONE, timeout=30.0, what="the pool to start and run a job")

    ids = [first]
    for n, priority in enumerate([Priority.MEDIUM, Priority.HIGH, Priority.LOW, Priority.CRITICAL] * 3):
        ids.append(q.add(priority, "record", rec, n))
        wait_for(lambda: len(events(rec, "end")) == len(ids), timeout=WAKE_WAIT, what=f"job {n} to run")

    assert Counter(r["id"] for r in events(rec, "end")) == {job_id: 1 for job_id in ids}
    assert pool.stop() == 0
    assert all(q.get(job_id).state is JobState.DONE for job_id in ids)


def test_a_master_woken_by_every_add_keeps_its_heartbeat(dsn, q, rec, pools):
    pool = pools(dsn, workers=2, fetch_limit=1, poll_interval=60.0, heartbeat_interval=0.2, lease=2.0)
    wait_for(lambda: any(p.role == "master" for p in q.backend.processes()), what="the master to register")

    heartbeats = set()
    ids = []
    stream_until = time.monotonic() + 3.0  # longer than the lease: a starved heartbeat would be declared dead
    while time.monotonic() < stream_until:
        ids.append(q.add(Priority.MEDIUM, "record", rec, len(ids)))
        heartbeats.update(p.heartbeat for p in q.backend.processes() if p.role == "master")
        time.sleep(0.005)
    wait_for(lambda: all_done(q, ids), what="every job of the stream to run")

    assert len(heartbeats) >= 3, heartbeats  # it kept beating while the wake-ups kept coming
    assert Counter(r["id"] for r in events(rec, "start")) == {job_id: 1 for job_id in ids}
    assert_no_overlap(rec)
    assert pool.stop() == 0
    assert "declared dead" not in pool.log()
    assert all(q.get(job_id).state is JobState.DONE for job_id in ids)



def test_a_busy_master_sees_a_job_added_without_a_wake_up_within_a_poll_interval(dsn, q, rec, pools):
    """A busy master plans from its own copy of the counts between reads; a job nobody woke it for
    (another host's producer, here the caller's own transaction) must be seen at the next read, a
    poll interval later, not only when the copy runs out (NEGLIGIBLE jobs go one per child, so a
    copy of 100 waiting lasts about 100 of them, 2.5 s here)."""
    from tests.test_queue import raw_connect

    pool = pools(dsn, workers=2, fetch_limit=50, poll_interval=0.2)
    backlog = q.add_many([(Priority.NEGLIGIBLE, "record", rec, n, 0.05) for n in range(300)])
    wait_for(lambda: len(events(rec, "start")) >= 10, timeout=30.0, what="the backlog to start")
    conn = raw_connect(dsn)
    try:
        urgent = q.add(Priority.HIGH, "record", rec, "urgent", connection=conn)
        conn.commit()
    finally:
        conn.close()
    started_before = len(events(rec, "start"))
    wait_for(lambda: q.get(urgent).state is JobState.DONE, timeout=30.0, what="the HIGH job to run")
    position = [r["n"] for r in events(rec, "start")].index("urgent")
    # A poll interval is about 8 jobs here (2 workers, 50 ms each); a stale copy would be 100.
    assert position - started_before < 40, (started_before, position)
    wait_for(lambda: all_done(q, backlog), timeout=60.0, what="the backlog to finish")
    assert pool.stop() == 0


class _RecordingCursor:
    """A backend's cursor that keeps the text of every statement it runs."""

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor
        self.statements: list[str] = []

    def execute(self, query: str, *args: Any) -> Any:
        self.statements.append(query)
        return self._cursor.execute(query, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


def test_an_idle_masters_claim_of_the_job_just_added_runs_the_same_statements_every_time(dsn, q):
    """The claim on the path from add() to the job's start: one fixed text per statement (SQLite
    prepares each once per connection; an id inlined in it would be a new statement to prepare at
    every claim), and it claims exactly the job added, for the child it names."""
    backend = q.backend
    host = "latency-path"
    backend.register_master(host, os.getpid(), 2, backend.server_now())
    connection = backend.connection
    real = connection.cursor_ready()
    texts = []
    try:
        for n, pid in enumerate((4101, 4102, 4103)):
            job_id = q.add(Priority.HIGH, "record", "claim", n)
            now = backend.server_now()
            recording = connection._cursor = _RecordingCursor(real)
            batches = backend.claim([0, 1, 0, 0, 0], [pid], host, 1, now)
            connection._cursor = real
            assert [(batch.pid, [job.id for job in batch.jobs]) for batch in batches] == [(pid, [job_id])]
            assert q.get(job_id).state is JobState.RUNNING
            texts.append(recording.statements)
    finally:
        connection._cursor = real
        backend.unregister(host, os.getpid())
    # The first claim also looks up this master's host number, once.
    assert texts[1] == texts[2] and texts[0][-len(texts[1]):] == texts[1], texts
    assert sum(1 for text in texts[1] if text.lstrip().upper().startswith("UPDATE")) == 1
