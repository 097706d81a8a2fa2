"""One frozen settings object for the pool, from flags, FASTSCHED_* environment and defaults, and
the one place its rules live.

The CLI (fastsched/cli/) builds it from text; the pool (fastsched/pool.py) only reads it. What a
value must be is said once, here: :func:`setting_problem` for one field (the CLI asks it for each
flag and variable as it parses them, so its messages name the flag or variable and the text),
:func:`validate` for a whole PoolSettings (every field again, then the rules between fields), as
``Pool(settings)`` and ``fastsched-pool start`` both run it. A bad value is a
:class:`SettingError` (a ConfigError) naming the field.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
import socket
from collections.abc import Callable, Mapping
from typing import Any

from fastsched.batching import DEFAULT_BATCH_BUDGET_MS
from fastsched.dsn import DSN, parse_dsn
from fastsched.errors import ConfigError
from fastsched.logsetup import LOG_FORMATS, LOG_LEVELS
from fastsched.priority import Priority
from fastsched.retry_policy import MAX_DELAY, parse_retry_delay

# The most jobs one batch may hold: batches are sized by expected run time (fastsched.batching,
# --batch-budget) up to this cap. No-op jobs reach it; a drain's claims then cost little per job.
DEFAULT_FETCH_LIMIT = 1000
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
    batch_budget_ms: float = DEFAULT_BATCH_BUDGET_MS  # expected run time a batch may hold
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
    queues: tuple[str, ...] = ()  # the queues this pool claims from (--queues); () = every queue
    max_jobs_per_child: int = 0  # a child that has run this many jobs is replaced; 0 = never
    max_memory_per_child: float = 0.0  # MB of resident memory past which a child is replaced; 0 = never


# --- the rules -----------------------------------------------------------------------------------

MAX_HOST_ID_LENGTH = 255  # characters: the width of process.host and workerqueue.host
LEASE_HEARTBEATS = 3  # the lease must cover this many heartbeat intervals (one late beat is no death)
LOOPBACK_NAMES = ("localhost", "localhost.")
_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")

# A check takes a value and returns None if it is fine, else what the value must be.
Check = Callable[[Any], "str | None"]


class SettingError(ConfigError):
    """A setting is invalid: ``field`` is the PoolSettings field, ``problem`` what it must be."""

    def __init__(self, field: str, problem: str, value: Any = None, *, shown: str | None = None) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: invalid value {shown if shown is not None else repr(value)}: {problem}")


def whole_number(minimum: int) -> Check:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            return f"must be a whole number of {minimum} or more"
        return None

    return check


def number(minimum: float, *, above: bool = False) -> Check:
    """A finite number of ``minimum`` or more (``above``: more than ``minimum``)."""
    expected = f"must be a number above {minimum:g}" if above else f"must be a number of {minimum:g} or more"

    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return expected
        return expected if (value <= minimum if above else value < minimum) else None

    return check


def one_of(choices: tuple[str, ...]) -> Check:
    def check(value: Any) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}"

    return check


def _optional(check: Check) -> Check:
    return lambda value: None if value is None else check(value)


def _text(value: Any) -> str | None:
    return None if isinstance(value, str) and value else "must not be empty"


def _flag(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def _dsn(value: Any) -> str | None:
    return None if isinstance(value, DSN) else "must be a DSN (fastsched.dsn.parse_dsn)"


def host_id_problem(value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return "must not be empty"
    if len(value) > MAX_HOST_ID_LENGTH:
        return f"must be at most {MAX_HOST_ID_LENGTH} characters"
    if not value.isprintable() or any(c.isspace() for c in value):
        return "must be printable, without spaces"
    return None


def _modules(value: Any) -> str | None:
    if not isinstance(value, tuple) or not all(isinstance(name, str) and _MODULE_NAME.fullmatch(name) for name in value):
        return "not a module name (like myapp.jobs)"
    return None


def _retry_delay(value: Any) -> str | None:
    try:
        parse_retry_delay(value)
    except ConfigError:
        return f"must be 'friendica' or a number of seconds from 0 to {MAX_DELAY:.0f}"
    return None


minutes_problem = number(0)  # a run-time limit in minutes; 0 means none


def _queues(value: Any) -> str | None:
    from fastsched.validation import queue_error

    if not isinstance(value, (tuple, list)):
        return "must be a tuple of queue names"
    for name in value:
        problem = queue_error(name)
        if problem:
            return problem
    return None


def _max_duration(value: Any) -> str | None:
    if not isinstance(value, Mapping):
        return "must map priorities to minutes"
    for priority, minutes in value.items():
        if priority not in {int(p) for p in Priority} or isinstance(priority, bool):
            return f"{priority!r} is not one of the priorities {', '.join(str(int(p)) for p in Priority)}"
        problem = minutes_problem(minutes)
        if problem:
            return f"minutes {minutes!r} for priority {priority}: {problem}"
    return None


def split_http_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9100`` for IPv6) as (host without brackets, port); port 0 lets the
    system choose. ValueError saying what is expected."""
    host, sep, port = address.rpartition(":")
    if not sep or not host.strip("[]"):
        raise ValueError("must be HOST:PORT, like 127.0.0.1:9100")
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        raise ValueError("write an IPv6 address in brackets, like [::1]:9100")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("the port must be a number from 0 to 65535")
    return host.strip("[]"), int(port)


def _http(value: Any) -> str | None:
    if not isinstance(value, str):
        return "must be HOST:PORT, like 127.0.0.1:9100"
    try:
        split_http_address(value)
    except ValueError as exc:
        return str(exc)
    return None


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (a name or address, brackets allowed) means this machine only: the
    ``localhost`` name in any case, or a loopback address. The one rule for what a token-less
    HTTP server may bind to and which Host headers it answers."""
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


FIELD_CHECKS: dict[str, Check] = {
    "dsn": _dsn,
    "workers": whole_number(1),
    "imports": _modules,
    "fetch_limit": whole_number(1),
    "batch_budget_ms": number(0, above=True),
    "until_empty": _flag,
    "max_load": number(0),
    "host_id": host_id_problem,
    "poll_interval": number(0, above=True),
    "lease": number(0, above=True),
    "heartbeat_interval": number(0, above=True),
    "shutdown_grace": number(0),
    "kill_grace": number(0),
    "retry_limit": whole_number(0),
    "crash_limit": whole_number(1),
    "retry_delay": _retry_delay,
    "retention": number(0),
    "maintenance_interval": number(0, above=True),
    "max_duration_minutes": _max_duration,
    "pidfile": _optional(_text),
    "http": _optional(_http),
    "http_token": _optional(_text),
    "log_format": one_of(LOG_FORMATS),
    "log_level": one_of(LOG_LEVELS),
    "queues": _queues,
    "max_jobs_per_child": whole_number(0),
    "max_memory_per_child": number(0),
}


def setting_problem(field: str, value: Any) -> str | None:
    """What ``value`` must be to be the setting ``field``, or None when it is fine."""
    check = FIELD_CHECKS.get(field)
    if check is None:  # a new PoolSettings field must bring its rule here
        raise LookupError(f"PoolSettings.{field} has no rule in fastsched.config.FIELD_CHECKS")
    return check(value)


def validate(settings: PoolSettings) -> None:
    """SettingError for the first invalid field of ``settings``, or rule between fields."""
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        problem = setting_problem(field.name, value)
        if problem:
            shown = "(value not shown)" if field.name == "http_token" else None
            raise SettingError(field.name, problem, value, shown=shown)
    least_lease = LEASE_HEARTBEATS * settings.heartbeat_interval
    if settings.lease < least_lease:
        raise SettingError(
            "lease",
            f"must be at least {least_lease:g} s ({LEASE_HEARTBEATS} heartbeat intervals of "
            f"{settings.heartbeat_interval:g} s), or one late heartbeat gets healthy children killed "
            f"and the master declared dead",
            settings.lease,
        )
    if settings.http and not settings.http_token and not is_loopback_host(split_http_address(settings.http)[0]):
        raise SettingError(
            "http",
            "is reachable from other hosts: give a bearer token with --http-token (or FASTSCHED_HTTP_TOKEN, "
            "or http_token in PoolSettings), or bind to 127.0.0.1",
            settings.http,
        )
