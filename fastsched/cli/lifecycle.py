"""fastsched-pool init, start and stop: the schema, the pool master in the foreground, and the
signal that stops it (through its pidfile). ``start`` builds PoolSettings from the option table
(``fastsched.cli.options``) and imports the task modules before the pool forks its children."""
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
from collections.abc import Sequence
from typing import Any

from fastsched import logsetup, pidfile
from fastsched.cli.common import (
    PROG,
    Command,
    Console,
    add_dsn_option,
    add_option,
    add_start_options,
    resolve_dsn,
    start_option,
)
from fastsched.cli.options import START_OPTIONS, build_settings, parse_host_id, parse_nonneg_float, resolve
from fastsched.dsn import DSN
from fastsched.errors import ConfigError, FastschedError, PoolAlreadyRunning
from fastsched.exitcodes import EXIT_FAILURE, EXIT_OK, ExitCode

log = logging.getLogger("fastsched.cli")

DEFAULT_STOP_WAIT = 60.0  # seconds ``stop`` waits for the pool to exit
STOP_POLL_INTERVAL = 0.1  # seconds between checks while ``stop`` waits
FORCE_SIGNAL_GAP = 0.5  # seconds between the two SIGTERMs of ``stop --force``, so none is coalesced


# --- settings -----------------------------------------------------------------------------------


def drop_working_directory_from_path() -> None:
    """Take off sys.path the entry Python puts first for the working directory (``''`` for
    ``python -c``, the directory itself for ``python -m``): a module planted in a shared working
    directory must not be what ``--import`` (or any import after it) finds. A directory named in
    PYTHONPATH stays: that path is configured."""
    if sys.path and sys.path[0] in ("", os.getcwd()):
        del sys.path[0]


def import_modules(names: Sequence[str], source: str) -> None:
    """Import the modules that register commands, from sys.path as installed packages and
    PYTHONPATH make it, never from the working directory unless PYTHONPATH names it. A failure is
    a ConfigError naming the module."""
    drop_working_directory_from_path()
    for name in names:
        try:
            importlib.import_module(name)
        except (Exception, SystemExit) as exc:
            detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            hint = (
                " (the working directory is not searched: install the module or put its directory on PYTHONPATH)"
                if isinstance(exc, ModuleNotFoundError) and exc.name == name.split(".")[0] else ""
            )
            raise ConfigError(f"{source}: cannot import module {name!r} ({detail}){hint}") from exc


def _pidfile_path(settings_pidfile: str | None, dsn: DSN, host_id: str) -> str:
    return settings_pidfile or pidfile.default_path(dsn.identity, host_id)


# --- init ---------------------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace, console: Console) -> int:
    dsn = resolve_dsn(args, os.environ)
    console.secrets.append(dsn.password)
    from fastsched.backends import open_backend
    from fastsched.backends.base import SCHEMA_VERSION

    backend = open_backend(dsn)
    found: int | None = SCHEMA_VERSION
    try:
        # Only init migrates (the pool and Queue refuse an older schema): see upgrade_schema.
        found = backend.upgrade_schema()
    finally:
        backend.close()
    migrated = f", migrated from version {found}" if found is not None and found < SCHEMA_VERSION else ""
    console.say(
        f"schema version {SCHEMA_VERSION} is ready on {dsn}{migrated}: tables workerqueue, fastsched_host, "
        f"process and fastsched_meta exist (existing tables and jobs were kept)"
    )
    return EXIT_OK


INIT = Command("init", "create the schema (idempotent: existing tables and jobs are kept)", add_dsn_option, cmd_init)


# --- start --------------------------------------------------------------------------------------


def _configure_start(parser: argparse.ArgumentParser) -> None:
    for option in START_OPTIONS:
        add_option(parser, option)


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
            code = ExitCode(pool.run())
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)
    finally:
        if server is not None:
            server.stop()
        held.release()
    log.info("pool stopped (exit code %d)", code, extra={"fields": {"exit_code": code}})
    return code


START = Command("start", "run the pool master in the foreground until it is stopped", _configure_start, cmd_start)


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


STOP = Command("stop", "stop the pool running on this host (through its pidfile)", _configure_stop, cmd_stop)
