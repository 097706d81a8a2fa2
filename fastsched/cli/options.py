"""The options of ``fastsched-pool start``: flag, FASTSCHED_* twin, parser, help and default.

One table, :data:`START_OPTIONS`, drives the argument parser, the ``--help`` text and the
settings: a value comes from the flag, else from the environment variable, else from
``PoolSettings``' default. A parser here only reads text (a number, a word, a DSN) and raises
``ValueError`` saying what is expected; what a setting's value must be is
``fastsched.config``'s rule, which :func:`resolve` applies to each value it reads, turning either
failure into a ``ConfigError`` naming the flag or variable and the text. :func:`build_settings`
makes the PoolSettings and runs ``config.validate`` on it (the rules between settings), naming
the flag or variable of a setting it refuses.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from typing import Any

from fastsched import config
from fastsched.batching import DEFAULT_BATCH_BUDGET_MS
from fastsched.config import (
    DEFAULT_CRASH_LIMIT,
    DEFAULT_FETCH_LIMIT,
    DEFAULT_KILL_GRACE,
    DEFAULT_LEASE,
    DEFAULT_MAX_DURATION_MINUTES,
    DEFAULT_RETENTION,
    DEFAULT_RETRY_LIMIT,
    DEFAULT_SHUTDOWN_GRACE,
    PoolSettings,
    SettingError,
)
from fastsched.dsn import DEFAULT_DSN, DSN, parse_dsn
from fastsched.errors import ConfigError
from fastsched.logsetup import LOG_LEVELS
from fastsched.priority import Priority

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


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


def _checked(read: Callable[[str], Any], check: config.Check) -> Callable[[str], Any]:
    """A parser that reads with ``read`` and refuses what ``check`` (a config rule) refuses."""

    def parse(text: str) -> Any:
        value = read(text)
        problem = check(value)
        if problem:
            raise ValueError(problem)
        return value

    return parse


# For the arguments of other subcommands (--limit, --wait, a job id...): the settings' own rules.
parse_positive_int: Callable[[str], int] = _checked(_int, config.whole_number(1))
parse_nonneg_int: Callable[[str], int] = _checked(_int, config.whole_number(0))
parse_positive_float: Callable[[str], float] = _checked(_float, config.number(0, above=True))
parse_nonneg_float: Callable[[str], float] = _checked(_float, config.number(0))


def _strip(text: str) -> str:
    return text.strip()


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
    problem = config.host_id_problem(value)
    if problem:
        raise ValueError(problem)
    return value


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
        value = _checked(_float, config.minutes_problem)(minutes)
    except ValueError as exc:
        raise ValueError(f"minutes {minutes.strip()!r}: {exc}") from None
    return parse_priority(priority), value


def parse_http(text: str) -> str:
    """``HOST:PORT`` as config.split_http_address reads it, the port written plainly."""
    host, port = config.split_http_address(text.strip())
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_path(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty")
    return os.path.abspath(os.path.expanduser(text.strip()))


def parse_word(*, upper: bool = False) -> Callable[[str], str]:
    """A word, in the case its setting is written in (the setting's rule says which words)."""

    def parse(text: str) -> str:
        return text.strip().upper() if upper else text.strip().lower()

    return parse


def typed_password(text: str) -> str | None:
    """The password of a DSN as typed (still percent-encoded), or None if ``text`` shows none."""
    head, at, _ = text.rpartition("@")
    if not at:
        return None
    _, sep, userinfo = head.partition("://")
    if not sep:
        userinfo = head
    _, colon, password = userinfo.partition(":")
    return password if colon and password else None


def redact_dsn(text: str) -> str:
    """A DSN as typed, with any password replaced by ``***`` (for messages about a malformed one)."""
    head, at, tail = text.rpartition("@")
    if not at or typed_password(text) is None:
        return text
    scheme, sep, userinfo = head.partition("://")
    if not sep:
        scheme, userinfo = "", head
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
    Option("--import", "imports", _strip, "modules to import that register commands with "
           "@fastsched.task, from the installed packages and PYTHONPATH (never the working directory "
           "unless PYTHONPATH names it); repeatable; the variable is comma-separated", "none", "MODULE", kind="list", env_name="FASTSCHED_IMPORT"),
    Option("--fetch-limit", "fetch_limit", parse_positive_int, "the most jobs a child is given in one "
           "batch (batches hold as many jobs of one priority as fit --batch-budget, up to this)",
           str(DEFAULT_FETCH_LIMIT), "K"),
    Option("--batch-budget", "batch_budget_ms", parse_positive_float, "milliseconds of expected run time "
           "one batch may hold, by each command's recent run times (a command never seen yet gets one "
           "job; a slower one than this goes one at a time)", f"{DEFAULT_BATCH_BUDGET_MS:g}", "MS",
           env_name="FASTSCHED_BATCH_BUDGET"),
    Option("--until-empty", "until_empty", parse_bool, "exit 0 once no job is runnable or running "
           "(the variable takes 1/true/yes or 0/false/no)", "off", kind="flag"),
    Option("--max-load", "max_load", parse_nonneg_float, "claim nothing while the 1-minute load "
           "average is above this; 0 turns the governor off", "0", "L"),
    Option("--host-id", "host_id", parse_host_id, "this master's name in the database; a second "
           "pool with the same host id and database is refused", "the hostname", "ID"),
    Option("--lease", "lease", parse_positive_float, "seconds without a heartbeat after which a "
           "master is declared dead and its jobs are released; at least 3 heartbeat intervals (3 s)", f"{DEFAULT_LEASE:g}", "SECONDS"),
    Option("--shutdown-grace", "shutdown_grace", parse_nonneg_float, "seconds running jobs may take "
           "to finish after the first SIGTERM/SIGINT (and at most a cancelled job, before SIGKILL: "
           f"the shorter of this and {DEFAULT_KILL_GRACE:g} s)", f"{DEFAULT_SHUTDOWN_GRACE:g}", "SECONDS"),
    Option("--retry-limit", "retry_limit", parse_nonneg_int, "retries of a failing job before it is "
           "kept as failed", str(DEFAULT_RETRY_LIMIT), "N"),
    Option("--crash-limit", "crash_limit", parse_positive_int, "child processes a job may kill "
           "before it is failed as a poison pill", str(DEFAULT_CRASH_LIMIT), "N"),
    Option("--retry-delay", "retry_delay", parse_word(), "delay before a retry: 'friendica' "
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
    Option("--http-token", "http_token", _strip, "bearer token the HTTP endpoints require "
           "(needed when --http is not on loopback); prefer the variable: flags show in ps",
           "none", "TOKEN", secret=True),
    Option("--log-format", "log_format", parse_word(), "text, or json (one object "
           "per line)", "text", "text|json"),
    Option("--log-level", "log_level", parse_word(upper=True), "the least severe "
           "level logged: " + ", ".join(LOG_LEVELS), "INFO", "LEVEL"),
    Option("--queues", "queues", _strip, "claim only jobs of these queues (comma-separated, like "
           "mail,default); repeatable", "every queue", "QUEUE,...", kind="list"),
    Option("--max-jobs-per-child", "max_jobs_per_child", parse_nonneg_int, "replace a child once it "
           "has been given this many jobs (after its batch; not a crash); 0 = never", "0", "N"),
    Option("--max-memory-per-child", "max_memory_per_child", parse_nonneg_float, "replace a child "
           "whose resident memory passed this many MB (after its batch; not a crash); 0 = never",
           "0", "MB"),
)


def _shown(option: Option, text: str) -> str:
    if option.secret:
        return "(value not shown)"
    if option.field == "dsn":
        return repr(redact_dsn(text))
    return repr(text)


def _as_setting(option: Option, value: Any) -> Any:
    """One item of a list or pairs option, as the setting's rule sees a whole value."""
    if option.kind == "list":
        return (value,)
    if option.kind == "pairs":
        return dict([value])
    return value


def _parse_one(option: Option, source: str, text: str) -> Any:
    try:
        value = option.parse(text)
        problem = config.setting_problem(option.field, _as_setting(option, value))
        if problem:
            raise ValueError(problem)
    except ValueError as exc:
        raise ConfigError(f"{source}: invalid value {_shown(option, text)}: {exc}") from None
    return value


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


def build_settings(args: argparse.Namespace, environ: Mapping[str, str]) -> tuple[PoolSettings, dict[str, str]]:
    """PoolSettings from the flags in ``args``, then ``environ``, then the defaults, checked by
    ``config.validate``.

    Returns the settings and, per field set by a flag or variable, where it came from (for messages).
    Raises ConfigError naming the flag or variable and the bad value.
    """
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    texts: dict[str, str] = {}
    for option in START_OPTIONS:
        raw = getattr(args, option.field, None)
        value = resolve(option, raw, environ)
        if value is not None:
            values[option.field] = value
            sources[option.field] = option.flag if raw is not None else option.env
            if option.kind == "value":
                texts[option.field] = _shown(option, raw if raw is not None else environ.get(option.env, ""))
    if "max_duration_minutes" in values:
        values["max_duration_minutes"] = {**DEFAULT_MAX_DURATION_MINUTES, **values["max_duration_minutes"]}
    settings = PoolSettings(**values)
    try:
        config.validate(settings)
    except SettingError as exc:
        refused = next((o for o in START_OPTIONS if o.field == exc.field), None)
        if refused is None:
            raise
        where = sources.get(exc.field, refused.flag)
        shown = texts.get(exc.field) or _shown(refused, str(getattr(settings, exc.field)))
        raise ConfigError(f"{where}: invalid value {shown}: {exc.problem}") from None
    return settings, sources
