"""Batches sized by time and batches claimed ahead (prefetch), on real pools against real databases.

What a batch held is read from the rows: a job's ``executed`` is its claim's time and ``pid`` its
child, so the jobs of one batch share both. The ``census`` task (tests/pooljobs.py) records, from
inside a job, how many rows its child holds claimed: its own batch, and a batch sent ahead of it.
Budgets are set large where a test needs a batch to hold several jobs, so that no outcome depends
on how fast this machine runs them.
"""
from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path

from fastsched import explain
from fastsched.jobs import JobState
from fastsched.priority import Priority
from tests.test_pool import events, pools, q, rec, records, wait_for  # noqa: F401 - fixtures

LARGE_BUDGET_MS = 10_000.0  # a batch of quick jobs is then cut by the fetch limit, never by time


def censuses(path: str) -> list[dict[str, object]]:
    return [r for r in records(path) if r["event"] == "census"]


def batches_of(q, ids):
    """{(claim time, child): [job ids]} of done jobs: one entry per batch."""
    found: dict[tuple[object, int], list[int]] = {}
    for job_id in ids:
        job = q.get(job_id)
        found.setdefault((job.executed, job.pid), []).append(job_id)
    return found


def test_a_command_never_seen_goes_alone_then_its_batches_grow(dsn, q, rec, pools):
    ids = q.add_many([(Priority.MEDIUM, "census", rec, dsn, n) for n in range(30)])
    pool = pools(dsn, workers=1, fetch_limit=1000, batch_budget_ms=LARGE_BUDGET_MS)
    wait_for(lambda: len(censuses(rec)) == 30, timeout=60.0, what="every job to run")
    seen = censuses(rec)
    assert seen[0]["n"] == 0 and seen[0]["claimed"] == 1  # nothing known of census: one job
    assert max(r["claimed"] for r in seen) > 1  # once it had run, the next batches took more
    assert pool.stop() == 0
    assert {q.get(i).state for i in ids} == {JobState.DONE}


def test_a_slow_command_goes_one_at_a_time_and_quick_ones_batch_behind_it(dsn, q, rec, pools):
    # The default budget (20 ms) and a 0.3 s command: over the budget, so alone in every batch.
    slow = q.add_many([(Priority.MEDIUM, "record", rec, f"slow{n}", 0.3) for n in range(4)])
    pool = pools(dsn, workers=1, fetch_limit=1000)
    wait_for(lambda: len(events(rec, "end")) == 4, timeout=60.0, what="the slow jobs")
    assert all(len(batch) == 1 for batch in batches_of(q, slow).values())
    assert pool.stop() == 0


def test_ten_thousand_quick_jobs_go_in_a_handful_of_claims(dsn, q, pools):
    ids = q.add_many([(Priority.NEGLIGIBLE, "noop", "quick", n) for n in range(10_000)])
    pool = pools(dsn, workers=2, fetch_limit=1000, batch_budget_ms=LARGE_BUDGET_MS, until_empty=True)
    assert pool.wait(120) == 0
    batches = batches_of(q, ids)
    assert sum(len(b) for b in batches.values()) == 10_000
    # NEGLIGIBLE batches too (Friendica hands them out one by one): the first of a command never seen
    # alone, then up to the fetch limit each.
    assert len(batches) <= 30, sorted(len(b) for b in batches.values())
    assert max(len(b) for b in batches.values()) == 1000


def test_shares_count_workers_not_jobs(dsn, q, pools):
    """Two priorities, two workers, quick jobs in big batches: while both wait, each holds one
    worker (the starvation guard), however many jobs a batch of the other holds."""
    ids = q.add_many([(Priority.HIGH, "noop", "h", n) for n in range(3000)])
    ids += q.add_many([(Priority.NEGLIGIBLE, "noop", "n", n) for n in range(3000)])
    pool = pools(dsn, workers=2, fetch_limit=200, batch_budget_ms=LARGE_BUDGET_MS, until_empty=True)
    assert pool.wait(120) == 0
    batches = batches_of(q, ids)
    priority_of = {job_id: q.get(job_id).priority for job_id in ids}
    children = Counter(pid for _, pid in batches)
    assert len(children) == 2
    claimed_at = {p: [at for (at, _), jobs in batches.items() if priority_of[jobs[0]] == p]
                  for p in (Priority.HIGH, Priority.NEGLIGIBLE)}
    # NEGLIGIBLE got a worker while HIGH still waited: HIGH's batches of many jobs counted as one worker.
    assert min(claimed_at[Priority.NEGLIGIBLE]) < max(claimed_at[Priority.HIGH])


def _warm(q, rec: str, dsn: str) -> None:
    """One census job, so that the pool knows how long one runs (a batch of a command never seen
    is never expected to end, so nothing is prefetched behind it)."""
    first = q.add(Priority.MEDIUM, "census", rec, dsn, "warm")
    wait_for(lambda: q.get(first).state is JobState.DONE, timeout=30.0, what="the first census job")


def test_a_prefetched_batch_is_its_childs_claim_and_is_released_when_the_child_dies(dsn, q, rec, pools, tmp_path: Path):
    pool = pools(dsn, workers=1, fetch_limit=1000, batch_budget_ms=LARGE_BUDGET_MS)
    _warm(q, rec, dsn)
    # The census job waits until its child holds 2 rows: its own and the next batch, claimed ahead
    # while it runs; then it hangs (until a file that never comes) and its child is killed.
    holder, ahead = q.add_many([(Priority.MEDIUM, "census", rec, dsn, "holder", 2, 0, str(tmp_path / "never")),
                                (Priority.MEDIUM, "record", rec, "ahead")])
    wait_for(lambda: any(r["n"] == "holder" for r in censuses(rec)), timeout=30.0, what="the batch sent ahead")
    (seen,) = [r for r in censuses(rec) if r["n"] == "holder"]
    assert seen["claimed"] == 2
    job = q.get(ahead)
    assert job.state is JobState.RUNNING and job.pid == seen["pid"]  # claimed by that child, fenced as its own
    told = explain.explain(q.backend, ahead)
    assert told["prefetched"] is True and "prefetched batch" in " ".join(told["lines"])

    os.kill(int(seen["pid"]), signal.SIGKILL)
    wait_for(lambda: q.get(ahead).state is JobState.DONE, timeout=30.0, what="the prefetched job to run after all")
    job = q.get(ahead)
    assert job.crashes == 0 and job.retrial == 0  # released, not a crash: it never started
    assert q.get(holder).crashes == 1  # the job that was running crashed
    assert [r["n"] for r in events(rec, "start")].count("ahead") == 1
    pool.close()


def test_a_stop_releases_a_prefetched_batch_unstarted(dsn, q, rec, pools, tmp_path: Path):
    pool = pools(dsn, workers=1, fetch_limit=1000, batch_budget_ms=LARGE_BUDGET_MS)
    _warm(q, rec, dsn)
    go = tmp_path / "go"
    holder, ahead = q.add_many([(Priority.MEDIUM, "census", rec, dsn, "holder", 2, 0, str(go)),
                                (Priority.MEDIUM, "record", rec, "ahead")])
    wait_for(lambda: any(r["n"] == "holder" for r in censuses(rec)), timeout=30.0, what="the batch sent ahead")
    assert q.get(ahead).state is JobState.RUNNING
    pool.signal(signal.SIGTERM)
    go.touch()  # the running job may finish now; the one sent ahead must not start
    assert pool.wait(30) == 0
    assert q.get(holder).state is JobState.DONE
    job = q.get(ahead)
    assert job.state is JobState.WAITING and job.pid == 0 and job.crashes == 0 and job.retrial == 0
    assert "ahead" not in [r["n"] for r in events(rec, "start")]
    assert q.backend.processes() == []


def test_critical_work_takes_the_place_of_a_prefetched_batch(dsn, q, rec, pools, tmp_path: Path):
    """One worker runs a MEDIUM job; a NEGLIGIBLE batch is claimed ahead for it. CRITICAL work added
    then must not wait behind that batch: the master takes it back and gives the child the CRITICAL
    job instead, which starts as soon as the running job ends."""
    pool = pools(dsn, workers=1, fetch_limit=1000, batch_budget_ms=LARGE_BUDGET_MS)
    _warm(q, rec, dsn)
    go = tmp_path / "go"
    # The census job runs first (MEDIUM); it waits until its child holds 2 rows (its own, the
    # NEGLIGIBLE one sent ahead), records, then waits for the file.
    _, low = q.add_many([(Priority.MEDIUM, "census", rec, dsn, "holder", 2, 0, str(go)),
                         (Priority.NEGLIGIBLE, "record", rec, "negligible")])
    wait_for(lambda: any(r["n"] == "holder" for r in censuses(rec)), timeout=30.0, what="the batch sent ahead")
    (seen,) = [r for r in censuses(rec) if r["n"] == "holder"]
    assert q.get(low).state is JobState.RUNNING and q.get(low).pid == seen["pid"]  # claimed ahead
    critical = q.add(Priority.CRITICAL, "record", rec, "critical")
    # No child is free: only by taking the NEGLIGIBLE batch back can the CRITICAL job be claimed now.
    wait_for(lambda: q.get(critical).pid == seen["pid"], timeout=30.0, what="the CRITICAL job claimed ahead")
    go.touch()
    wait_for(lambda: q.get(critical).state is JobState.DONE and q.get(low).state is JobState.DONE,
             timeout=30.0, what="both jobs to run")
    order = [r["n"] for r in events(rec, "start")]
    assert order.index("critical") < order.index("negligible"), order
    job = q.get(low)
    assert job.crashes == 0 and job.retrial == 0 and order.count("negligible") == 1
    assert pool.stop() == 0
