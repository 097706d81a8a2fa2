"""fastsched-pool subcommands that look after jobs: failed, retry, cancel, purge.

Each goes through the producer API (``fastsched.connect``) and says what it changed. ``fastsched.cli.COMMANDS`` lists them.
"""
from __future__ import annotations

import argparse
import os

from fastsched.cli.common import Command, Console, add_dsn_option, parse_job_id, resolve_dsn
from fastsched.cli.options import parse_nonneg_float, parse_positive_int
from fastsched.errors import ConfigError
from fastsched.exitcodes import EXIT_OK
from fastsched.jobs import Job
from fastsched.priority import Priority
from fastsched.queue import DEFAULT_PURGE_AGE, Queue, connect

DEFAULT_FAILED_LIMIT = 100  # jobs ``failed`` lists
MAX_SHOWN_ARGS = 60  # characters of a job's JSON args shown in a listing
MAX_SHOWN_ERROR = 200  # characters of a job's last error shown in a listing


def _open(args: argparse.Namespace, console: Console) -> Queue:
    dsn = resolve_dsn(args, os.environ)
    console.secrets.append(dsn.password)
    return connect(dsn)


def _priority_name(value: int) -> str:
    try:
        return Priority(value).name
    except ValueError:
        return str(value)


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def describe(job: Job) -> str:
    """One line naming a job: ``#12 Touch ["/tmp/x"] (MEDIUM)``."""
    return f"#{job.id} {job.command} {_clip(job.parameter, MAX_SHOWN_ARGS)} ({_priority_name(job.priority)})"


# --- failed -------------------------------------------------------------------------------------


def _configure_failed(parser: argparse.ArgumentParser) -> None:
    add_dsn_option(parser)
    parser.add_argument("--limit", default=str(DEFAULT_FAILED_LIMIT), metavar="N",
                        help=f"list at most N jobs, newest first [default: {DEFAULT_FAILED_LIMIT}]")


def cmd_failed(args: argparse.Namespace, console: Console) -> int:
    try:
        limit = parse_positive_int(args.limit)
    except ValueError as exc:
        raise ConfigError(f"--limit: invalid value {args.limit!r}: {exc}") from None
    with _open(args, console) as queue:
        jobs = queue.failed(limit)
    if not jobs:
        console.say("no failed jobs")
        return EXIT_OK
    for job in jobs:
        finished = job.finished.isoformat(sep=" ", timespec="seconds") if job.finished else "-"
        console.say(
            f"{describe(job)} failed {finished} UTC after {job.retrial} retries, {job.crashes} crashes: "
            f"{_clip(job.last_error or '(no error recorded)', MAX_SHOWN_ERROR)}"
        )
    more = " (the newest; --limit shows more)" if len(jobs) == limit else ""
    console.say(f"{len(jobs)} failed job{'s' if len(jobs) != 1 else ''}{more}")
    return EXIT_OK


FAILED = Command(
    "failed",
    "list failed jobs, newest first, with their last error",
    _configure_failed,
    cmd_failed,
)


# --- retry --------------------------------------------------------------------------------------


def _configure_retry(parser: argparse.ArgumentParser) -> None:
    add_dsn_option(parser)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("job_id", nargs="?", metavar="ID", help="the failed job to put back in the queue")
    which.add_argument("--all", action="store_true", help="put every failed job back in the queue")


def cmd_retry(args: argparse.Namespace, console: Console) -> int:
    job_id = None if args.all else parse_job_id(args.job_id)
    with _open(args, console) as queue:
        if job_id is None:
            count = queue.retry_all()
            console.say(f"{count} failed job{'s' if count != 1 else ''} put back in the queue")
            return EXIT_OK
        job = queue.retry(job_id)
    if job.id != job_id:
        console.say(f"job #{job_id} was dropped: the identical job {describe(job)} is pending already")
    else:
        console.say(f"job {describe(job)} is back in the queue ({job.state.value})")
    return EXIT_OK


RETRY = Command(
    "retry",
    "put a failed job (or --all of them) back in the queue, counters reset",
    _configure_retry,
    cmd_retry,
)


# --- cancel -------------------------------------------------------------------------------------


def _configure_cancel(parser: argparse.ArgumentParser) -> None:
    add_dsn_option(parser)
    parser.add_argument("job_id", metavar="ID", help="a waiting, deferred or failed job")


def cmd_cancel(args: argparse.Namespace, console: Console) -> int:
    job_id = parse_job_id(args.job_id)
    with _open(args, console) as queue:
        job = queue.cancel(job_id)
    console.say(f"cancelled job {describe(job)}, which was {job.state.value}")
    return EXIT_OK


CANCEL = Command("cancel", "delete a waiting, deferred or failed job", _configure_cancel, cmd_cancel)


# --- purge --------------------------------------------------------------------------------------


def _configure_purge(parser: argparse.ArgumentParser) -> None:
    add_dsn_option(parser)
    default = DEFAULT_PURGE_AGE.total_seconds()
    parser.add_argument("--older-than", default=None, metavar="SECONDS",
                        help=f"delete jobs finished more than SECONDS ago [default: {default:g}]")
    parser.add_argument("--include-failed", action="store_true",
                        help="delete failed jobs too (by default they are kept for a person to see)")


def cmd_purge(args: argparse.Namespace, console: Console) -> int:
    older_than = DEFAULT_PURGE_AGE.total_seconds()
    if args.older_than is not None:
        try:
            older_than = parse_nonneg_float(args.older_than)
        except ValueError as exc:
            raise ConfigError(f"--older-than: invalid value {args.older_than!r}: {exc}") from None
    with _open(args, console) as queue:
        count = queue.purge(older_than, include_failed=args.include_failed)
    what = "done and failed" if args.include_failed else "done"
    console.say(f"purged {count} {what} job{'s' if count != 1 else ''} finished more than {older_than:g} s ago")
    return EXIT_OK


PURGE = Command(
    "purge",
    "delete finished jobs (done, and with --include-failed failed ones)",
    _configure_purge,
    cmd_purge,
)
