"""What every fastsched-pool subcommand shares: the Command record, the Console it writes to, and
the helpers that give a subcommand options of ``start`` (FASTSCHED_* twins included)."""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Callable, Mapping, Sequence

from fastsched import logsetup
from fastsched.cli.options import START_OPTIONS, Option, parse_positive_int, resolve, typed_password
from fastsched.dsn import DEFAULT_DSN, DSN, parse_dsn
from fastsched.errors import ConfigError

log = logging.getLogger("fastsched.cli")

PROG = "fastsched-pool"


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


Runner = Callable[[argparse.Namespace, Console], int]


@dataclasses.dataclass(frozen=True)
class Command:
    """A subcommand: ``configure(parser)`` adds its arguments, ``run(args, console)`` returns the
    exit code. Errors raised as fastsched exceptions are reported and given their exit code by
    ``fastsched.cli.main``."""

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Runner


def _env_help(option: Option) -> str:
    return f"{option.help} [env {option.env}; default: {option.default_text}]".replace("%", "%%")


def add_option(parser: argparse.ArgumentParser, option: Option) -> None:
    """``option`` as an argparse argument; the value stays raw (None if not given) for ``resolve``."""
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
        add_option(parser, start_option(field))


def add_dsn_option(parser: argparse.ArgumentParser) -> None:
    """``--dsn`` with its FASTSCHED_DSN twin, as every subcommand that opens the database has it."""
    add_start_options(parser, "dsn")


def resolve_dsn(args: argparse.Namespace, environ: Mapping[str, str]) -> DSN:
    value = resolve(start_option("dsn"), getattr(args, "dsn", None), environ)
    return value if isinstance(value, DSN) else parse_dsn(DEFAULT_DSN)


def parse_job_id(text: str) -> int:
    """A job id given on the command line; ConfigError if it is not one."""
    try:
        return parse_positive_int(text)
    except ValueError as exc:
        raise ConfigError(f"job id: invalid value {text!r}: {exc}") from None


def secrets_in(argv: Sequence[str]) -> list[str]:
    """The secrets typed in ``argv``: DSN passwords (in any argument, as typed) and the values of
    secret options (``--http-token T``, ``--http-token=T`` and argparse's abbreviations of them)."""
    flags = {option.flag for option in START_OPTIONS}
    secret_flags = [option.flag for option in START_OPTIONS if option.secret]
    found: list[str] = []
    for index, arg in enumerate(argv):
        password = typed_password(arg)
        if password:
            found.append(password)
        name, equals, value = arg.partition("=")
        if len(name) < 3 or not name.startswith("--") or name in flags - set(secret_flags):
            continue
        if any(flag.startswith(name) for flag in secret_flags):
            if equals and value:
                found.append(value)
            elif not equals and index + 1 < len(argv) and argv[index + 1]:
                found.append(argv[index + 1])
    return found


def hide_secrets_from_process_title(argv: Sequence[str]) -> None:
    """Rewrite this process's title (what ps and /proc/PID/cmdline show, and what the children
    forked later inherit) with every secret typed in ``argv`` replaced by ``***``. FASTSCHED_DSN
    and FASTSCHED_HTTP_TOKEN never show there; this covers a DSN or token given as a flag."""
    found = secrets_in(argv)
    if not found:
        return
    import setproctitle

    title = setproctitle.getproctitle()
    for secret in sorted(found, key=len, reverse=True):
        title = title.replace(secret, logsetup.MASK)
    setproctitle.setproctitle(title)
