"""The fairness harness: one arrival trace, three scheduling policies, one set of metrics.

A discrete-event simulation of a pool of W workers replays a trace (arrival time, priority,
duration per job). Whenever workers are free, the policy decides which priority each free slot
serves; a slot takes a batch of that priority's oldest waiting jobs (``fetch_limit`` jobs for
CRITICAL, HIGH and MEDIUM, one for LOW and NEGLIGIBLE, as both Friendica and fastsched do) and
runs them one after the other. Decisions cost no time, so differences come from the policies.

Policies:
    quadratic  fastsched's: ``fastsched.core.plan`` for all free slots at once (it calls
               ``choose_priority`` slot by slot), limits by rank among the priorities in play.
    strict     always the highest priority with work waiting.
    seed       Friendica's ``nextPriority`` at the seed PR #6719 (friendica-worker.md §2.5),
               one free worker at a time as each seed worker fetched for itself, with its
               quirks: limits matched to the *position* of a priority among the running rows
               (sorted ascending, as MariaDB returns GROUP BY), n = max(#waiting, #running),
               and a priority with nothing waiting may be returned, in which case the seed's
               fallback claims the single best runnable job (ORDER BY priority, created LIMIT 1).

The metrics (``measure``) are computed the same way for the simulations and for a real pool run
(whose start and end times the jobs report): per phase and priority, the mean number of busy
workers (the share), wait p50/p99 (arrival to start; a job not started by the end counts with
its wait so far, a lower bound), throughput; the share over time in bins; and per priority the
longest time it had work waiting and no worker.
"""
from __future__ import annotations

import dataclasses
import heapq
import math
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from fastsched import core

PRIORITIES = (10, 20, 30, 40, 50)
NAMES = {10: "CRITICAL", 20: "HIGH", 30: "MEDIUM", 40: "LOW", 50: "NEGLIGIBLE"}


@dataclasses.dataclass
class Job:
    seq: int
    priority: int
    arrival: float  # seconds since t0
    duration: float  # seconds (nominal, for the simulation)
    start: float | None = None
    end: float | None = None


def rank(priority: int) -> int:
    return PRIORITIES.index(priority)


BatchSizes = int | list[int]
"""A fetch limit (Friendica's rule: that many jobs per batch for CRITICAL, HIGH and MEDIUM, one for
LOW and NEGLIGIBLE), or a list of batch sizes by rank for every priority alike (what fastsched's
time-sized batches give when every job runs as long: ``fastsched.batching.fit``)."""


def batch_size(priority: int, fetch_limit: BatchSizes) -> int:
    if isinstance(fetch_limit, list):
        return fetch_limit[rank(priority)]
    return fetch_limit if priority <= core.BATCHED_UP_TO else 1


# ------------------------------------------------------------------------------- policies

Policy = Callable[[list[int], list[int], int, int, BatchSizes], list[tuple[int, int]]]
"""policy(waiting_by_rank, running_by_rank, active, free_slots, fetch_limit) -> [(rank, jobs)],
one entry per slot to fill (fewer than free_slots when nothing more should start)."""


def quadratic_policy(
    waiting: list[int], running: list[int], active: int, free: int, fetch_limit: BatchSizes
) -> list[tuple[int, int]]:
    if isinstance(fetch_limit, list):
        wanted = core.plan_sized(waiting, running, active, free, fetch_limit)
    else:
        wanted = core.plan(waiting, running, active, free, fetch_limit)
    slots = []
    for r, count in enumerate(wanted):
        size = batch_size(PRIORITIES[r], fetch_limit)
        while count > 0:
            take = min(size, count)
            slots.append((r, take))
            count -= take
    return slots


def strict_policy(
    waiting: list[int], running: list[int], active: int, free: int, fetch_limit: BatchSizes
) -> list[tuple[int, int]]:
    left = list(waiting)
    slots = []
    for _ in range(free):
        r = next((r for r in range(5) if left[r] > 0), -1)
        if r < 0:
            break
        take = min(left[r], batch_size(PRIORITIES[r], fetch_limit))
        left[r] -= take
        slots.append((r, take))
    return slots


def seed_next_priority(waiting: Sequence[int], running: Sequence[int], active: int) -> int | None:
    """Friendica's nextPriority at the seed (Worker.php:798@4375edd63e), on counts by rank.

    Returns a priority (10..50) or None; it may return a priority with nothing waiting."""
    waiting_set = [PRIORITIES[r] for r in range(5) if waiting[r] > 0]
    if 10 in waiting_set:
        return 10
    # SELECT COUNT(DISTINCT pid), priority ... GROUP BY priority: only priorities with running
    # workers, in ascending order (MariaDB / MySQL <= 5.7 sort GROUP BY output).
    running_rows = [(PRIORITIES[r], running[r]) for r in range(5) if running[r] > 0]
    running_by_priority = dict(running_rows)
    for p in PRIORITIES:
        if p in waiting_set and running_by_priority.get(p, 0) == 0:
            return p
    active = max(active, sum(running))
    n = max(len(waiting_set), len(running_rows))
    total = sum(i * i for i in range(1, n + 1))
    limit = [0] * n
    for i in range(1, n + 1):
        limit[n - i] = max(1, core.round_half_up(active * i * i / total))
    for i, (p, workers) in enumerate(running_rows):  # positional: the i-th running row gets limit[i]
        if workers < limit[i]:
            return p
    if waiting_set:
        return waiting_set[0]
    return None


def seed_policy(
    waiting: list[int], running: list[int], active: int, free: int, fetch_limit: BatchSizes
) -> list[tuple[int, int]]:
    left, busy = list(waiting), list(running)
    slots = []
    for _ in range(free):  # each idle seed worker fetches for itself, one after the other
        p = seed_next_priority(left, busy, active)
        if p is None:
            break
        r = rank(p)
        if left[r] > 0:
            take = min(left[r], batch_size(p, fetch_limit))  # nextProcess: limit = fetch_limit if p <= MEDIUM
        else:
            # nextProcess found nothing: the fallback claims the best runnable job, one only.
            r = next((x for x in range(5) if left[x] > 0), -1)
            if r < 0:
                break
            take = 1
        left[r] -= take
        busy[r] += 1
        slots.append((r, take))
    return slots


POLICIES: dict[str, Policy] = {"quadratic": quadratic_policy, "strict": strict_policy, "seed": seed_policy}


# ------------------------------------------------------------------------------- simulation


def simulate(trace: Sequence[Job], policy: Policy, workers: int, fetch_limit: BatchSizes, t_end: float) -> list[Job]:
    """Replay ``trace`` (arrival order) under ``policy``; return copies with start and end set
    (None for jobs not started, or not finished, by ``t_end``)."""
    jobs = [dataclasses.replace(j, start=None, end=None) for j in sorted(trace, key=lambda j: (j.arrival, j.seq))]
    waiting: list[deque[Job]] = [deque() for _ in PRIORITIES]
    running = [0] * 5
    idle = list(range(workers))
    events: list[tuple[float, int, int, int]] = []  # (time, order, kind, data): kind 0 = worker free, 1 = arrival
    counter = 0
    for index, job in enumerate(jobs):
        events.append((job.arrival, 1, counter, index))
        counter += 1
    heapq.heapify(events)
    worker_rank = [-1] * workers

    while events:
        now = events[0][0]
        if now > t_end:
            break
        while events and events[0][0] == now:
            _, kind, _, data = heapq.heappop(events)
            if kind == 1:
                job = jobs[data]
                waiting[rank(job.priority)].append(job)
            else:
                running[worker_rank[data]] -= 1
                worker_rank[data] = -1
                idle.append(data)
        if not idle:
            continue
        counts = [len(q) for q in waiting]
        if not any(counts):
            continue
        idle.sort()
        for r, take in policy(counts, list(running), workers, len(idle), fetch_limit):
            worker = idle.pop(0)
            clock = now
            for _ in range(take):
                job = waiting[r].popleft()
                job.start = clock
                clock += job.duration
                job.end = clock
            running[r] += 1
            worker_rank[worker] = r
            heapq.heappush(events, (clock, 0, counter, worker))
            counter += 1
    for job in jobs:
        if job.start is not None and job.start > t_end:
            job.start = job.end = None
        elif job.end is not None and job.end > t_end:
            job.end = None
    return jobs


# ------------------------------------------------------------------------------- metrics


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    data = sorted(values)
    pos = (len(data) - 1) * q / 100.0
    low = math.floor(pos)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (pos - low)


def busy_seconds(job: Job, t_from: float, t_to: float, t_end: float) -> float:
    """Seconds of [t_from, t_to) during which the job ran."""
    if job.start is None:
        return 0.0
    end = job.end if job.end is not None else t_end
    return max(0.0, min(end, t_to) - max(job.start, t_from))


def measure(
    jobs: Sequence[Job], phases: Sequence[tuple[str, float, float]], t_end: float, bin_seconds: float,
    priorities: Sequence[int],
) -> dict[str, Any]:
    """Shares, waits, throughput per phase and priority; shares over time; starvation gaps."""
    by_priority = {p: [j for j in jobs if j.priority == p] for p in priorities}
    phase_stats: dict[str, dict[int, dict[str, float]]] = {}
    for name, t_from, t_to in phases:
        length = t_to - t_from
        stats = {}
        for p, group in by_priority.items():
            waits, censored = [], 0
            for j in group:
                if t_from <= j.arrival < t_to:
                    if j.start is not None:
                        waits.append(j.start - j.arrival)
                    else:
                        waits.append(t_end - j.arrival)
                        censored += 1
            stats[p] = {
                "share_workers": sum(busy_seconds(j, t_from, t_to, t_end) for j in group) / length,
                "wait_p50_ms": _percentile(waits, 50) * 1000,
                "wait_p99_ms": _percentile(waits, 99) * 1000,
                "arrived": len(waits),
                "not_started": censored,
                "jobs_per_s": sum(1 for j in group if j.end is not None and t_from <= j.end < t_to) / length,
            }
        phase_stats[name] = stats

    bins = max(1, math.ceil(t_end / bin_seconds - 1e-9))
    busy = {p: [0.0] * bins for p in priorities}
    for p, group in by_priority.items():
        row = busy[p]
        for j in group:
            if j.start is None:
                continue
            start = max(0.0, j.start)
            end = min(j.end if j.end is not None else t_end, t_end)
            b = int(start // bin_seconds)
            while start < end and b < bins:
                edge = min(end, (b + 1) * bin_seconds)
                row[b] += edge - start
                start = edge
                b += 1
    over_time = []
    for b in range(bins):
        lo, hi = b * bin_seconds, min((b + 1) * bin_seconds, t_end)
        over_time.append([lo] + [busy[p][b] / (hi - lo) for p in priorities])
    return {"phases": phase_stats, "over_time": over_time, "starved_s": starvation(jobs, t_end, priorities)}


def starvation(jobs: Sequence[Job], t_end: float, priorities: Sequence[int]) -> dict[int, float]:
    """Per priority: the longest stretch in [0, t_end] with a job waiting and none running."""
    events: list[tuple[float, int, int, int]] = []  # (time, priority, d_waiting, d_running)
    for j in jobs:
        arrival = max(0.0, j.arrival)
        if j.start is None:
            events.append((arrival, j.priority, 1, 0))
            continue
        start = max(0.0, j.start)
        end = j.end if j.end is not None else t_end
        if start > arrival:
            events.append((arrival, j.priority, 1, 0))
            events.append((start, j.priority, -1, 1))
        else:
            events.append((start, j.priority, 0, 1))
        events.append((max(start, end), j.priority, 0, -1))
    # At equal times: starts and arrivals before ends, so a worker passing from one job to the
    # next never looks idle.
    events.sort(key=lambda e: (e[0], -e[3]))
    waiting = {p: 0 for p in priorities}
    running = {p: 0 for p in priorities}
    since: dict[int, float | None] = {p: None for p in priorities}
    longest = {p: 0.0 for p in priorities}
    for t, p, dw, dr in events:
        if p not in waiting or t > t_end:
            continue
        waiting[p] += dw
        running[p] += dr
        starved = waiting[p] > 0 and running[p] == 0
        if starved and since[p] is None:
            since[p] = t
        elif not starved and since[p] is not None:
            longest[p] = max(longest[p], t - since[p])  # type: ignore[operator]
            since[p] = None
    for p in priorities:
        if since[p] is not None:
            longest[p] = max(longest[p], t_end - since[p])  # type: ignore[operator]
    return longest
