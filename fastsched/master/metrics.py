"""The pool master's counters and gauges, as one dataclass (``Pool.metrics``).

Read by the HTTP side (``fastsched.metrics``: Prometheus and the dashboard's history) and by the
Performance log line, which reports the change of the counters since its last line.
"""
from __future__ import annotations

import dataclasses
import enum
from typing import Any

from fastsched.priority import Priority


class DbKind(str, enum.Enum):
    """What a database call was for, after Friendica's "Performance" line (fastsched has no lock:
    the claim transaction takes the place of Friendica's lock wait)."""

    COUNT = "count"  # plan_counts
    STAT = "stat"  # the Load line's stats
    CLAIM = "claim"
    WRITE = "write"  # outcomes, heartbeat, registration, recovery, maintenance, periodic tasks
    OTHER = "other"


def counter(help_text: str, kind: type = int) -> Any:
    """A counter (it only ever grows) exported as ``fastsched_<name>_total`` with ``help_text``."""
    return dataclasses.field(default=kind(), metadata={"help": help_text})


@dataclasses.dataclass
class PoolMetrics:
    """Counters (only ever grow) and gauges of one master. Times are seconds. The counters with a
    help text are the ones ``/metrics`` exports one by one (:func:`exported_counters`)."""

    jobs_done: int = 0  # exported by priority (jobs_done_by_priority)
    jobs_failed: int = counter("jobs this master failed (kept for a person: retries or crashes exhausted, unknown command)")
    jobs_retried: int = counter("jobs that raised and were put back for another attempt")
    jobs_deferred: int = counter("jobs that deferred themselves (fastsched.defer())")
    jobs_released: int = counter("claimed jobs given back unstarted (shutdown, database outage)")
    jobs_crashed: int = counter("jobs whose child process died while running them")
    jobs_timed_out: int = counter("jobs stopped at their priority's run-time limit")
    jobs_cancelled: int = counter("running jobs this master stopped at an operator's request (kept as cancelled)")
    jobs_claimed: int = counter("jobs claimed")
    batches: int = counter("batches sent to children")
    cycles: int = counter("cycles of the master's loop")
    claims: int = counter("claim transactions")
    coalesce_waits: int = 0
    batches_prefetched: int = counter(
        "batches sent to a child while it ran another (prefetch: its next batch waits in its pipe)"
    )
    prefetch_revoked: int = counter("prefetched batches taken back unstarted so that waiting CRITICAL work runs first")
    db_seconds: float = 0.0  # the sum of db_seconds_by_kind
    db_errors: int = counter("database errors seen by the master")
    job_seconds: float = 0.0  # time the children spent running batches
    cycle_seconds: float = 0.0  # the loop's cycles, waits excluded
    children_started: int = counter("child processes started")
    children_died: int = counter("child processes that exited")
    # gauges
    last_cycle_seconds: float = 0.0
    workers: int = 0  # children alive (updated with the Load line)
    busy_workers: int = 0  # children running a batch (updated with the Load line)
    db_up: bool = False
    started: float = 0.0  # epoch seconds
    db_seconds_by_kind: dict[DbKind, float] = dataclasses.field(
        default_factory=lambda: dict.fromkeys(DbKind, 0.0)
    )
    jobs_done_by_priority: dict[int, int] = dataclasses.field(
        default_factory=lambda: {int(p): 0 for p in Priority}
    )

    def add_db_time(self, kind: DbKind, seconds: float) -> None:
        self.db_seconds += seconds
        self.db_seconds_by_kind[kind] += seconds

    def copy(self) -> PoolMetrics:
        """The numbers as they are now, kept apart from the ones that go on counting."""
        return dataclasses.replace(
            self,
            db_seconds_by_kind=dict(self.db_seconds_by_kind),
            jobs_done_by_priority=dict(self.jobs_done_by_priority),
        )

    def since(self, earlier: PoolMetrics) -> PoolMetrics:
        """How much each counter grew since ``earlier`` (a :meth:`copy`); the gauges are today's."""
        grown = self.copy()
        for name in _COUNTED:
            setattr(grown, name, getattr(self, name) - getattr(earlier, name))
        grown.db_seconds_by_kind = {
            kind: seconds - earlier.db_seconds_by_kind[kind] for kind, seconds in self.db_seconds_by_kind.items()
        }
        grown.jobs_done_by_priority = {
            priority: done - earlier.jobs_done_by_priority.get(priority, 0)
            for priority, done in self.jobs_done_by_priority.items()
        }
        return grown


_GAUGES = ("last_cycle_seconds", "workers", "busy_workers", "db_up", "started")
_COUNTED = tuple(
    field.name for field in dataclasses.fields(PoolMetrics)
    if field.name not in _GAUGES and field.type in ("int", "float")
)


def exported_counters() -> list[tuple[str, str]]:
    """(name, help text) of each counter ``/metrics`` exports as ``fastsched_<name>_total``."""
    return [(field.name, field.metadata["help"]) for field in dataclasses.fields(PoolMetrics) if "help" in field.metadata]
