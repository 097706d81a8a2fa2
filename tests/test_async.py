"""await q.add_async(...) / add_many_async(...): add and add_many for asyncio code, under a running
loop with many concurrent callers, on MariaDB and SQLite. The loop runs on while the database is
slow: shown by holding the table's write lock from another connection, not by timing."""
from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from typing import Any

import pymysql
import pytest

import fastsched
import fastsched.queue
from fastsched.dsn import parse_dsn
from fastsched.errors import InvalidInput, JobNotFound


@pytest.fixture
def q(dsn: str) -> Iterator[fastsched.Queue]:
    with fastsched.connect(dsn) as queue:
        yield queue


def all_jobs(q: fastsched.Queue) -> list[tuple[str, list[object]]]:
    rows = q.backend._transaction(
        lambda c: (c.execute("SELECT id FROM workerqueue ORDER BY id"), c.fetchall())[1], "test", write=False
    )
    return [(q.get(row[0]).command, q.get(row[0]).args) for row in rows]


def test_many_concurrent_callers_get_the_ids_add_would_give(q: fastsched.Queue) -> None:
    async def main() -> tuple[list[int], list[list[int]]]:
        singles = [q.add_async(30, "Notify", n % 100) for n in range(200)]  # each job asked for twice
        batches = [q.add_many_async([(20, "Batch", b, i) for i in range(50)]) for b in range(8)]
        results = await asyncio.gather(*singles, *batches)
        return list(results[:200]), list(results[200:])

    singles, batches = asyncio.run(main())
    for n in range(100):
        assert singles[n] == singles[n + 100]  # dedup: the second caller got the first one's job
        assert q.get(singles[n]).args == [n]
    assert len(set(singles)) == 100
    for b, ids in enumerate(batches):
        assert [q.get(i).args for i in ids] == [[b, i] for i in range(50)]
        assert ids == sorted(ids)  # FIFO within a call
    assert len(all_jobs(q)) == 100 + 8 * 50
    assert q.add(30, "Notify", 7) == singles[7]  # and the synchronous path agrees


def test_errors_are_those_of_add_and_nothing_is_stored(q: fastsched.Queue) -> None:
    async def main() -> None:
        with pytest.raises(InvalidInput, match="command must not be empty"):
            await q.add_async(30, "")
        with pytest.raises(InvalidInput, match=r"jobs\[1\]: .*priority"):
            await q.add_many_async([(30, "Fine"), (99, "BadPriority")])
        with pytest.raises(InvalidInput, match="jobs must be an iterable of tuples"):
            await q.add_many_async("not jobs")
        with pytest.raises(InvalidInput, match="connection must be"):
            await q.add_async(30, "Cmd", connection=object())

    asyncio.run(main())
    assert all_jobs(q) == []


class WriteLock:
    """Another connection holding the job table's write lock, as a long transaction would."""

    def __init__(self, dsn: str) -> None:
        d = parse_dsn(dsn)
        self.mysql = d.dialect == "mysql"
        if self.mysql:
            self.conn: Any = pymysql.connect(
                host=d.host, port=d.port, user=d.user, password=d.password, database=d.database, autocommit=True
            )
            self.conn.cursor().execute("LOCK TABLES workerqueue WRITE")
        else:
            self.conn = sqlite3.connect(d.database, isolation_level=None)
            self.conn.execute("BEGIN IMMEDIATE")

    def release(self) -> None:
        if self.mysql:
            self.conn.cursor().execute("UNLOCK TABLES")
        else:
            self.conn.execute("ROLLBACK")
        self.conn.close()


def test_the_loop_runs_on_while_the_database_makes_the_add_wait(q: fastsched.Queue, dsn: str) -> None:
    async def main() -> tuple[int, list[int], int]:
        lock = WriteLock(dsn)
        try:
            single = asyncio.create_task(q.add_async(30, "Blocked", 1))
            many = asyncio.create_task(q.add_many_async([(30, "Blocked", i) for i in range(2, 5)]))
            ticks = 0
            for _ in range(50):  # other coroutines keep running: the loop is not stuck in the insert
                await asyncio.sleep(0.002)
                ticks += 1
            assert not single.done() and not many.done()  # held up by the lock, not finished early
        finally:
            lock.release()
        return await single, await many, ticks

    single, many, ticks = asyncio.run(main())
    assert ticks == 50
    assert [q.get(i).args for i in [single, *many]] == [[1], [2], [3], [4]]


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
def test_on_the_callers_connection_the_job_follows_its_transaction(
    q: fastsched.Queue, dsn: str, outcome: str
) -> None:
    d = parse_dsn(dsn)
    if d.dialect == "mysql":
        conn: Any = pymysql.connect(host=d.host, port=d.port, user=d.user, password=d.password, database=d.database)
    else:
        conn = sqlite3.connect(d.database, check_same_thread=False)  # it is used from a worker thread

    async def main() -> list[int]:
        first = await q.add_async(30, "InTx", 1, connection=conn)
        return [first, *(await q.add_many_async([(30, "InTx", 2), (30, "InTx", 1)], connection=conn))]

    try:
        ids = asyncio.run(main())
        getattr(conn, outcome)()
    finally:
        conn.close()
    assert ids[0] == ids[2]
    if outcome == "commit":
        assert [q.get(i).args for i in ids] == [[1], [2], [1]]
    else:
        for job_id in ids:
            with pytest.raises(JobNotFound):
                q.get(job_id)


def test_the_module_functions_use_the_default_queue(dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTSCHED_DSN", dsn)
    fastsched.queue.reset_default()
    try:
        async def main() -> tuple[int, list[int]]:
            return await fastsched.add_async(30, "Default", 1), await fastsched.add_many_async([(30, "Default", 2)])

        one, many = asyncio.run(main())
        assert fastsched.get(one).args == [1] and fastsched.get(many[0]).args == [2]
    finally:
        fastsched.queue.reset_default()


def test_a_closed_queue_adds_again_and_each_loop_may_use_it(q: fastsched.Queue) -> None:
    first = asyncio.run(q.add_async(30, "Again", 1))
    q.close()  # waits for nothing (no call is under way), closes the threads' connections
    second = asyncio.run(q.add_async(30, "Again", 2))  # a new loop, new threads
    assert [q.get(first).args, q.get(second).args] == [[1], [2]]
