"""fastsched-pool: run, stop and look after the worker pool.

    fastsched-pool init  [--dsn DSN]
    fastsched-pool start [--dsn DSN] [--workers N] [--import MODULE ...] [--until-empty] ...
    fastsched-pool stop  [--dsn DSN] [--host-id ID] [--pidfile PATH] [--wait SECONDS] [--force]
    fastsched-pool failed [--limit N] | retry ID|--all | cancel ID | purge [--older-than S] [--include-failed]
    fastsched-pool status [--json] [--watch [--interval S]] | explain ID [--json]
    fastsched-pool demo   [--jobs N] [--workers N] [--dsn DSN]

Every option of ``start`` has a FASTSCHED_* environment twin (``--fetch-limit`` and
FASTSCHED_FETCH_LIMIT); a flag wins over the environment, which wins over the default. Settings
are checked in full before anything happens: a bad value is a one-line message naming the flag
or variable and the value, and exit code 2.

Exit codes:
    0  EXIT_OK               done (the pool stopped cleanly, the command did what it said)
    1  EXIT_FAILURE          the command failed (e.g. ``stop`` found no running pool)
    2  EXIT_CONFIG           a flag, environment variable or --import module is invalid
    3  EXIT_DB_UNREACHABLE   the database could not be reached
    4  EXIT_KILLED           the pool was force-stopped (second signal): running jobs were killed
    5  EXIT_ALREADY_RUNNING  a pool with this host id already runs against this database

Subcommands live in ``COMMANDS``; add one with :func:`register` (see ``cmd_init`` for the shape),
in this module or in a module named in ``COMMAND_MODULES`` (``fastsched/cli_ops.py``: status,
explain, demo; ``fastsched/cli_jobs.py``: failed, retry, cancel, purge).
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fastsched import logsetup, pidfile
from fastsched.cli_options import (
    START_OPTIONS,
    Option,
    parse_host_id,
    parse_nonneg_float,
    parse_positive_int,
    resolve,
)
from fastsched.config import DEFAULT_MAX_DURATION_MINUTES, PoolSettings
from fastsched.dsn import DEFAULT_DSN, DSN, parse_dsn
from fastsched.errors import (
    ConfigError,
    DatabaseUnavailable,
    FastschedError,
    PoolAlreadyRunning,
)

log = logging.getLogger(__name__)

PROG = "fastsched-pool"
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_DB_UNREACHABLE = 3
EXIT_KILLED = 4
EXIT_ALREADY_RUNNING = 5
DEFAULT_STOP_WAIT = 60.0  # seconds ``stop`` waits for the pool to exit
STOP_POLL_INTERVAL = 0.1  # seconds between checks while ``stop`` waits
FORCE_SIGNAL_GAP = 0.5  # seconds between the two SIGTERMs of ``stop --force``, so none is coalesced

EXIT_CODES_HELP = """\
exit codes:
  0  ok
  1  failure (e.g. stop: no running pool)
  2  configuration error (a flag, FASTSCHED_* variable or --import module is invalid)
  3  database unreachable
  4  killed (forced shutdown: a second SIGTERM/SIGINT)
  5  already running (a pool with this host id runs against this database)
"""


# --- output -------------------------------------------------------------------------------------


class Console:
    """Where a command's messages go: stdout for results, stderr for errors.

    Once ``start`` has set up JSON logging, errors are JSON log lines too, so that every line a
    pool writes to stderr parses. Known secrets are replaced by ``***`` in everything written.
    """

    def __init__(self) -> None:
        self.json = False
        self.secrets: list[str] = []

    def _scrub(self, text: str) -> str:
        for secret in self.secrets:
            if secret:
                text = text.replace(secret, logsetup.MASK)
        return text

    def say(self, message: str) -> None:
        print(self._scrub(message), flush=True)

    def error(self, message: str) -> None:
        message = self._scrub(message)
        if self.json:
            log.error("%s", message)
        else:
            print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)


# --- the subcommand registry --------------------------------------------------------------------

Runner = Callable[[argparse.Namespace, Console], int]


@dataclasses.dataclass(frozen=True)
class Command:
    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Runner


COMMANDS: dict[str, Command] = {}
# Modules whose import registers more subcommands (they import this module for ``register``).
COMMAND_MODULES: tuple[str, ...] = ("fastsched.cli_ops", "fastsched.cli_jobs")


def register(name: str, help: str, configure: Callable[[argparse.ArgumentParser], None]) -> Callable[[Runner], Runner]:
    """Add the subcommand ``name``: ``configure(parser)`` adds its arguments, the decorated
    ``run(args, console) -> exit code`` runs it. Errors raised as fastsched exceptions are
    reported and mapped to exit codes by :func:`main`."""

    def decorate(run: Runner) -> Runner:
        if name in COMMANDS:
            raise ValueError(f"subcommand {name!r} is registered twice")
        COMMANDS[name] = Command(name, help, configure, run)
        return run

    return decorate


def _env_help(option: Option) -> str:
    return f"{option.help} [env {option.env}; default: {option.default_text}]".replace("%", "%%")


def _add_option(parser: argparse.ArgumentParser, option: Option) -> None:
    if option.kind == "flag":
        parser.add_argument(option.flag, dest=option.field, action="store_const", const="1", default=None,
                            help=_env_help(option))
    elif option.kind == "list":
        parser.add_argument(option.flag, dest=option.field, action="extend", nargs="+", default=None,
                            metavar=option.metavar, help=_env_help(option))
    elif option.kind == "pairs":
        parser.add_argument(option.flag, dest=option.field, action="append", default=None,
                            metavar=option.metavar, help=_env_help(option))
    else:
        parser.add_argument(option.flag, dest=option.field, default=None, metavar=option.metavar,
                            help=_env_help(option))


def start_option(field: str) -> Option:
    """The option of ``start`` for the PoolSettings field ``field``."""
    return next(option for option in START_OPTIONS if option.field == field)


def add_start_options(parser: argparse.ArgumentParser, *fields: str) -> None:
    """Give another subcommand the options of ``start`` for ``fields``, FASTSCHED_* twins included."""
    for field in fields:
        _add_option(parser, start_option(field))


def load_commands() -> None:
    """Import the COMMAND_MODULES, so that their subcommands are in COMMANDS."""
    for name in COMMAND_MODULES:
        importlib.import_module(name)


def build_parser() -> argparse.ArgumentParser:
    load_commands()
    environment = "environment (a flag wins over its variable, which wins over the default):\n" + "".join(
        f"  {option.env:<28} {option.flag}\n" for option in START_OPTIONS
    )
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run and look after a fastsched worker pool.",
        epilog=EXIT_CODES_HELP + "\n" + environment,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS.values():
        sub = commands.add_parser(
            command.name,
            help=command.help,
            description=command.help,
            epilog=EXIT_CODES_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        command.configure(sub)
    return parser


# --- settings -----------------------------------------------------------------------------------


def resolve_dsn(args: argparse.Namespace, environ: Mapping[str, str]) -> DSN:
    value = resolve(start_option("dsn"), getattr(args, "dsn", None), environ)
    return value if isinstance(value, DSN) else parse_dsn(DEFAULT_DSN)


def build_settings(args: argparse.Namespace, environ: Mapping[str, str]) -> tuple[PoolSettings, dict[str, str]]:
    """PoolSettings from the flags in ``args``, then ``environ``, then the defaults.

    Returns the settings and, per field set by a flag or variable, where it came from (for messages).
    Raises ConfigError naming the flag or variable and the bad value.
    """
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for option in START_OPTIONS:
        raw = getattr(args, option.field, None)
        value = resolve(option, raw, environ)
        if value is not None:
            values[option.field] = value
            sources[option.field] = option.flag if raw is not None else option.env
    if "max_duration_minutes" in values:
        values["max_duration_minutes"] = {**DEFAULT_MAX_DURATION_MINUTES, **values["max_duration_minutes"]}
    settings = PoolSettings(**values)
    if settings.lease <= settings.heartbeat_interval:
        raise ConfigError(
            f"{sources.get('lease', '--lease')}: invalid value {settings.lease:g}: must be more than the "
            f"heartbeat interval ({settings.heartbeat_interval:g} s), or the master is declared dead "
            f"between two heartbeats"
        )
    if settings.http and not settings.http_token and not _is_loopback(settings.http):
        where = sources.get("http", "--http")
        raise ConfigError(
            f"{where} {settings.http!r} is reachable from other hosts: give a bearer token with "
            f"--http-token (or FASTSCHED_HTTP_TOKEN), or bind to 127.0.0.1"
        )
    return settings, sources


def _is_loopback(address: str) -> bool:
    import ipaddress

    host = address.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def import_modules(names: Sequence[str], source: str) -> None:
    """Import the modules that register commands, the working directory first on sys.path (as
    ``celery -A`` does). A failure is a ConfigError naming the module."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    for name in names:
        try:
            importlib.import_module(name)
        except (Exception, SystemExit) as exc:
            detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise ConfigError(f"{source}: cannot import module {name!r} ({detail})") from exc


def _pidfile_path(settings_pidfile: str | None, dsn: DSN, host_id: str) -> str:
    return settings_pidfile or pidfile.default_path(dsn.identity, host_id)


# --- init ---------------------------------------------------------------------------------------


def add_dsn_option(parser: argparse.ArgumentParser) -> None:
    """``--dsn`` with its FASTSCHED_DSN twin, as every subcommand that opens the database has it."""
    add_start_options(parser, "dsn")


def parse_job_id(text: str) -> int:
    """A job id given on the command line; ConfigError if it is not one."""
    try:
        return parse_positive_int(text)
    except ValueError as exc:
        raise ConfigError(f"job id: invalid value {text!r}: {exc}") from None


@register("init", "create the schema (idempotent: existing tables and jobs are kept)", add_dsn_option)
def cmd_init(args: argparse.Namespace, console: Console) -> int:
    dsn = resolve_dsn(args, os.environ)
    console.secrets.append(dsn.password)
    from fastsched.backends import open_backend
    from fastsched.backends.base import SCHEMA_VERSION
    from fastsched.backends.connection import SQLConnection

    backend = open_backend(dsn)
    found: int | None = SCHEMA_VERSION
    try:
        # Only init migrates (the pool and Queue refuse an older schema): see upgrade_schema.
        if isinstance(backend, SQLConnection):
            found = backend.upgrade_schema()
        else:
            backend.init_schema()
    finally:
        backend.close()
    migrated = f", migrated from version {found}" if found is not None and found < SCHEMA_VERSION else ""
    console.say(
        f"schema version {SCHEMA_VERSION} is ready on {dsn}{migrated}: tables workerqueue, fastsched_host, "
        f"process and fastsched_meta exist (existing tables and jobs were kept)"
    )
    return EXIT_OK


# --- start --------------------------------------------------------------------------------------


def _configure_start(parser: argparse.ArgumentParser) -> None:
    for option in START_OPTIONS:
        _add_option(parser, option)


class _StopOnSignal:
    """SIGTERM/SIGINT handler: the first asks the pool to stop gracefully, the next ones to force."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.count = 0

    def __call__(self, signum: int, frame: object) -> None:
        self.count += 1
        name = signal.Signals(signum).name
        if self.count == 1:
            log.info("%s: stopping: no new claims, running jobs may finish (again to force)", name)
        else:
            log.warning("%s again: forcing the stop: running jobs are killed and released", name)
        self.pool.request_stop()


@register("start", "run the pool master in the foreground until it is stopped", _configure_start)
def cmd_start(args: argparse.Namespace, console: Console) -> int:
    environ = os.environ
    # Logging first, so that the pool's messages and ours share one format from here on.
    log_format = resolve(start_option("log_format"), args.log_format, environ) or "text"
    log_level = resolve(start_option("log_level"), args.log_level, environ) or "INFO"
    logsetup.configure(log_format, log_level)
    console.json = log_format == "json"

    settings, sources = build_settings(args, environ)
    console.secrets += [settings.dsn.password, settings.http_token or ""]
    logsetup.configure(log_format, log_level, secrets=console.secrets)
    import_modules(settings.imports, sources.get("imports", "--import"))
    settings = dataclasses.replace(
        settings, pidfile=_pidfile_path(settings.pidfile, settings.dsn, settings.host_id)
    )
    assert settings.pidfile is not None
    from fastsched.pool import Pool

    pool = Pool(settings)
    held = pidfile.PidFile(settings.pidfile)
    try:
        held.acquire()
    except PoolAlreadyRunning:
        raise
    except FastschedError as exc:
        raise ConfigError(f"{sources.get('pidfile', 'the default pidfile')}: {exc}") from exc
    server = None
    try:
        if settings.http:
            from fastsched import http

            server = http.serve(settings, pool)  # binds now: a busy port is a ConfigError before any claim
        log.info(
            "starting pool: dsn=%s host_id=%s workers=%d pid=%d pidfile=%s",
            settings.dsn, settings.host_id, settings.workers, os.getpid(), settings.pidfile,
            extra={"fields": {"dsn": str(settings.dsn), "host_id": settings.host_id,
                              "workers": settings.workers, "pidfile": settings.pidfile}},
        )
        handler = _StopOnSignal(pool)
        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            code = int(pool.run())
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)
    finally:
        if server is not None:
            server.stop()
        held.release()
    log.info("pool stopped (exit code %d)", code, extra={"fields": {"exit_code": code}})
    return code


# --- stop ---------------------------------------------------------------------------------------


def _configure_stop(parser: argparse.ArgumentParser) -> None:
    add_start_options(parser, "dsn", "host_id", "pidfile")
    parser.add_argument("--wait", default=None, metavar="SECONDS",
                        help=f"how long to wait for the pool to exit, 0 not to wait [default: {DEFAULT_STOP_WAIT:g}]")
    parser.add_argument("--force", action="store_true",
                        help="force the stop: send SIGTERM twice, so running jobs are killed and released "
                             "instead of finishing")


def _has_exited(path: str, pid: int) -> bool:
    """The master has exited once its pidfile is gone, unlocked, or names another pool."""
    return pidfile.read_pid(path) != pid or not pidfile.is_locked(path) or not pidfile.pid_alive(pid)


@register("stop", "stop the pool running on this host (through its pidfile)", _configure_stop)
def cmd_stop(args: argparse.Namespace, console: Console) -> int:
    environ = os.environ
    wait = DEFAULT_STOP_WAIT
    if args.wait is not None:
        try:
            wait = parse_nonneg_float(args.wait)
        except ValueError as exc:
            raise ConfigError(f"--wait: invalid value {args.wait!r}: {exc}") from None
    path = resolve(start_option("pidfile"), args.pidfile, environ)
    if path is None:
        dsn = resolve_dsn(args, environ)
        host_id = resolve(start_option("host_id"), args.host_id, environ) or parse_host_id(socket.gethostname())
        path = pidfile.default_path(dsn.identity, host_id)
    pid = pidfile.read_pid(path)
    if pid is None:
        console.error(f"no pool is running: there is no pidfile at {path}")
        return EXIT_FAILURE
    if not pidfile.is_locked(path) or not pidfile.pid_alive(pid):
        console.error(f"no pool is running: the pidfile {path} is stale (pid {pid} is gone)")
        return EXIT_FAILURE
    try:
        os.kill(pid, signal.SIGTERM)
        console.say(f"sent SIGTERM to the pool (pid {pid}): it stops claiming and lets running jobs finish")
        if args.force:
            time.sleep(FORCE_SIGNAL_GAP)
            if not _has_exited(path, pid):
                os.kill(pid, signal.SIGTERM)
                console.say(f"sent a second SIGTERM (pid {pid}): running jobs are killed and released")
    except ProcessLookupError:
        pass  # it exited meanwhile
    except PermissionError:
        console.error(f"not allowed to signal the pool (pid {pid}): it runs as another user")
        return EXIT_FAILURE
    if wait == 0:
        return EXIT_OK
    deadline = time.monotonic() + wait
    while not _has_exited(path, pid):
        if time.monotonic() >= deadline:
            console.error(
                f"the pool (pid {pid}) is still running after {wait:g} s"
                + ("" if args.force else f"; `{PROG} stop --force` kills the running jobs")
            )
            return EXIT_FAILURE
        time.sleep(STOP_POLL_INTERVAL)
    console.say(f"the pool (pid {pid}) has stopped")
    return EXIT_OK


# --- main ---------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``fastsched-pool`` with ``argv`` (default: sys.argv[1:]); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2, argparse has said why)
        return exc.code if isinstance(exc.code, int) else EXIT_CONFIG
    if not args.command:
        parser.print_help(sys.stderr)
        return EXIT_CONFIG
    console = Console()
    try:
        return COMMANDS[args.command].run(args, console)
    except ConfigError as exc:
        console.error(str(exc))
        return EXIT_CONFIG
    except PoolAlreadyRunning as exc:
        console.error(str(exc))
        return EXIT_ALREADY_RUNNING
    except DatabaseUnavailable as exc:
        console.error(f"database unreachable: {exc}")
        return EXIT_DB_UNREACHABLE
    except FastschedError as exc:
        console.error(str(exc))
        return EXIT_FAILURE
    except KeyboardInterrupt:
        console.error("interrupted")
        return EXIT_FAILURE


if __name__ == "__main__":
    # Run the imported module's main, not this __main__ copy: command modules register there.
    from fastsched.cli import main as _main

    sys.exit(_main())
