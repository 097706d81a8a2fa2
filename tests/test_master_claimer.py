"""The master's claims and completions on real databases, in-process (no pool, no children).

On MariaDB a big claim is split over two connections and the finishing outcomes are written on the
Completer's own connection beside it; on SQLite everything is one transaction. Either way the
claim takes exactly the oldest jobs, each once, one batch of one priority per child, and every
outcome is written once.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from fastsched.backends import open_backend
from fastsched.backends.base import Backend
from fastsched.batching import sizing_of
from fastsched.errors import DatabaseUnavailable
from fastsched.jobs import JobState, Outcomes, Retry
from fastsched.master.claimer import SPLIT_MIN_JOBS, Claimer, split_claim
from fastsched.master.completer import BESIDE_MIN_JOBS, Completer
from fastsched.master.dblink import DbLink
from fastsched.master.metrics import DbKind, PoolMetrics
from tests.test_backend_contract import HOST, NOW, SECOND, new_job

FETCH_100 = sizing_of(100)  # a fixed fetch limit of 100: Friendica's rule, LOW and NEGLIGIBLE one by one


def fixed(fetch_limit: int) -> list[int]:
    """The batch sizes per rank of a fixed fetch limit."""
    return list(sizing_of(fetch_limit).sizes)


@pytest.fixture
def backend(dsn: str) -> Iterator[Backend]:
    b = open_backend(dsn)
    b.register_master(HOST, 1, 4, NOW)
    yield b
    b.close()


def parts(backend: Backend) -> tuple[DbLink, Completer, Claimer, PoolMetrics]:
    metrics = PoolMetrics()
    link = DbLink(lambda: backend, metrics, 30.0, time.monotonic)
    lanes = backend.concurrent_connections
    completer = Completer(link, HOST, lambda: NOW + SECOND, backend.open_sibling() if lanes > 1 else None)
    return link, completer, Claimer(link, HOST, lanes), metrics


def test_split_claim_deals_the_batches_to_the_connections_in_turn() -> None:
    assert split_claim([0, 30, 100, 0, 0], [1, 2, 3], fixed(100), 2) == [([0, 30, 0, 0, 0], [1]), ([0, 0, 100, 0, 0], [2])]
    assert split_claim([0, 0, 300, 0, 0], [1, 2, 3], fixed(100), 2) == [([0, 0, 200, 0, 0], [1, 3]), ([0, 0, 100, 0, 0], [2])]
    assert split_claim([0, 0, 10, 0, 0], [1, 2], fixed(5), 2) == []  # too few jobs to pay for a connection
    assert split_claim([0, 0, SPLIT_MIN_JOBS, 0, 0], [1], fixed(100), 2) == []  # a single batch
    assert split_claim([0, 0, 300, 0, 0], [1, 2, 3, 4], fixed(100), 1) == []  # one writer at a time
    # LOW and NEGLIGIBLE go one at a time: 70 children of NEGLIGIBLE are 70 batches.
    low = split_claim([0, 0, 0, 0, 70], list(range(70)), fixed(100), 2)
    assert [sum(w) for w, _ in low] == [35, 35] and [len(c) for _, c in low] == [35, 35]


def test_a_big_claim_with_outcomes_takes_the_oldest_jobs_once_each(backend: Backend) -> None:
    _link, completer, claimer, metrics = parts(backend)
    medium = backend.add_many([new_job("m", i, created=NOW + i * SECOND / 1000) for i in range(400)])
    high = backend.add_many([new_job("h", i, priority=20) for i in range(30)])
    first = claimer.claim([0, 30, 100, 0, 0], [5, 6], FETCH_100, NOW + SECOND, completer.for_claim(NOW + SECOND))
    done = [job.id for batch in first for job in batch.jobs]
    assert sorted(done) == sorted(high + medium[:100])
    assert len(done) >= BESIDE_MIN_JOBS
    completer.add(Outcomes(done=done), rank=2)
    writes = completer.for_claim(NOW + SECOND)
    assert (writes.beside is not None) == (backend.concurrent_connections > 1)
    batches = claimer.claim([0, 0, 300, 0, 0], [1, 2, 3, 4], FETCH_100, NOW + SECOND, writes)
    completer.after_claim(writes, ok=True)
    assert not completer and completer.finished_ranks == []
    assert sorted(b.pid for b in batches) == [1, 2, 3]
    claimed = [job.id for batch in batches for job in batch.jobs]
    assert sorted(claimed) == medium[100:400]  # the oldest waiting, none twice
    for batch in batches:
        assert len(batch.jobs) == 100 and {job.priority for job in batch.jobs} == {30}
        got = backend.get(batch.jobs[0].id, NOW + SECOND)
        assert (got.state, got.pid, got.host) == (JobState.RUNNING, batch.pid, HOST)
    assert all(backend.get(i, NOW + SECOND).state is JobState.DONE for i in done)
    assert metrics.db_seconds_by_kind[DbKind.CLAIM] > 0 and metrics.claims == 0  # the pool counts claims
    claimer.close()
    completer.close()


def test_retries_and_releases_go_into_the_claims_own_transaction_so_it_can_take_them(backend: Backend) -> None:
    _link, completer, claimer, _ = parts(backend)
    retry, released = backend.add_many([new_job("r"), new_job("x")])
    (_batch,) = claimer.claim([0, 0, 2, 0, 0], [9], FETCH_100, NOW, completer.for_claim(NOW))
    completer.add(Outcomes(retry=[Retry(retry, NOW, 30, 1, 0, "boom")], released=[released]), rank=2)
    writes = completer.for_claim(NOW + SECOND)
    assert writes.in_claim is not None and writes.beside is None
    again = claimer.claim([0, 0, 5, 0, 0], [10], FETCH_100, NOW + SECOND, writes)
    completer.after_claim(writes, ok=True)
    assert sorted(job.id for b in again for job in b.jobs) == sorted([retry, released])
    assert backend.get(retry, NOW + SECOND).retrial == 1


def test_outcomes_a_failed_write_took_stay_in_front_of_newer_ones(backend: Backend) -> None:
    link, completer, _, metrics = parts(backend)
    first, second = backend.add_many([new_job("a"), new_job("b")])
    backend.claim([0, 0, 2, 0, 0], [9], HOST, 2, NOW)
    real = backend.write_outcomes
    calls: list[Outcomes] = []

    def broken(host: str, now: Any, outcomes: Outcomes) -> None:
        calls.append(outcomes)
        raise DatabaseUnavailable("the server has gone away")

    backend.write_outcomes = broken  # type: ignore[method-assign]
    completer.add(Outcomes(done=[first]), rank=2)
    assert completer.write() is False and link.down and metrics.db_errors == 1
    completer.add(Outcomes(done=[second]), rank=2)
    assert len(completer) == 2 and completer.finished_ranks == [2, 2]
    backend.write_outcomes = real  # type: ignore[method-assign]
    assert completer.write() is True
    assert not completer and completer.finished_ranks == []
    assert [backend.get(i, NOW).state for i in (first, second)] == [JobState.DONE] * 2
    writes = completer.for_claim(NOW)
    completer.after_claim(writes, ok=False)  # nothing taken, nothing put back
    assert not completer
    assert not completer.take()


def test_a_claim_part_that_fails_fails_the_claim_and_no_thread_outlives_it(mysql_dsn: str) -> None:
    """MariaDB only: SQLite claims on one connection, so there is no second part to fail."""
    backend = open_backend(mysql_dsn)
    backend.register_master(HOST, 1, 4, NOW)
    link, completer, claimer, _ = parts(backend)
    backend.add_many([new_job("m", i) for i in range(300)])
    sibling = claimer.lane(0)  # the test breaks the second connection on purpose

    def broken(*args: Any) -> Any:
        raise DatabaseUnavailable("lost connection during query")

    sibling.claim = broken
    before = threading.active_count()
    writes = completer.for_claim(NOW)
    with pytest.raises(DatabaseUnavailable):
        claimer.claim([0, 0, 300, 0, 0], [1, 2, 3], FETCH_100, NOW, writes)
    assert threading.active_count() == before and link.down
    backend.close()
