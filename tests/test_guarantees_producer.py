"""A producer must never stall the pool (issue 11, item 9), on the real MariaDB.

``add(..., connection=app)`` of a duplicate of a running job, inside an application transaction
that stays open: the master's completion write of that job must not wait for the application to
commit (the upsert used to X-lock the running job's row until then, which stopped the master's
loop and let its watchdog kill every running job).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from faultkit import connect_raw, sql

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
