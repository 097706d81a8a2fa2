"""The options of ``fastsched-pool start``: flag, FASTSCHED_* twin, parser, help and default.

One table, :data:`START_OPTIONS`, drives the argument parser, the ``--help`` text and the
settings: a value comes from the flag, else from the environment variable, else from
``PoolSettings``' default. Parsers take text and raise ``ValueError`` saying what is expected;
:func:`resolve` turns that into a ``ConfigError`` naming the flag or variable and the value.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fastsched.config import (
    DEFAULT_CRASH_LIMIT,
    DEFAULT_FETCH_LIMIT,
    DEFAULT_LEASE,
    DEFAULT_MAX_DURATION_MINUTES,
    DEFAULT_RETENTION,
    DEFAULT_RETRY_LIMIT,
    DEFAULT_SHUTDOWN_GRACE,
)
from fastsched.dsn import DEFAULT_DSN, DSN, parse_dsn
from fastsched.errors import ConfigError
from fastsched.logsetup import LOG_FORMATS, LOG_LEVELS
from fastsched.priority import Priority

MAX_HOST_ID_LENGTH = 255  # characters: the width of process.host and workerqueue.host
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")
_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


# --- parsers: text in, value out, ValueError saying what is expected ---------------------------


def _int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError("not a whole number") from None


def _float(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError("not a number") from None
    if not math.isfinite(value):
        raise ValueError("not a finite number")
    return value


def parse_positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise ValueError("must be a whole number of 1 or more")
    return value


def parse_nonneg_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise ValueError("must be a whole number of 0 or more")
    return value


def parse_positive_float(text: str) -> float:
    value = _float(text)
    if value <= 0:
        raise ValueError("must be a number above 0")
    return value


def parse_nonneg_float(text: str) -> float:
    value = _float(text)
    if value < 0:
        raise ValueError("must be a number of 0 or more")
    return value


def parse_bool(text: str) -> bool:
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"must be one of {', '.join(TRUE_WORDS + FALSE_WORDS)}")


def parse_dsn_text(text: str) -> DSN:
    try:
        return parse_dsn(text)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


def parse_host_id(text: str) -> str:
    value = text.strip()
    if not value:
        raise ValueError("must not be empty")
    if len(value) > MAX_HOST_ID_LENGTH:
        raise ValueError(f"must be at most {MAX_HOST_ID_LENGTH} characters")
    if not value.isprintable() or any(c.isspace() for c in value):
        raise ValueError("must be printable, without spaces")
    return value


def parse_module(text: str) -> str:
    value = text.strip()
    if not _MODULE_NAME.fullmatch(value):
        raise ValueError("not a module name (like myapp.jobs)")
    return value


def parse_retry_delay(text: str) -> str:
    from fastsched.scheduler import MAX_DELAY, parse_retry_delay  # the pool's own rule, checked early

    try:
        parse_retry_delay(text)
    except ConfigError:
        raise ValueError(f"must be 'friendica' or a number of seconds from 0 to {MAX_DELAY:.0f}") from None
    return text.strip().lower()


def parse_priority(text: str) -> int:
    word = text.strip()
    names = ", ".join(p.name for p in Priority)
    numbers = ", ".join(str(int(p)) for p in Priority)
    try:
        return int(Priority[word.upper()]) if not word.isdigit() else int(Priority(int(word)))
    except (KeyError, ValueError):
        raise ValueError(f"unknown priority {word!r} (use {names} or {numbers})") from None


def parse_max_duration(text: str) -> tuple[int, float]:
    """``PRIORITY=MINUTES``, e.g. ``HIGH=10`` or ``20=10``; 0 minutes means no limit."""
    priority, sep, minutes = text.partition("=")
    if not sep:
        raise ValueError("must be PRIORITY=MINUTES, like HIGH=10")
    try:
        value = parse_nonneg_float(minutes)
    except ValueError as exc:
        raise ValueError(f"minutes {minutes.strip()!r}: {exc}") from None
    return parse_priority(priority), value


def parse_http(text: str) -> str:
    """``HOST:PORT`` (``[::1]:9100`` for IPv6); port 0 lets the system choose."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host.strip("[]"):
        raise ValueError("must be HOST:PORT, like 127.0.0.1:9100")
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        raise ValueError("write an IPv6 address in brackets, like [::1]:9100")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("the port must be a number from 0 to 65535")
    return f"{host}:{int(port)}"


def parse_token(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty")
    return text.strip()


def parse_path(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty")
    return os.path.abspath(os.path.expanduser(text.strip()))


def parse_choice(choices: Sequence[str], *, upper: bool = False) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().upper() if upper else text.strip().lower()
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return value

    return parse


def redact_dsn(text: str) -> str:
    """A DSN as typed, with any password replaced by ``***`` (for messages about a malformed one)."""
    head, at, tail = text.rpartition("@")
    if not at:
        return text
    scheme, sep, userinfo = head.partition("://")
    if not sep:
        scheme, userinfo = "", head
    if ":" not in userinfo:
        return text
    return f"{scheme}{sep}{userinfo.partition(':')[0]}:***@{tail}"


# --- the table ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Option:
    flag: str  # "--fetch-limit"
    field: str  # the PoolSettings field it sets
    parse: Callable[[str], Any]  # one item's text -> value (ValueError says what is expected)
    help: str
    default_text: str  # the default, as --help shows it
    metavar: str | None = None
    kind: str = "value"  # "value", "flag" (no argument), "list" (repeatable, comma-separated in env) or "pairs"
    env_name: str = ""  # FASTSCHED_<FIELD> unless given
    secret: bool = False  # never echo the value in a message

    @property
    def env(self) -> str:
        return self.env_name or "FASTSCHED_" + self.field.upper()


def _default_max_duration() -> str:
    return ",".join(f"{Priority(p).name}={minutes:g}" for p, minutes in DEFAULT_MAX_DURATION_MINUTES.items())


START_OPTIONS: tuple[Option, ...] = (
    Option("--dsn", "dsn", parse_dsn_text, "the database: mysql://user:password@host:3306/db, "
           "mariadb://..., or sqlite:///path", DEFAULT_DSN, "DSN"),
    Option("--workers", "workers", parse_positive_int, "child processes running jobs",
           f"the number of CPUs ({os.cpu_count() or 1})", "N"),
    Option("--import", "imports", parse_module, "modules to import that register commands with "
           "@fastsched.task (the working directory is searched first); repeatable; the variable is "
           "comma-separated", "none", "MODULE", kind="list", env_name="FASTSCHED_IMPORT"),
    Option("--fetch-limit", "fetch_limit", parse_positive_int, "jobs a child is given per claim",
           str(DEFAULT_FETCH_LIMIT), "K"),
    Option("--until-empty", "until_empty", parse_bool, "exit 0 once no job is runnable or running "
           "(the variable takes 1/true/yes or 0/false/no)", "off", kind="flag"),
    Option("--max-load", "max_load", parse_nonneg_float, "claim nothing while the 1-minute load "
           "average is above this; 0 turns the governor off", "0", "L"),
    Option("--host-id", "host_id", parse_host_id, "this master's name in the database; a second "
           "pool with the same host id and database is refused", "the hostname", "ID"),
    Option("--lease", "lease", parse_positive_float, "seconds without a heartbeat after which a "
           "master is declared dead and its jobs are released", f"{DEFAULT_LEASE:g}", "SECONDS"),
    Option("--shutdown-grace", "shutdown_grace", parse_nonneg_float, "seconds running jobs may take "
           "to finish after the first SIGTERM/SIGINT", f"{DEFAULT_SHUTDOWN_GRACE:g}", "SECONDS"),
    Option("--retry-limit", "retry_limit", parse_nonneg_int, "retries of a failing job before it is "
           "kept as failed", str(DEFAULT_RETRY_LIMIT), "N"),
    Option("--crash-limit", "crash_limit", parse_positive_int, "child processes a job may kill "
           "before it is failed as a poison pill", str(DEFAULT_CRASH_LIMIT), "N"),
    Option("--retry-delay", "retry_delay", parse_retry_delay, "delay before a retry: 'friendica' "
           "((retrial+2)^4 + rand(1,30)*retrial seconds) or a fixed number of seconds",
           "friendica", "friendica|SECONDS"),
    Option("--retention", "retention", parse_nonneg_float, "seconds done jobs are kept before they "
           "are purged", f"{DEFAULT_RETENTION:g}", "SECONDS"),
    Option("--max-duration", "max_duration_minutes", parse_max_duration, "run-time limit of a "
           "priority's jobs, e.g. HIGH=10 or 20=10 (0 = none); repeatable; the variable is "
           "comma-separated", _default_max_duration(), "PRIORITY=MINUTES", kind="pairs",
           env_name="FASTSCHED_MAX_DURATION"),
    Option("--pidfile", "pidfile", parse_path, "the master's pidfile",
           "<runtime dir>/fastsched-<uid>/<database digest>/<host id>.pid", "PATH"),
    Option("--http", "http", parse_http, "serve /metrics, /status.json and the dashboard at "
           "HOST:PORT", "off", "HOST:PORT"),
    Option("--http-token", "http_token", parse_token, "bearer token the HTTP endpoints require "
           "(needed when --http is not on loopback); prefer the variable: flags show in ps",
           "none", "TOKEN", secret=True),
    Option("--log-format", "log_format", parse_choice(LOG_FORMATS), "text, or json (one object "
           "per line)", "text", "text|json"),
    Option("--log-level", "log_level", parse_choice(LOG_LEVELS, upper=True), "the least severe "
           "level logged: " + ", ".join(LOG_LEVELS), "INFO", "LEVEL"),
)


def _parse_one(option: Option, source: str, text: str) -> Any:
    try:
        return option.parse(text)
    except ValueError as exc:
        if option.secret:
            shown = "(value not shown)"
        elif option.field == "dsn":
            shown = repr(redact_dsn(text))
        else:
            shown = repr(text)
        raise ConfigError(f"{source}: invalid value {shown}: {exc}") from None


def resolve(option: Option, raw: Any, environ: Mapping[str, str]) -> Any:
    """The option's value from ``raw`` (what argparse stored for the flag, None if not given),
    else from the environment, else None (meaning: the default). ConfigError on a bad value."""
    env_text = environ.get(option.env, "")
    if option.kind == "pairs":
        # Per priority: the defaults, then the variable, then the flags.
        merged: dict[int, float] = {}
        for text in _split(env_text):
            priority, minutes = _parse_one(option, option.env, text)
            merged[priority] = minutes
        for text in raw or ():
            priority, minutes = _parse_one(option, option.flag, text)
            merged[priority] = minutes
        return merged or None
    if raw is not None:
        if option.kind == "list":
            return tuple(_parse_one(option, option.flag, item) for text in raw for item in _split(text))
        if option.kind == "flag":
            return True
        return _parse_one(option, option.flag, raw)
    if not env_text.strip():
        return None
    if option.kind == "list":
        return tuple(_parse_one(option, option.env, item) for item in _split(env_text))
    return _parse_one(option, option.env, env_text)


def _split(text: str) -> list[str]:
    return [item for item in (part.strip() for part in text.split(",")) if item]
