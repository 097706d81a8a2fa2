"""What the pool's HTTP endpoints show: the status, its history, and the Prometheus metrics.

A :class:`Monitor` reads the queue's status through a backend of its own (a backend is not
thread-safe, and the server's threads share it under one lock), reuses a reading for
``STATUS_MAX_AGE`` seconds so that scrapes and dashboards cost the database a few statements a
second at most, keeps the samples of ``/history.json``, and collects the metrics of ``/metrics`` at
scrape time: the queue's (from the status) and the pool's counters (``Pool.metrics``) and cycle
histograms (fed by ``Pool.on_cycle``). ``fastsched.http`` serves them.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector

from fastsched import status as status_mod
from fastsched.backends import OperatorStore, open_backend
from fastsched.config import DEFAULT_LEASE
from fastsched.dsn import DSN
from fastsched.errors import FastschedError
from fastsched.master.metrics import DbKind, PoolMetrics, exported_counters
from fastsched.priority import Priority

log = logging.getLogger("fastsched.http")  # one logger for everything the HTTP side says

STATUS_MAX_AGE = 1.0  # seconds a status reading is served again before the database is asked anew
HISTORY_INTERVAL = 2.0  # seconds between history samples
HISTORY_SAMPLES = 450  # samples kept: 15 minutes at HISTORY_INTERVAL
# Seconds: a claim cycle is well under a millisecond when idle, tens of ms on a busy MySQL.
CYCLE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
class Monitor:
    """What the endpoints show: the status (read through a backend of its own, cached), the
    history of samples and the pool's counters and cycle histograms."""

    def __init__(
        self,
        dsn: DSN,
        *,
        lease: float = DEFAULT_LEASE,
        metrics: PoolMetrics | None = None,
        workers: int = 0,
        history_interval: float = HISTORY_INTERVAL,
        history_samples: int = HISTORY_SAMPLES,
    ) -> None:
        self.dsn = dsn
        self.lease = lease
        self.metrics = metrics  # Pool.metrics, read-only here; None outside a pool
        self.workers = workers
        self.history_interval = history_interval
        self._backend: OperatorStore = open_backend(dsn)
        self._lock = threading.Lock()
        self._cached: dict[str, Any] | None = None
        self._cached_at = float("-inf")
        self._history: collections.deque[dict[str, Any]] = collections.deque(maxlen=history_samples)
        self.last_cycle_at = 0.0  # epoch seconds of the pool's last cycle
        self.registry = CollectorRegistry()
        self.cycle_seconds = Histogram(
            "fastsched_claim_cycle_seconds", "duration of a cycle of the master's loop (collect, plan, claim, "
            "dispatch), waits excluded", buckets=CYCLE_BUCKETS, registry=self.registry,
        )
        self.cycle_db_seconds = Histogram(
            "fastsched_cycle_db_seconds", "database time spent in a cycle of the master's loop",
            buckets=CYCLE_BUCKETS, registry=self.registry,
        )
        self.registry.register(_Collector(self))
        ProcessCollector(registry=self.registry)

    # --- the pool's side ------------------------------------------------------------------------
    def observe_cycle(self, cycle_seconds: float, db_seconds: float) -> None:
        """``Pool.on_cycle``: called by the master after each cycle (quick, never raises)."""
        self.cycle_seconds.observe(cycle_seconds)
        self.cycle_db_seconds.observe(db_seconds)
        self.last_cycle_at = time.time()

    # --- reading --------------------------------------------------------------------------------
    def status(self, max_age: float = STATUS_MAX_AGE) -> dict[str, Any]:
        """The status, read anew when the last reading is older than ``max_age`` seconds.
        Raises a FastschedError (a DatabaseError, say) when it cannot be read."""
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached_at > max_age:
                try:
                    self._cached = status_mod.collect(self._backend, lease=self.lease)
                except FastschedError:
                    self._backend.close()  # the next reading reconnects
                    raise
                self._cached_at = now
            return self._cached

    def sample(self) -> None:
        """Append one history sample (skipped, with a debug line, when the database does not answer)."""
        try:
            current = self.status(max_age=self.history_interval / 2)
        except FastschedError as exc:
            log.debug("history sample skipped: %s", exc)
            return
        priorities = current["priorities"]
        done = None
        if self.metrics is not None:
            by_priority = self.metrics.jobs_done_by_priority
            done = [int(by_priority.get(p["priority"], 0)) for p in priorities]
        self._history.append({
            "t": round(time.time(), 3),
            "waiting": [p["waiting"] for p in priorities],
            "deferred": [p["deferred"] for p in priorities],
            "running": [p["running"] for p in priorities],
            "workers": [p["workers"] for p in priorities],
            "limits": [p["limit"] for p in priorities],
            "done": done,
            "jobs_per_minute": current["jobs_per_minute"]["1"],
        })

    def history(self) -> dict[str, Any]:
        return {
            "format": "fastsched.history/1",
            "interval_seconds": self.history_interval,
            "priorities": [p.name for p in Priority],
            "workers": self.workers,
            "samples": list(self._history),
        }

    def close(self) -> None:
        with self._lock:
            self._backend.close()


class _Collector:
    """The metrics read at scrape time: the queue (from the status) and the pool's counters."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor

    def describe(self) -> list[Metric]:
        return []  # nothing fixed to check for clashes; the registry calls collect() at scrape time

    def collect(self) -> Iterator[Metric]:
        monitor = self.monitor
        up = GaugeMetricFamily("fastsched_status_up", "1 if the queue's status could be read from the database")
        try:
            current = monitor.status()
        except FastschedError:
            current = None
        up.add_metric([], 1 if current is not None else 0)
        yield up
        if current is not None:
            yield from _queue_metrics(current)
            yield from _control_metrics(current)
        if monitor.metrics is not None:
            yield from _pool_metrics(monitor.metrics, monitor)


def _queue_metrics(current: Mapping[str, Any]) -> Iterator[Metric]:
    depth = GaugeMetricFamily(
        "fastsched_queue_jobs", "jobs in the queue by priority and state (cluster-wide)", labels=["priority", "state"]
    )
    done = GaugeMetricFamily("fastsched_jobs_done_last_hour", "jobs done in the last hour", labels=["priority"])
    oldest = GaugeMetricFamily(
        "fastsched_oldest_wait_seconds", "age of the oldest waiting job (0 when none waits)", labels=["priority"]
    )
    running = GaugeMetricFamily(
        "fastsched_running_workers", "workers running jobs of this priority (cluster-wide)", labels=["priority"]
    )
    limit = GaugeMetricFamily(
        "fastsched_quadratic_limit", "workers this priority may hold under the quadratic rule (priorities in play)",
        labels=["priority"],
    )
    for p in current["priorities"]:
        name = p["name"]
        for state in ("waiting", "deferred", "running", "failed"):
            depth.add_metric([name, state], p[state])
        done.add_metric([name], p["done_last_hour"])
        oldest.add_metric([name], p["oldest_wait_seconds"] or 0.0)
        running.add_metric([name], p["workers"])
        if p["limit"] is not None:
            limit.add_metric([name], p["limit"])
    yield from (depth, done, oldest, running, limit)
    active = GaugeMetricFamily("fastsched_active_workers", "workers of all live masters (cluster-wide)")
    active.add_metric([], current["scheduler"]["active_workers"])
    yield active
    jpm = GaugeMetricFamily(
        "fastsched_jobs_per_minute", "jobs done per minute over the window (cluster-wide)", labels=["window"]
    )
    for minutes, value in current["jobs_per_minute"].items():
        jpm.add_metric([f"{minutes}m"], value)
    yield jpm
    by_queue = GaugeMetricFamily(
        "fastsched_queue_jobs_by_queue", "jobs by queue and state (cluster-wide; queues holding pending or failed jobs)",
        labels=["queue", "state"],
    )
    for entry in current.get("queues", []):
        for state in ("waiting", "deferred", "running", "failed"):
            by_queue.add_metric([entry["queue"], state], entry[state])
    yield by_queue
    masters = GaugeMetricFamily("fastsched_masters", "registered pool masters", labels=["state"])
    alive = [m["alive"] for host in current["hosts"] for m in host["masters"]]
    masters.add_metric(["alive"], sum(alive))
    masters.add_metric(["dead"], len(alive) - sum(alive))
    yield masters


def _control_metrics(current: Mapping[str, Any]) -> Iterator[Metric]:
    """The operators' controls in force: pauses, and the jobs cancelled while running."""
    paused = GaugeMetricFamily(
        "fastsched_paused", "1 per pause in force (cluster-wide); an empty label matches anything",
        labels=["priority", "command", "queue"],
    )
    for pause in current.get("paused", []):
        paused.add_metric([pause["priority"] or "", pause["command"] or "", pause["queue"] or ""], 1)
    whole = GaugeMetricFamily(
        "fastsched_priority_paused", "1 while a pause holds every job of the priority", labels=["priority"]
    )
    # Pending jobs set aside by a pause of their command or queue: fastsched_queue_jobs counts them
    # in no state (neither waiting nor deferred), so without this they would vanish from the graphs.
    aside = GaugeMetricFamily(
        "fastsched_paused_jobs", "pending jobs set aside by a pause of their command or queue (in no other state)",
        labels=["priority"],
    )
    cancelled = GaugeMetricFamily(
        "fastsched_cancelled_jobs", "jobs kept as cancelled (stopped while running at an operator's request)",
        labels=["priority"],
    )
    for p in current["priorities"]:
        whole.add_metric([p["name"]], int(bool(p.get("paused"))))
        aside.add_metric([p["name"]], p.get("paused_jobs", 0))
        cancelled.add_metric([p["name"]], p.get("cancelled", 0))
    yield from (paused, whole, aside, cancelled)


def _pool_metrics(metrics: PoolMetrics, monitor: Monitor) -> Iterator[Metric]:
    completed = CounterMetricFamily(
        "fastsched_jobs_completed", "jobs this master completed", labels=["priority"]
    )
    by_priority = metrics.jobs_done_by_priority
    for p in Priority:
        completed.add_metric([p.name], by_priority.get(int(p), 0))
    yield completed
    for key, help_text in exported_counters():
        counter = CounterMetricFamily(f"fastsched_{key}", help_text)
        counter.add_metric([], getattr(metrics, key))
        yield counter
    db = CounterMetricFamily(
        "fastsched_db_seconds", "database time of this master by kind: count (plan), stat, claim, write, other",
        labels=["kind"],
    )
    for kind in DbKind:
        db.add_metric([kind.value], metrics.db_seconds_by_kind[kind])
    yield db
    jobs = CounterMetricFamily("fastsched_job_seconds", "time children spent running jobs")
    jobs.add_metric([], metrics.job_seconds)
    yield jobs
    gauges = (
        ("fastsched_workers_configured", "child processes this master is configured to run", monitor.workers),
        ("fastsched_workers", "child processes alive (updated with the Load line)", metrics.workers),
        ("fastsched_workers_busy", "children running a batch (updated with the Load line)",
         metrics.busy_workers),
        ("fastsched_db_up", "1 while this master's database connection works", int(metrics.db_up)),
        ("fastsched_last_cycle_seconds", "duration of the master's last cycle", metrics.last_cycle_seconds),
        ("fastsched_last_cycle_timestamp_seconds", "when the master's last cycle ended (epoch seconds)",
         monitor.last_cycle_at),
        ("fastsched_started_timestamp_seconds", "when the master started (epoch seconds)", metrics.started),
    )
    for name, help_text, value in gauges:
        gauge = GaugeMetricFamily(name, help_text)
        gauge.add_metric([], value)
        yield gauge
