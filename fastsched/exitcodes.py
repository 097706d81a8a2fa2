"""The exit codes of ``fastsched-pool`` and of ``Pool.run()``: one table, what each means (the
``--help`` text is written from it), and which error ends a command with which code.

The pool's own result (``Pool.run()``) is already one of these; :func:`for_error` gives the code
of an error that ends a command before or around it.
"""
from __future__ import annotations

import enum

from fastsched.errors import ConfigError, DatabaseUnavailable, PoolAlreadyRunning


class ExitCode(enum.IntEnum):
    OK = 0  # done: the pool stopped cleanly (or --until-empty found nothing left), the command did what it said
    FAILURE = 1  # the command failed (e.g. stop found no running pool), or an unexpected error ended the pool
    CONFIG = 2  # a flag, FASTSCHED_* variable, setting or --import module is invalid
    DB_UNREACHABLE = 3  # the database could not be reached (for the pool: its last outcomes could not be written)
    KILLED = 4  # force-stopped (second signal, or the shutdown grace ran out): running jobs were killed
    ALREADY_RUNNING = 5  # a pool with this host id already runs against this database


MEANING: dict[ExitCode, str] = {
    ExitCode.OK: "ok",
    ExitCode.FAILURE: "failure (e.g. stop: no running pool)",
    ExitCode.CONFIG: "configuration error (a flag, FASTSCHED_* variable or --import module is invalid)",
    ExitCode.DB_UNREACHABLE: "database unreachable",
    ExitCode.KILLED: "killed (forced shutdown: a second SIGTERM/SIGINT)",
    ExitCode.ALREADY_RUNNING: "already running (a pool with this host id runs against this database)",
}

EXIT_OK = ExitCode.OK
EXIT_FAILURE = ExitCode.FAILURE
EXIT_CONFIG = ExitCode.CONFIG
EXIT_DB_UNREACHABLE = ExitCode.DB_UNREACHABLE
EXIT_KILLED = ExitCode.KILLED
EXIT_ALREADY_RUNNING = ExitCode.ALREADY_RUNNING

# Most specific first: DatabaseUnavailable and PoolAlreadyRunning are FastschedErrors too.
_BY_ERROR: tuple[tuple[type[BaseException], ExitCode], ...] = (
    (ConfigError, ExitCode.CONFIG),
    (PoolAlreadyRunning, ExitCode.ALREADY_RUNNING),
    (DatabaseUnavailable, ExitCode.DB_UNREACHABLE),
)


def for_error(exc: BaseException) -> ExitCode:
    """The exit code of a command that ``exc`` ended."""
    for kind, code in _BY_ERROR:
        if isinstance(exc, kind):
            return code
    return ExitCode.FAILURE


def help_text() -> str:
    """The "exit codes:" section of ``--help``."""
    return "exit codes:\n" + "".join(f"  {int(code)}  {MEANING[code]}\n" for code in ExitCode)
