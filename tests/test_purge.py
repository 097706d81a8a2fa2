"""The retention purge: what a pool's maintenance run deletes, and that it keeps up with a backlog.

Each test runs on SQLite and MariaDB (the ``dsn`` fixture). Rows are written through the backend
with explicit times, then the pool's maintenance run is called with a clock of our own: no
process is forked, and nothing here depends on how fast the machine is.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from fastsched.backends import open_backend
from fastsched.backends.base import Backend
from fastsched.config import PoolSettings
from fastsched.dsn import parse_dsn
from fastsched.errors import JobNotFound
from fastsched.jobs import Failure, JobState, NewJob, Outcomes
from fastsched.master import duties
from fastsched.master.dblink import DbLink
from fastsched.master.metrics import PoolMetrics

NOW = dt.datetime(2030, 1, 2, 3, 4, 5, 678901)
HOUR = dt.timedelta(hours=1)
MINUTE = dt.timedelta(minutes=1)
HOST = "purge-host"
RETENTION = 3600.0


@pytest.fixture
def backend(dsn: str) -> Iterator[Backend]:
    b = open_backend(dsn)
    b.register_master(HOST, 1, 1, NOW)
    yield b
    b.close()


SETTINGS_INTERVAL = 5.0  # maintenance_interval


def maintenance(dsn: str, backend: Backend) -> duties.Maintenance:
    """The pool's maintenance duty on ``backend``, with a wall clock fixed at NOW."""
    settings = PoolSettings(
        dsn=parse_dsn(dsn), workers=1, host_id=HOST, retention=RETENTION, maintenance_interval=SETTINGS_INTERVAL
    )
    link = DbLink(lambda: backend, PoolMetrics(), settings.lease, mono=lambda: 0.0)
    return duties.Maintenance(link, settings, wall=lambda: NOW, mono=_Ticks(), stopping=lambda: False)


class _Ticks:
    """A monotonic clock that moves 1 ms each time it is read (the purge measures its budget)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.001
        return self.now


def add(backend: Backend, count: int, created: dt.datetime) -> list[int]:
    start = add.counter  # type: ignore[attr-defined]
    add.counter += count  # type: ignore[attr-defined]
    jobs = [NewJob("Cmd", f"[{start + n}]", 30, created, created, None, False) for n in range(count)]
    return list(backend.add_many(jobs))


add.counter = 0  # type: ignore[attr-defined]


def finish(backend: Backend, ids: list[int], at: dt.datetime, *, failed: bool = False) -> None:
    """Finish these jobs at ``at``; every other pending job is claimed too, and handed back."""
    wanted = set(ids)
    claimed: list[int] = []
    while not wanted <= set(claimed):
        batches = backend.claim([0, 0, 1000, 0, 0], [7], HOST, 1000, NOW + 24 * HOUR)
        assert batches, "these jobs are not pending"
        claimed.extend(job.id for batch in batches for job in batch.jobs)
    others = [job_id for job_id in claimed if job_id not in wanted]
    if failed:
        outcomes = Outcomes(failed=[Failure(job_id, 0, 0, "boom") for job_id in ids], released=others)
    else:
        outcomes = Outcomes(done=list(ids), released=others)
    backend.write_outcomes(HOST, at, outcomes)


def state(backend: Backend, job_id: int) -> JobState | None:
    try:
        return backend.get(job_id, NOW).state
    except JobNotFound:  # purged
        return None


def test_a_maintenance_run_purges_every_done_job_past_the_retention_and_nothing_else(
    dsn: str, backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(duties, "PURGE_CHUNK", 4)  # several chunks in one run
    monkeypatch.setattr(duties, "PURGE_BUDGET", 3600.0)
    long_ago = NOW - 3 * HOUR
    # In id order: old done jobs, a job added long ago but finished just now (a small id that must
    # stay), more old done jobs, an old failure, then jobs added and finished within the retention.
    old_a = add(backend, 9, long_ago)
    late = add(backend, 1, long_ago)
    old_b = add(backend, 6, long_ago)
    failed = add(backend, 2, long_ago)
    young = add(backend, 5, NOW - 30 * MINUTE)
    pending = add(backend, 3, NOW - 2 * HOUR)  # waiting (even long) is not done: never purged
    finish(backend, old_a + old_b, long_ago + MINUTE)
    finish(backend, failed, long_ago + MINUTE, failed=True)
    finish(backend, late, NOW - MINUTE)
    finish(backend, young, NOW - 20 * MINUTE)
    just_old = add(backend, 2, NOW - 2 * HOUR)
    finish(backend, just_old, NOW - HOUR - dt.timedelta(microseconds=1))
    just_young = add(backend, 2, NOW - 2 * HOUR)
    finish(backend, just_young, NOW - HOUR)  # finished exactly at the cutoff: kept

    maintenance(dsn, backend).run(0.0)

    assert [state(backend, i) for i in old_a + old_b + just_old] == [None] * 17
    assert [state(backend, i) for i in late + young + just_young] == [JobState.DONE] * 8
    assert [state(backend, i) for i in failed] == [JobState.FAILED] * 2
    assert [state(backend, i) for i in pending] == [JobState.WAITING] * 3


def test_a_backlog_of_many_chunks_is_purged_in_one_run_within_its_budget(
    dsn: str, backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(duties, "PURGE_CHUNK", 10)
    monkeypatch.setattr(duties, "PURGE_BUDGET", 3600.0)
    old = add(backend, 95, NOW - 3 * HOUR)
    finish(backend, old, NOW - 2 * HOUR)
    kept = add(backend, 3, NOW - MINUTE)
    finish(backend, kept, NOW)
    m = maintenance(dsn, backend)

    m.run(100.0)

    assert [state(backend, i) for i in old].count(None) == 95
    assert [state(backend, i) for i in kept] == [JobState.DONE] * 3
    assert m.next_due() == 100.0 + SETTINGS_INTERVAL  # caught up: nothing brought forward


def test_a_backlog_past_the_budget_goes_on_before_the_next_interval(
    dsn: str, backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(duties, "PURGE_CHUNK", 10)
    monkeypatch.setattr(duties, "PURGE_BUDGET", 0.0)  # every run stops after its first chunk
    failed = add(backend, 15, NOW - 3 * HOUR)  # rows the purge keeps, ahead of the ones it deletes
    finish(backend, failed, NOW - 3 * HOUR, failed=True)
    old = add(backend, 35, NOW - 3 * HOUR)
    finish(backend, old, NOW - 2 * HOUR)
    m = maintenance(dsn, backend)

    left = []
    for _ in range(5):
        m.run(100.0)
        left.append([state(backend, i) for i in old].count(JobState.DONE))
        if m.next_due() == 100.0 + SETTINGS_INTERVAL:
            break
        assert m.next_due() < 100.0 + 1  # brought forward: the backlog does not wait an interval
    assert left == [25, 15, 5, 0]
    assert [state(backend, i) for i in failed] == [JobState.FAILED] * 15


def test_a_purge_in_chunks_deletes_the_old_rows_among_kept_ones_and_resumes(backend: Backend) -> None:
    # Windows of rows that stay (failures, pending jobs, young done jobs) between old done rows: a
    # chunk stops at its limit in the middle of a window, and the next goes on from there.
    ids = []
    for _ in range(3):
        old = add(backend, 1500, NOW - 3 * HOUR)
        finish(backend, old, NOW - 2 * HOUR)
        kept = add(backend, 1200, NOW - 3 * HOUR)
        finish(backend, kept[:400], NOW - 2 * HOUR, failed=True)
        finish(backend, kept[400:800], NOW - MINUTE)
        ids += old
    cutoff = NOW - HOUR
    counts = [backend.purge(cutoff, limit=1000) for _ in range(6)]
    assert counts == [1000, 1000, 1000, 1000, 500, 0]
    assert all(state(backend, i) is None for i in ids[::97])
    assert backend.purge(cutoff, include_failed=True, limit=10_000) == 1200
    assert backend.purge(NOW, limit=10_000) == 1200  # the young ones, once the cutoff passes them


def test_a_deep_backlog_that_must_stay_costs_each_run_a_slice_and_the_walk_goes_on_next_run(
    dsn: str, backend: Backend
) -> None:
    """3,000 jobs pending since before the cutoff, then 50 done jobs past the retention: a purge
    call reads about ``max_scan`` rows and stops; the next goes on from there, so the old done
    rows behind the backlog are found over a few calls, each as cheap as the first."""
    add(backend, 3000, NOW - 5 * HOUR)  # pending: kept, and read by every walk that starts over
    done = add(backend, 50, NOW - 3 * HOUR)
    finish(backend, done, NOW - 2 * HOUR)
    cutoff = NOW - HOUR
    calls = [backend.purge(cutoff, limit=100, max_scan=1000) for _ in range(5)]
    assert calls[:3] == [0, 0, 0]  # one window of the backlog each
    assert calls[3] == 50 and calls[4] == 0
    assert all(state(backend, job_id) is None for job_id in done)
