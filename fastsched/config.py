"""One frozen settings object for the pool, from flags, FASTSCHED_* environment and defaults.

The CLI (fastsched/cli/) builds it; the pool (fastsched/pool.py) only reads it.
"""
from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Mapping

from fastsched.dsn import DSN, parse_dsn
from fastsched.priority import Priority

DEFAULT_FETCH_LIMIT = 1  # jobs per child batch, as Friendica's worker_fetch_limit
DEFAULT_POLL_INTERVAL = 0.05  # seconds between polls when idle and not woken
DEFAULT_LEASE = 30.0  # seconds without a heartbeat before a master is declared dead
DEFAULT_HEARTBEAT_INTERVAL = 1.0  # seconds
DEFAULT_SHUTDOWN_GRACE = 30.0  # seconds running jobs may take to finish after the first signal
DEFAULT_KILL_GRACE = 5.0  # seconds between SIGTERM and SIGKILL for a job over its time limit
DEFAULT_RETRY_LIMIT = 15  # Friendica's worker_defer_limit
DEFAULT_CRASH_LIMIT = 3  # children a job may kill before it is failed as a poison pill
DEFAULT_RETENTION = 3600.0  # seconds done jobs are kept before purge, as Friendica
DEFAULT_MAINTENANCE_INTERVAL = 5.0  # seconds between recovery/purge/malformed-row sweeps
# Friendica's default run-time limits, in minutes, per priority (0 = no limit).
DEFAULT_MAX_DURATION_MINUTES: Mapping[int, float] = {
    Priority.CRITICAL: 720,
    Priority.HIGH: 10,
    Priority.MEDIUM: 60,
    Priority.LOW: 180,
    Priority.NEGLIGIBLE: 720,
}


@dataclasses.dataclass(frozen=True)
class PoolSettings:
    dsn: DSN = dataclasses.field(default_factory=parse_dsn)
    workers: int = dataclasses.field(default_factory=lambda: os.cpu_count() or 1)
    imports: tuple[str, ...] = ()  # modules that register commands with @fastsched.task
    fetch_limit: int = DEFAULT_FETCH_LIMIT
    until_empty: bool = False  # exit 0 once nothing is runnable or running
    max_load: float = 0.0  # load governor ceiling; 0 = off
    host_id: str = dataclasses.field(default_factory=socket.gethostname)
    poll_interval: float = DEFAULT_POLL_INTERVAL
    lease: float = DEFAULT_LEASE
    heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL
    shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE
    kill_grace: float = DEFAULT_KILL_GRACE
    retry_limit: int = DEFAULT_RETRY_LIMIT
    crash_limit: int = DEFAULT_CRASH_LIMIT
    # "friendica": (retrial+2)^4 + rand(1,30)*retrial seconds; or a fixed number of seconds.
    retry_delay: str = "friendica"
    retention: float = DEFAULT_RETENTION
    maintenance_interval: float = DEFAULT_MAINTENANCE_INTERVAL
    max_duration_minutes: Mapping[int, float] = dataclasses.field(
        default_factory=lambda: dict(DEFAULT_MAX_DURATION_MINUTES)
    )
    pidfile: str | None = None  # None: derived from the database identity and host id
    http: str | None = None  # "127.0.0.1:9100" serves /metrics, /status.json and the dashboard
    http_token: str | None = None  # bearer token required when bound beyond loopback
    log_format: str = "text"  # or "json"
    log_level: str = "INFO"
