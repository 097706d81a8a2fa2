"""Why a job has not run yet, in words: ``fastsched-pool explain ID``.

:func:`explain` reads the job, the queue counts the scheduler sees (``plan_counts``), the live
masters and, for a pending job, how many jobs of its priority a claim takes before it
(``jobs_ahead``); it returns the facts as a dict with ``lines``, sentences for a person. The
sentences follow the scheduler's own rules (``fastsched.core.choose_priority``): waiting CRITICAL
work first, then any priority with work waiting and no worker, then the quadratic shares, then
the highest priority waiting.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from fastsched import core, tasks
from fastsched.backends.contracts import OperatorStore
from fastsched.clock import utcnow
from fastsched.config import (
    DEFAULT_LEASE,
    DEFAULT_MAX_DURATION_MINUTES,
    DEFAULT_RETENTION,
    DEFAULT_RETRY_LIMIT,
)
from fastsched.controls import pause_flags, paused_by_any
from fastsched.errors import JobNotFound
from fastsched.jobs import Job, JobState
from fastsched.queue import dedup_hash
from fastsched.status import clip, iso, priority_name, seconds_text, shares

MAX_SHOWN_ARGS = 200  # characters of the job's JSON args shown
MAX_SHOWN_ERROR = 500  # characters of the last error shown
PLAN_CAP = 1_000_000  # waiting rows plan_counts may count per priority (explain runs rarely)


def _job_dict(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "command": job.command,
        "args": clip(job.parameter, MAX_SHOWN_ARGS),
        "priority": job.priority,
        "name": priority_name(job.priority),
        "state": job.state.value,
        "created": iso(job.created),
        "next_try": iso(job.next_try),
        "executed": iso(job.executed),
        "finished": iso(job.finished),
        "retrial": job.retrial,
        "crashes": job.crashes,
        "host": job.host,
        "pid": job.pid,
        "last_error": None if job.last_error is None else clip(job.last_error, MAX_SHOWN_ERROR),
        "queue": job.queue,
    }


def _policy(job: Job, pool: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The task policy that applies to ``job`` (its task's options, else the pool's settings given
    in ``pool``: retry_limit, retry_delay, max_duration_minutes) and a sentence about it."""
    from fastsched.retry_policy import FRIENDICA_DELAY, parse_retry_delay

    minutes = {**DEFAULT_MAX_DURATION_MINUTES, **dict(pool.get("max_duration_minutes") or {})}
    fixed = parse_retry_delay(str(pool.get("retry_delay", FRIENDICA_DELAY)))
    limit = minutes.get(job.priority, 0) or 0
    registered = job.command in tasks.default_registry
    applied = tasks.applied_policy(
        tasks.policy(job.command),
        retry_limit=int(pool.get("retry_limit", DEFAULT_RETRY_LIMIT)),
        retry_delay=FRIENDICA_DELAY if fixed is None else fixed,
        timeout=float(limit) * 60.0 if limit > 0 else None,
    )
    facts = {"registered_here": registered, **applied.describe()}
    if registered:
        return facts, [f"Its task's policy: {applied.text()}."]
    unregistered = (
        f"Its command {job.command} is not registered in the modules imported here (--import, "
        f"FASTSCHED_IMPORT): the pool's policy would be {applied.text()}."
    )
    return facts, [unregistered]


def _serving(processes: Sequence[Any], alive_after: dt.datetime, queue: str) -> list[Any]:
    """The live masters that claim from ``queue`` (those started without --queues claim from all)."""
    return [
        p for p in processes
        if p.role == "master" and p.heartbeat >= alive_after and (not p.queues or queue in p.queues)
    ]


def _priorities(n: int) -> str:
    return "1 priority is" if n == 1 else f"{n} priorities are"


def _rule_lines(
    rank: int, waiting: list[int], running: list[int], active: int, next_rank: int
) -> tuple[dict[str, Any], list[str]]:
    """The scheduler's view of priority ``rank``: facts and sentences."""
    share = shares(waiting, running, active)
    in_play = [r for r in range(len(core.PRIORITIES)) if share[r]["in_play"]]
    name = priority_name(core.PRIORITIES[rank])
    mine = share[rank]
    facts: dict[str, Any] = {
        "active_workers": active,
        "priorities_in_play": len(in_play),
        "workers": running[rank],
        "limit": mine["limit"],
        "share": mine["share"],
        "next_priority": None if next_rank < 0 else priority_name(core.PRIORITIES[next_rank]),
        "limits": {priority_name(core.PRIORITIES[r]): share[r]["limit"] for r in in_play},
    }
    lines = []
    busy = sum(running)
    if active and active <= busy:
        lines.append(f"All {active} active workers are busy: a worker must finish before anything more is claimed.")
    elif active:
        lines.append(f"{active - busy} of {active} active workers are free.")
    table = ", ".join(f"{priority_name(core.PRIORITIES[r])} {running[r]}/{share[r]['limit']}" for r in in_play)
    if mine["in_play"]:
        lines.append(
            f"Under the quadratic rule, {_priorities(len(in_play))} in play with {max(active, sum(running))} "
            f"workers; {name} may hold {mine['limit']} (a share of {mine['share']:.0%}) and holds {running[rank]} "
            f"(workers/limit: {table})."
        )
    if next_rank == rank:
        lines.append(f"The next free worker goes to {name}.")
    elif next_rank >= 0:
        other = priority_name(core.PRIORITIES[next_rank])
        if next_rank == 0 and waiting[0] > 0:
            why = "waiting CRITICAL work always goes first"
        elif running[next_rank] == 0:
            why = f"{other} has work waiting and no worker (no priority starves)"
        elif mine["in_play"] and mine["limit"] is not None and running[rank] >= mine["limit"]:
            why = f"{name} is at its limit of {mine['limit']}"
        else:
            why = f"{other} comes first among the priorities under their limits"
        lines.append(f"The next free worker goes to {other}: {why}.")
    return facts, lines


def explain(
    backend: OperatorStore,
    job_id: int,
    now: dt.datetime | None = None,
    *,
    lease: float = DEFAULT_LEASE,
    pool: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Why job ``job_id`` has (not) run, as facts and sentences (``lines``). ``pool``: the pool's
    retry_limit, retry_delay and max_duration_minutes where they are not the defaults."""
    now = now or utcnow()
    try:
        job = backend.get(job_id, now)
    except JobNotFound:
        return {
            "found": False,
            "job": None,
            "state": "not_found",
            "lines": [
                (
                    f"No job has id {job_id}. It was never added; or it was cancelled before it ran; or it was done and purged "
                    f"(done jobs are kept {seconds_text(DEFAULT_RETENTION)} by default, --retention); or it was a "
                    f"failed job retried while an identical job was pending, and merged into that one (dedup)."
                ),
                "An add() that finds an identical pending job returns that job's id: no second id exists.",
            ],
        }
    alive_after = now - dt.timedelta(seconds=lease)
    processes = backend.processes()
    live_masters = [p for p in processes if p.role == "master" and p.heartbeat >= alive_after]
    name = priority_name(job.priority)
    described = f"Job #{job.id} {job.command} {clip(job.parameter, 60)} ({name})"
    result: dict[str, Any] = {"found": True, "job": _job_dict(job), "state": job.state.value}
    lines: list[str] = []
    pending = job.state in (JobState.WAITING, JobState.DEFERRED, JobState.RUNNING)
    policy_facts, policy_lines = _policy(job, pool or {})

    # A retried job keeps its last error (an unknown command's hand-back, say) until it runs again.
    error = f"; its last error: {clip(' '.join(job.last_error.split()), 200)}" if job.last_error else ""
    if job.state is JobState.WAITING:
        retried = f", after {job.retrial} retrial{'s' if job.retrial != 1 else ''}{error}" if job.retrial else ""
        lines.append(
            f"{described} is waiting: runnable since {seconds_text((now - job.next_try).total_seconds())} "
            f"(created {iso(job.created)}, next_try {iso(job.next_try)}){retried}."
        )
    elif job.state is JobState.DEFERRED:
        wait = seconds_text((job.next_try - now).total_seconds())
        if job.retrial:
            lines.append(
                f"{described} is deferred until {iso(job.next_try)} (in {wait}) after {job.retrial} "
                f"retrial{'s' if job.retrial != 1 else ''}{error}."
            )
        else:
            lines.append(f"{described} is deferred: it was added with a delay and runs from {iso(job.next_try)} (in {wait}).")
    elif job.state is JobState.RUNNING:
        since = seconds_text((now - job.executed).total_seconds()) if job.executed else "an unknown time"
        master = next((p for p in processes if p.role == "master" and p.host == job.host), None)
        earlier = backend.claimed_before(job.id)
        if earlier:
            result["prefetched"] = True
            lines.append(
                f"{described} is claimed, in a prefetched batch: child pid {job.pid} of host {job.host!r} got it "
                f"{since} ago, ahead, while it runs an earlier batch ({earlier} job{'s' if earlier != 1 else ''} "
                f"still pending); it starts when that batch ends. A prefetched batch counts and is fenced like a "
                f"running one, and is released if the pool stops or the child dies."
            )
        else:
            result["prefetched"] = False
            lines.append(f"{described} is running: claimed {since} ago by child pid {job.pid} of host {job.host!r}.")
        if master is None or master.heartbeat < alive_after:
            lines.append(
                f"The master of host {job.host!r} has no heartbeat within the lease ({lease:g} s): any master "
                f"will release the job at its next maintenance, and it runs again."
            )
        if policy_facts["timeout_seconds"] is not None:
            source = "its task's timeout" if policy_facts["sources"]["timeout"] == tasks.TASK else "--max-duration"
            lines.append(
                f"It may run {seconds_text(policy_facts['timeout_seconds'])} ({source}) before it is stopped."
            )
        requested = backend.cancel_request(job.id)
        if requested is not None:
            result["cancel_requested"] = {"by": requested[0], "at": iso(requested[1])}
            lines.append(
                f"{requested[0]} asked to cancel it at {iso(requested[1])}: its master stops its child (SIGTERM, "
                f"SIGKILL after the grace) at its next heartbeat, and the job ends cancelled."
            )
    elif job.state is JobState.CANCELLED:
        lines.append(
            f"{described} was cancelled while it ran: it ended at {iso(job.finished)} "
            f"({job.last_error or 'cancelled'}). It is kept like a failed job and never retried; "
            f"`fastsched-pool purge --include-failed` deletes it."
        )
    elif job.state is JobState.DONE:
        lines.append(
            f"{described} is done: it finished at {iso(job.finished)}; done jobs are purged after the "
            f"retention ({seconds_text(DEFAULT_RETENTION)} by default)."
        )
    else:
        error = " ".join((job.last_error or "(no error recorded)").split())
        lines.append(
            f"{described} failed at {iso(job.finished)} after {job.retrial} retrial{'s' if job.retrial != 1 else ''} "
            f"and {job.crashes} crash{'es' if job.crashes != 1 else ''}: {clip(error, 300)}"
        )
        lines.append(f"`fastsched-pool retry {job.id}` puts it back in the queue with its counters reset.")

    result["policy"] = policy_facts
    lines += policy_lines
    serving = _serving(processes, alive_after, job.queue) if pending else []
    result["queue"] = {"name": job.queue, "masters": [{"host": p.host, "pid": p.pid} for p in serving]}
    if not pending:
        lines.append(f"It was in the queue {job.queue!r}.")
    elif not any(p.queues for p in live_masters):
        every = ", which every live master claims from" if live_masters else ""
        lines.append(f"It belongs to the queue {job.queue!r}{every}.")
    elif not serving:
        lines.append(
            f"It belongs to the queue {job.queue!r}, and no live master claims from it: every one was started "
            f"with --queues naming others. Start one with --queues {job.queue} (or without --queues)."
        )
    else:
        lines.append(
            f"It belongs to the queue {job.queue!r}: {len(serving)} of the {len(live_masters)} live masters "
            f"claim from it."
        )
    if job.state in (JobState.WAITING, JobState.DEFERRED):
        pause = paused_by_any(backend.pauses(), job.priority, job.command, job.queue)
        result["paused"] = None if pause is None else pause.as_dict()
        if pause is not None:
            lines.append(
                f"It is paused: {pause.paused_by} paused {pause.describe()} at {iso(pause.paused_at)}. No master "
                f"claims it until `fastsched-pool resume {pause_flags(pause)}`."
            )
        try:
            rank = core.rank_of(job.priority)
        except ValueError:
            rank = -1
        if rank < 0:
            lines.append(
                f"Its priority {job.priority} is not one of 10, 20, 30, 40, 50: no claim takes it, and the "
                f"pool's maintenance fails it."
            )
        else:
            counts = backend.plan_counts(now, PLAN_CAP, alive_after)
            waiting, running = list(counts.waiting), list(counts.running)
            ahead = backend.jobs_ahead(job.id)
            next_rank = core.choose_priority(waiting, running, counts.active)
            facts, rule_lines = _rule_lines(rank, waiting, running, counts.active, next_rank)
            facts["jobs_ahead"] = ahead
            result["scheduler"] = facts
            if job.state is JobState.WAITING:
                verb = "are" if ahead != 1 else "is"
                lines.append(
                    f"{ahead} {name} job{'s' if ahead != 1 else ''} {verb} ahead of it in the claim order "
                    f"(oldest next_try first, then id)."
                )
                lines += rule_lines
            else:
                lines.append(
                    f"When it is due, {ahead} {name} job{'s' if ahead != 1 else ''} with an earlier next_try "
                    f"will be ahead of it."
                )
    if pending and not live_masters:
        lines.append(
            f"No pool master is alive (none has a heartbeat within the lease of {lease:g} s): nothing runs "
            f"until one starts (`fastsched-pool start`)."
        )
    result["masters_alive"] = len(live_masters)

    holder = backend.dedup_holder(dedup_hash(job.command, job.parameter, job.queue))
    result["dedup"] = {"pending_job": holder}
    if holder == job.id:
        lines.append(
            f"Dedup: adding the same command and args while it is pending returns #{job.id} instead of a new "
            f"job (with force_priority it takes the new priority while unclaimed)."
        )
    elif holder is not None and pending:
        lines.append(f"Dedup: it was added with dedup=False; the identical job #{holder} is pending too.")
    elif holder is not None:
        lines.append(f"Dedup: an identical job, #{holder}, is pending: adding the same command and args returns #{holder}.")
    elif pending:
        lines.append("Dedup: off for this job (added with dedup=False): identical adds create jobs of their own.")
    result["lines"] = lines
    return result


def render_text(result: dict[str, Any]) -> str:
    return "\n".join(result["lines"])
