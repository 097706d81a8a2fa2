"""The pool master's counters and gauges, as one dataclass (``Pool.metrics``).

Read by the HTTP side (``fastsched.metrics``: Prometheus and the dashboard's history) and by the
Performance log line, which reports the change of the counters since its last line.
"""
from __future__ import annotations

import dataclasses
import enum

from fastsched.priority import Priority


class DbKind(str, enum.Enum):
    """What a database call was for, after Friendica's "Performance" line (fastsched has no lock:
    the claim transaction takes the place of Friendica's lock wait)."""

    COUNT = "count"  # plan_counts
    STAT = "stat"  # the Load line's stats
    CLAIM = "claim"
    WRITE = "write"  # outcomes, heartbeat, registration, recovery, maintenance, periodic tasks
    OTHER = "other"


@dataclasses.dataclass
class PoolMetrics:
    """Counters (only ever grow) and gauges of one master. Times are seconds."""

    jobs_done: int = 0
    jobs_failed: int = 0
    jobs_retried: int = 0
    jobs_deferred: int = 0
    jobs_released: int = 0
    jobs_crashed: int = 0
    jobs_timed_out: int = 0
    jobs_cancelled: int = 0  # running jobs stopped at an operator's request
    jobs_claimed: int = 0
    batches: int = 0
    cycles: int = 0
    claims: int = 0
    coalesce_waits: int = 0
    batches_prefetched: int = 0  # batches sent to a child while it ran another
    prefetch_revoked: int = 0  # prefetched batches taken back for waiting CRITICAL work
    db_seconds: float = 0.0  # the sum of db_seconds_by_kind
    db_errors: int = 0
    job_seconds: float = 0.0  # time the children spent running batches
    cycle_seconds: float = 0.0  # the loop's cycles, waits excluded
    children_started: int = 0
    children_died: int = 0
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

    def counters(self) -> dict[str, float]:
        """Every number, flat (``db_<kind>_seconds`` per kind): the Performance line subtracts two."""
        flat: dict[str, float] = {
            field.name: float(getattr(self, field.name))
            for field in dataclasses.fields(self)
            if field.type in ("int", "float", "bool")
        }
        for kind, seconds in self.db_seconds_by_kind.items():
            flat[f"db_{kind.value}_seconds"] = seconds
        return flat
