"""Claims belong to one master instance (issue 11, items 1 and 2), at the storage level, on both
real backends: a registration checks for a live twin under a lock of its host id (two starts at
once cannot both pass), replaces a dead one and releases what it held; claims whose owner has no
registered master are released; each instance's claims are its own.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator

import pytest

from fastsched.backends import open_backend
from fastsched.backends.base import Backend, ProcessInfo, claim_owner, owner_host
from fastsched.dbclock import utcnow
from fastsched.errors import PoolAlreadyRunning
from fastsched.jobs import Failure, NewJob, Outcomes, Retry

HOST = "twin-host"
LEASE = dt.timedelta(seconds=30)


@pytest.fixture
def backend(dsn: str) -> Iterator[Backend]:
    b = open_backend(dsn)
    b.init_schema()
    yield b
    b.close()


def _jobs(backend: Backend, count: int) -> list[int]:
    return backend.add_many([NewJob("Cmd", f"[{i}]", 30, None, None, None, False) for i in range(count)])


def _refuse_fresh(others: list[ProcessInfo], server_now: dt.datetime) -> None:
    for info in others:
        if info.heartbeat >= server_now - LEASE:
            raise PoolAlreadyRunning(f"a pool with host id {HOST!r} is already running (pid {info.pid})")


def _claimed(backend: Backend, owner: str, count: int, child: int) -> list[int]:
    batches = backend.claim([0, 0, count, 0, 0], [child], owner, count, utcnow())
    return [job.id for batch in batches for job in batch.jobs]


def test_a_fresh_twin_is_refused_and_nothing_changes(backend: Backend) -> None:
    backend.register_master(HOST, 100, 1, None, instance="aaaa", machine="m1", check=_refuse_fresh)
    with pytest.raises(PoolAlreadyRunning, match="already running"):
        backend.register_master(HOST, 200, 1, None, instance="bbbb", machine="m2", check=_refuse_fresh)
    masters = [(p.pid, p.instance, p.machine) for p in backend.processes() if p.role == "master"]
    assert masters == [(100, "aaaa", "m1")]
    assert backend.heartbeat(HOST, 100, 1, None, "aaaa") is True
    assert backend.heartbeat(HOST, 100, 1, None, "bbbb") is False  # an instance's row, not a host's


def test_a_dead_twin_is_replaced_and_its_claims_released(backend: Backend) -> None:
    backend.register_master(HOST, 100, 1, None, instance="aaaa", machine="m1")
    _jobs(backend, 3)
    claimed = _claimed(backend, claim_owner(HOST, "aaaa"), 3, 101)
    assert len(claimed) == 3
    assert {backend.get(i, utcnow()).host for i in claimed} == {HOST}  # the host id, not the instance
    replaced, released = backend.register_master(
        HOST, 200, 1, None, instance="bbbb", machine="m1", check=lambda others, now: None
    )
    assert [(p.pid, p.instance) for p in replaced] == [(100, "aaaa")] and released == 3
    assert {backend.get(i, utcnow()).state.value for i in claimed} == {"waiting"}
    assert backend.heartbeat(HOST, 100, 1, None, "aaaa") is False


def test_claims_without_a_registered_owner_are_released_and_only_those(backend: Backend) -> None:
    backend.register_master(HOST, 100, 1, None, instance="live", machine="m1")
    _jobs(backend, 4)
    mine = _claimed(backend, claim_owner(HOST, "live"), 2, 101)
    gone = _claimed(backend, claim_owner(HOST, "gone"), 2, 102)  # an instance that unregistered
    assert backend.release_orphans() == 2
    states = {i: backend.get(i, utcnow()).state.value for i in mine + gone}
    assert [states[i] for i in mine] == ["running", "running"]
    assert [states[i] for i in gone] == ["waiting", "waiting"]
    assert backend.release_claims(claim_owner(HOST, "live")) == 2
    assert owner_host(claim_owner(HOST, "x#y")) == HOST + "#x"  # a host id may hold the mark itself


def test_two_starts_at_once_cannot_both_pass(dsn: str, backend: Backend) -> None:
    results: list[object] = []
    barrier = threading.Barrier(2)

    def start(pid: int) -> None:
        own = open_backend(dsn)
        try:
            def check(others: list[ProcessInfo], server_now: dt.datetime) -> None:
                _refuse_fresh(others, server_now)

            barrier.wait()
            own.register_master(HOST, pid, 1, None, instance=f"i{pid}", machine="m", check=check)
            results.append(pid)
        except PoolAlreadyRunning as exc:
            results.append(exc)
        finally:
            own.close()

    threads = [threading.Thread(target=start, args=(pid,)) for pid in (301, 302)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(type(r).__name__ for r in results) == ["PoolAlreadyRunning", "int"], results
    assert len([p for p in backend.processes() if p.role == "master"]) == 1


def test_late_outcomes_are_written_to_released_jobs_only(backend: Backend) -> None:
    """Item 12: a master declared dead writes what its children finished to the jobs nobody has
    claimed since; a job another master has claimed again is left to that master."""
    taken, done, failed, retried = _jobs(backend, 4)
    assert sorted(_claimed(backend, claim_owner(HOST, "dead"), 4, 101)) == [taken, done, failed, retried]
    assert backend.release_claims(claim_owner(HOST, "dead")) == 4  # declared dead: released
    assert _claimed(backend, claim_owner(HOST, "alive"), 1, 201) == [taken]  # the oldest, claimed again
    late = Outcomes(
        done=[taken, done],
        failed=[Failure(failed, 0, 0, "boom")],
        retry=[Retry(retried, utcnow() + dt.timedelta(hours=1), 30, 1, 0, "again")],
    )
    assert backend.write_released_outcomes(utcnow(), late) == 3
    states = {i: backend.get(i, utcnow()).state.value for i in (taken, done, failed, retried)}
    assert states == {taken: "running", done: "done", failed: "failed", retried: "deferred"}
    assert backend.get(failed, utcnow()).last_error == "boom"
    assert backend.write_released_outcomes(utcnow(), Outcomes(done=[done])) == 0  # done is final
