"""What a pool cluster is doing, as one dict: ``fastsched-pool status``, ``/status.json`` and the dashboard.

:func:`collect` reads it from a backend in a few statements (``stats``, ``plan_counts``,
``processes``, ``finished_since`` per window, ``failed``); :func:`render_text` prints it for a
person. The dict is the documented, stable ``status --json`` format (docs/monitoring.md lists every
key; ``format`` changes when a key changes meaning or disappears; new keys may be added):

    format              "fastsched.status/1"
    generated_at        ISO 8601 UTC time of the reading
    database            the DSN, password masked
    lease_seconds       a master is alive if its heartbeat is younger than this
    priorities          one entry per priority, CRITICAL first (see PRIORITY_KEYS)
    totals              waiting, deferred, running, failed, done_last_hour summed over priorities
    scheduler           active_workers, running_workers, priorities_in_play, next_priority
    jobs_per_minute     {"1": ..., "3": ..., "5": ...}: jobs done per minute over the last 1, 3, 5 minutes
    hosts               per host id, its masters (pid, workers, started, heartbeat, age, alive) and children
    failed_recent       the newest failed jobs, with the end of their last error and its last line
    paused              the pauses in force (fastsched-pool pause): priority, command, queue, who, when
    actions_recent      the newest operators' actions (pause, resume, retry, cancel, purge): who, when, what, how many
    queues              per queue holding pending or failed jobs: waiting, deferred, running, failed; by name
    handed_back         per command no pool that claimed it had registered: its pending jobs (among the first
                        HANDED_BACK_CAP waiting and deferred jobs of each priority), retried until the retry limit
    tasks               the registered tasks of the modules given with --import (the pool's FASTSCHED_IMPORT):
                        command, and the options of their decorator (priority, queue, retry_limit, retry_delay,
                        timeout, no_retry); what a task leaves out, the pool's settings decide

Times are naive UTC datetimes inside fastsched; here they are text, ``2024-05-01T12:00:00.123Z``.
Nothing in it can hold the database password: the DSN is masked and no setting is included.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from fastsched import core
from fastsched.backends.base import ProcessInfo
from fastsched.backends.contracts import OperatorStore
from fastsched.clock import utcnow
from fastsched.config import DEFAULT_LEASE
from fastsched.priority import Priority
from fastsched.retry_policy import unknown_command_error
from fastsched.tasks import TaskPolicy

_NO_POLICY = TaskPolicy()

FORMAT = "fastsched.status/1"
JPM_WINDOWS = (1, 3, 5)  # minutes, as Friendica's jobs-per-minute
FAILED_SHOWN = 10  # newest failed jobs included
MAX_ERROR_SHOWN = 2000  # characters of a failed job's last error included (its end)
MAX_SUMMARY_SHOWN = 200  # characters of the last line of a failed job's error
PLAN_CAP = 1  # waiting rows plan_counts reads per priority: only running and active are used here
ACTIONS_SHOWN = 10  # newest operators' actions included
HANDED_BACK_CAP = 1_000  # waiting and deferred jobs per priority read for the handed-back commands

PRIORITY_KEYS = (
    "priority", "name", "waiting", "deferred", "running", "failed", "done_last_hour", "oldest_wait_seconds",
    "workers", "in_play", "limit", "share", "cancelled", "paused", "paused_jobs", "prefetched",
)
TOTAL_KEYS = ("waiting", "deferred", "running", "failed", "done_last_hour")


def iso(value: dt.datetime | None) -> str | None:
    """A naive UTC datetime as ``2024-05-01T12:00:00.123Z``."""
    return None if value is None else value.isoformat(timespec="milliseconds") + "Z"


def priority_name(value: int) -> str:
    try:
        return Priority(value).name
    except ValueError:
        return str(value)


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def clip_start(text: str, width: int) -> str:
    """The end of ``text`` (a traceback's most useful part), at most ``width`` characters."""
    return text if len(text) <= width else "..." + text[len(text) - width + 3 :]


def error_summary(text: str | None) -> str:
    """The last non-empty line of an error (a traceback's exception and message)."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return clip(lines[-1], MAX_SUMMARY_SHOWN) if lines else ""


def shares(waiting: Sequence[int], running: Sequence[int], active: int) -> list[dict[str, Any]]:
    """Per rank: whether the priority is in play and its quadratic limit and share.

    The scheduler's view (``core.choose_priority``): the priorities in play are those with work
    waiting or a worker running; with n in play and ``max(active, sum(running))`` workers, the j-th
    gets ``core.quadratic_limits(...)[j]`` workers, a share of (n-j)²/(1²+...+n²).
    """
    in_play = [rank for rank in range(len(core.PRIORITIES)) if waiting[rank] > 0 or running[rank] > 0]
    n = len(in_play)
    limits = core.quadratic_limits(max(active, sum(running)), n) if n else []
    total = n * (n + 1) * (2 * n + 1) // 6
    result: list[dict[str, Any]] = [{"in_play": False, "limit": None, "share": None} for _ in core.PRIORITIES]
    for j, rank in enumerate(in_play):
        result[rank] = {"in_play": True, "limit": limits[j], "share": round((n - j) ** 2 / total, 4)}
    return result


def _process_entry(info: ProcessInfo, now: dt.datetime, alive_after: dt.datetime) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "pid": info.pid,
        "started": iso(info.started),
        "heartbeat": iso(info.heartbeat),
        "heartbeat_age_seconds": round(max((now - info.heartbeat).total_seconds(), 0.0), 3),
    }
    if info.role == "master":
        entry["workers"] = info.workers
        entry["alive"] = info.heartbeat >= alive_after
        entry["queues"] = list(info.queues)  # [] = it claims from every queue
    return entry


def _hosts(processes: Sequence[ProcessInfo], now: dt.datetime, alive_after: dt.datetime) -> list[dict[str, Any]]:
    masters: dict[tuple[str, int], dict[str, Any]] = {}
    hosts: dict[str, list[dict[str, Any]]] = {}
    for info in processes:
        if info.role == "master":
            entry = _process_entry(info, now, alive_after)
            entry["children"] = []
            masters[(info.host, info.pid)] = entry
            hosts.setdefault(info.host, []).append(entry)
    for info in processes:
        if info.role != "master":
            master = masters.get((info.host, info.master_pid))
            if master is not None:  # a child row outlives its master only inside one transaction
                master["children"].append(_process_entry(info, now, alive_after))
    return [{"host": host, "masters": entries} for host, entries in sorted(hosts.items())]


def collect(
    backend: OperatorStore,
    now: dt.datetime | None = None,
    *,
    lease: float = DEFAULT_LEASE,
    failed_limit: int = FAILED_SHOWN,
    tasks: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """The status of the queue and the pools working on it, read from ``backend`` at ``now``;
    ``tasks``: the registered tasks to show (:func:`task_entries`)."""
    now = now or utcnow()
    alive_after = now - dt.timedelta(seconds=lease)
    stats = backend.stats(now)
    counts = backend.plan_counts(now, PLAN_CAP, alive_after)
    processes = backend.processes()
    jpm = {
        str(minutes): round(backend.finished_since(now - dt.timedelta(minutes=minutes)) / minutes, 1)
        for minutes in JPM_WINDOWS
    }
    failed = backend.failed(failed_limit) if failed_limit > 0 else []
    pauses = backend.pauses()
    actions = backend.actions(ACTIONS_SHOWN)
    whole = {p.priority for p in pauses if p.whole_priority}
    prefetched = backend.prefetched_by_priority()

    # The scheduler's view, as the masters plan with it: a priority paused whole has no runnable
    # work (plan_counts reads none of its rows), so it is not in play and gets no free worker.
    waiting = list(counts.waiting)
    running = list(counts.running)
    share = shares(waiting, running, counts.active)
    priorities = []
    for rank, entry in enumerate(stats):
        oldest = entry.oldest_waiting_seconds
        priorities.append({
            "priority": entry.priority,
            "name": priority_name(entry.priority),
            "waiting": entry.waiting,
            "deferred": entry.deferred,
            "running": entry.running,
            "failed": entry.failed,
            "done_last_hour": entry.done_last_hour,
            "oldest_wait_seconds": None if oldest is None else round(oldest, 3),
            "workers": running[rank],
            **share[rank],
            "cancelled": entry.cancelled,
            "paused": entry.priority in whole,
            "paused_jobs": entry.paused,
            "prefetched": prefetched.get(entry.priority, 0),
        })
    next_rank = core.choose_priority(waiting, running, counts.active)
    return {
        "format": FORMAT,
        "generated_at": iso(now),
        "database": str(backend.dsn),
        "lease_seconds": lease,
        "priorities": priorities,
        "totals": {key: sum(int(p[key]) for p in priorities) for key in TOTAL_KEYS},
        "scheduler": {
            "active_workers": counts.active,
            "running_workers": sum(running),
            "priorities_in_play": sum(1 for s in share if s["in_play"]),
            "next_priority": None if next_rank < 0 else priority_name(core.PRIORITIES[next_rank]),
        },
        "jobs_per_minute": jpm,
        "hosts": _hosts(processes, now, alive_after),
        "failed_recent": [
            {
                "id": job.id,
                "command": job.command,
                "priority": job.priority,
                "name": priority_name(job.priority),
                "finished": iso(job.finished),
                "retrial": job.retrial,
                "crashes": job.crashes,
                "error": clip_start(job.last_error or "", MAX_ERROR_SHOWN),
                "error_summary": error_summary(job.last_error),
            }
            for job in failed
        ],
        "paused": [pause.as_dict() for pause in pauses],
        "actions_recent": [action.as_dict() for action in actions],
        "queues": [dataclasses.asdict(entry) for entry in backend.queue_stats(now)],
        "handed_back": [
            {"command": command, "jobs": jobs, "last_error": unknown_command_error(command)}
            for command, jobs in backend.handed_back(now, HANDED_BACK_CAP)
        ],
        "tasks": [dict(entry) for entry in tasks],
    }


def task_entries(registry: Any) -> list[dict[str, Any]]:
    """The tasks of a ``fastsched.tasks.Registry`` as ``collect`` shows them: command, and the options
    its decorator gave (an empty ``policy``: all the pool's), by name."""
    return [
        {"command": name, "policy": (registry.policy(name) or _NO_POLICY).describe()}
        for name in sorted(registry.names())
    ]


# --- text ---------------------------------------------------------------------------------------


def seconds_text(value: float | None) -> str:
    """``-``, ``850 ms``, ``4.2 s``, ``3 min 5 s``, ``2 h 10 min``, ``3 d 4 h``."""
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 60:
        return f"{value:.1f} s"
    whole = int(value)
    if whole < 3600:
        minutes, seconds = divmod(whole, 60)
        return f"{minutes} min {seconds} s" if seconds else f"{minutes} min"
    if whole < 86400:
        hours, minutes = divmod(whole // 60, 60)
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(whole // 3600, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)).rstrip()
        for row in rows
    ]


def render_text(status: Mapping[str, Any]) -> str:
    """``status`` for a person: the priority table, the scheduler, jobs per minute, hosts, failures."""
    lines = [f"fastsched status of {status['database']} at {status['generated_at']}", ""]
    rows = [["priority", "waiting", "deferred", "running", "failed", "done/1h", "oldest wait", "workers", "limit"]]
    for p in status["priorities"]:
        rows.append([
            f"{p['priority']} {p['name']}" + (" (paused)" if p.get("paused") else ""), str(p["waiting"]), str(p["deferred"]), str(p["running"]),
            str(p["failed"]), str(p["done_last_hour"]), seconds_text(p["oldest_wait_seconds"]),
            str(p["workers"]), "-" if p["limit"] is None else str(p["limit"]),
        ])
    ahead = sum(int(p.get("prefetched", 0)) for p in status["priorities"])
    totals = status["totals"]
    rows.append([
        "total", str(totals["waiting"]), str(totals["deferred"]), str(totals["running"]), str(totals["failed"]),
        str(totals["done_last_hour"]), "", str(status["scheduler"]["running_workers"]), "",
    ])
    lines += _table(rows)
    scheduler = status["scheduler"]
    lines.append("")
    lines.append(
        f"workers: {scheduler['running_workers']} busy of {scheduler['active_workers']} active (live masters); "
        f"{scheduler['priorities_in_play']} {'priority' if scheduler['priorities_in_play'] == 1 else 'priorities'} "
        f"in play; the next free worker goes to "
        f"{scheduler['next_priority'] or 'nobody (nothing claimable waits)'}"
    )
    if ahead:
        lines.append(
            f"claimed ahead (prefetched): {ahead} of the running jobs are in batches sent to a child behind the "
            f"batch it runs (" + ", ".join(f"{p['name']} {p['prefetched']}" for p in status["priorities"]
                                          if p.get("prefetched")) + ")"
        )
    jpm = status["jobs_per_minute"]
    lines.append("jobs per minute: " + ", ".join(f"{jpm[str(m)]:g} over {m} min" for m in JPM_WINDOWS))
    lines.append("")
    if not status["hosts"]:
        lines.append("no pool master is registered: start one with `fastsched-pool start`")
    for host in status["hosts"]:
        lines.append(f"host {host['host']}")
        for master in host["masters"]:
            state = "alive" if master["alive"] else f"DEAD (no heartbeat for more than {status['lease_seconds']:g} s)"
            served = ", ".join(master.get("queues") or []) or "every queue"
            lines.append(
                f"  master pid {master['pid']}: {master['workers']} workers on {served}, heartbeat "
                f"{seconds_text(master['heartbeat_age_seconds'])} ago, {state}, started {master['started']}"
            )
            children = master["children"]
            if children:
                ages = [child["heartbeat_age_seconds"] for child in children]
                lines.append(
                    f"    children {', '.join(str(child['pid']) for child in children)}: heartbeat "
                    f"{seconds_text(min(ages))} to {seconds_text(max(ages))} ago"
                )
    lines += _queues_text(status)
    lines += _controls_text(status)
    failed = status["failed_recent"]
    if failed:
        lines.append("")
        lines.append("newest failed jobs (`fastsched-pool failed` lists them all, `retry ID` re-queues one):")
        for job in failed:
            error = job["error_summary"] or "(no error recorded)"
            lines.append(f"  #{job['id']} {job['command']} ({job['name']}) at {job['finished']}: {clip(error, 120)}")
    return "\n".join(lines)


def _queues_text(status: Mapping[str, Any]) -> list[str]:
    """The queues that hold jobs, and the policies of the registered tasks (when known)."""
    lines: list[str] = []
    queues = status.get("queues") or []
    if queues:
        lines.append("")
        rows = [["queue", "waiting", "deferred", "running", "failed"]]
        rows += [[q["queue"], str(q["waiting"]), str(q["deferred"]), str(q["running"]), str(q["failed"])] for q in queues]
        lines += _table(rows)
    handed = status.get("handed_back") or []
    if handed:
        lines.append("")
        lines.append("handed back (a pool that claimed them has no such task; retried until the retry limit):")
        for entry in handed:
            lines.append(
                f"  {entry['command']}: {entry['jobs']} pending job{'s' if entry['jobs'] != 1 else ''}, "
                f"last error: {entry['last_error']}"
            )
    tasks = status.get("tasks") or []
    if tasks:
        lines.append("")
        lines.append("task policies (the rest is the pool's: --retry-limit, --retry-delay, --max-duration):")
        for task in tasks:
            options = task["policy"]
            shown = ", ".join(f"{key} {_option_text(value)}" for key, value in options.items()) or "the pool's"
            lines.append(f"  {task['command']}: {shown}")
    return lines


def _option_text(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _controls_text(status: Mapping[str, Any]) -> list[str]:
    """The pauses in force, the cancelled jobs and the newest operators' actions."""
    lines = []
    paused = status.get("paused") or []
    if paused:
        lines.append("")
        lines.append("paused (no master claims this work; `fastsched-pool resume` with the same flags ends it):")
        for pause in paused:
            parts = [f"{key} {pause[key]}" for key in ("priority", "command", "queue") if pause[key] is not None]
            lines.append(f"  PAUSED {', '.join(parts)}: by {pause['paused_by']} at {pause['paused_at']}")
        aside = [f"{p['name']} {p['paused_jobs']}" for p in status["priorities"] if p.get("paused_jobs")]
        if aside:
            lines.append(f"  pending jobs set aside by pauses of their command or queue: {', '.join(aside)}")
    cancelled = sum(int(p.get("cancelled", 0)) for p in status["priorities"])
    if cancelled:
        lines.append("")
        lines.append(f"{cancelled} cancelled job{'s' if cancelled != 1 else ''} kept (purge --include-failed deletes them)")
    actions = status.get("actions_recent") or []
    if actions:
        lines.append("")
        lines.append("recent actions (newest first):")
        for action in actions:
            jobs = f": {action['jobs']} job{'s' if action['jobs'] != 1 else ''}" if action["action"] not in (
                "pause", "resume") else ""
            lines.append(f"  {action['at']} {action['by']} {action['action']} {action['target']}{jobs}")
    return lines
