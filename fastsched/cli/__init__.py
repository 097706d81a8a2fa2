"""fastsched-pool: run, stop and look after the worker pool.

    fastsched-pool init  [--dsn DSN]
    fastsched-pool start [--dsn DSN] [--workers N] [--import MODULE ...] [--until-empty] ...
    fastsched-pool stop  [--dsn DSN] [--host-id ID] [--pidfile PATH] [--wait SECONDS] [--force]
    fastsched-pool failed [--limit N] | retry ID|--all|FILTERS | cancel ID|--all|FILTERS | purge [FILTERS]
    fastsched-pool pause|resume [--priority P] [--command C] [--queue Q]   (resume --all ends every pause)
    fastsched-pool status [--json] [--watch [--interval S]] | explain ID [--json]
    fastsched-pool demo   [--jobs N] [--workers N] [--dsn DSN]

Every option of ``start`` has a FASTSCHED_* environment twin (``--fetch-limit`` and
FASTSCHED_FETCH_LIMIT); a flag wins over the environment, which wins over the default. Settings
are checked in full before anything happens: a bad value is a one-line message naming the flag
or variable and the value, and exit code 2. The exit codes are ``fastsched.exitcodes``.

The subcommands are the explicit list :data:`COMMANDS`; each is a ``Command`` (name, help, the
function that adds its arguments, the function that runs it) defined beside its code:
``lifecycle`` (init, start, stop), ``observe`` (status, explain, demo), ``jobs`` (failed, retry,
cancel, purge), ``controls`` (pause, resume; the filters of retry, cancel, purge). To add one,
write its Command in one of those modules (or a new one) and list it here. The option table of ``start`` and its FASTSCHED_* twins is ``fastsched.cli.options``.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from fastsched import exitcodes
from fastsched.cli import controls, jobs, lifecycle, observe
from fastsched.cli.common import PROG, Command, Console, hide_secrets_from_process_title
from fastsched.cli.options import START_OPTIONS, build_settings
from fastsched.errors import DatabaseUnavailable, FastschedError
from fastsched.exitcodes import (
    EXIT_ALREADY_RUNNING,
    EXIT_CONFIG,
    EXIT_DB_UNREACHABLE,
    EXIT_FAILURE,
    EXIT_KILLED,
    EXIT_OK,
    ExitCode,
)

__all__ = [
    "COMMANDS",
    "EXIT_ALREADY_RUNNING",
    "EXIT_CONFIG",
    "EXIT_DB_UNREACHABLE",
    "EXIT_FAILURE",
    "EXIT_KILLED",
    "EXIT_OK",
    "add_commands",
    "build_parser",
    "build_settings",
    "main",
    "run_parsed",
]

COMMANDS: tuple[Command, ...] = (
    lifecycle.INIT,
    lifecycle.START,
    lifecycle.STOP,
    observe.STATUS,
    observe.EXPLAIN,
    observe.DEMO,
    jobs.FAILED,
    jobs.RETRY,
    jobs.CANCEL,
    jobs.PURGE,
    controls.PAUSE,
    controls.RESUME,
)


def build_parser() -> argparse.ArgumentParser:
    environment = "environment (a flag wins over its variable, which wins over the default):\n" + "".join(
        f"  {option.env:<28} {option.flag}\n" for option in START_OPTIONS
    )
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run and look after a fastsched worker pool.",
        epilog=exitcodes.help_text() + "\n" + environment,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_commands(parser.add_subparsers(dest="command", metavar="COMMAND"))
    return parser


def add_commands(subparsers: Any) -> None:
    """A parser for each of COMMANDS (``manage.py fastsched_pool`` builds on this too)."""
    for command in COMMANDS:
        sub = subparsers.add_parser(
            command.name,
            help=command.help,
            description=command.help,
            epilog=exitcodes.help_text(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.set_defaults(run=command.run)
        command.configure(sub)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``fastsched-pool`` with ``argv`` (default: sys.argv[1:]); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2, argparse has said why)
        return exc.code if isinstance(exc.code, int) else ExitCode.CONFIG
    if not args.command:
        parser.print_help(sys.stderr)
        return ExitCode.CONFIG
    return run_parsed(args)


def run_parsed(args: argparse.Namespace) -> int:
    """Run the subcommand that ``args`` (parsed by a parser of :func:`add_commands`) names; its
    exit code, every fastsched error reported and mapped to its code."""
    # This process's own command line (fastsched-pool, python -m fastsched, manage.py fastsched_pool):
    # its secrets out of ps before the command connects or forks.
    hide_secrets_from_process_title(sys.argv[1:])
    console = Console()
    try:
        return ExitCode(args.run(args, console))
    except FastschedError as exc:
        prefix = "database unreachable: " if isinstance(exc, DatabaseUnavailable) else ""
        console.error(prefix + str(exc))
        return exitcodes.for_error(exc)
    except KeyboardInterrupt:
        console.error("interrupted")
        return ExitCode.FAILURE
    except BrokenPipeError:
        # The reader went away (`status | head`): no traceback, and none at exit either, when
        # Python flushes stdout into the closed pipe once more.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return ExitCode.FAILURE
