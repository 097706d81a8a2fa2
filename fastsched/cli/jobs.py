"""fastsched-pool subcommands that look after jobs: failed, retry, cancel, purge.

Each goes through the producer API (``fastsched.connect``) and says what it changed. ``fastsched.cli.COMMANDS`` lists them.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os

from fastsched import controls
from fastsched.cli.common import Command, Console, add_dsn_option, parse_job_id, resolve_dsn
from fastsched.cli.controls import AGE_HELP, add_filter_options, parse_filter, parse_older_than, run_bulk
from fastsched.cli.options import parse_positive_int
from fastsched.errors import ConfigError
from fastsched.exitcodes import EXIT_OK
from fastsched.jobs import Job, JobState
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
    parser.add_argument("job_id", nargs="?", metavar="ID", help="the failed job to put back in the queue")
    parser.add_argument("--all", action="store_true", help="put every failed job back in the queue")
    add_filter_options(parser)


def _which(args: argparse.Namespace, what: str) -> controls.JobFilter | None:
    """None for the one job ID names; else the filter (empty with --all). ConfigError when the
    command line names no jobs, or names them twice."""
    job_filter = parse_filter(args)
    given = [bool(args.job_id), bool(args.all), bool(job_filter)]
    if sum(given) != 1:
        raise ConfigError(f"{what} takes an ID, --all, or filters (--command, --priority, --queue, --error, "
                          f"--older-than): exactly one of the three")
    if args.job_id and args.dry_run:
        raise ConfigError("--dry-run goes with --all or filters, not with an ID")
    return None if args.job_id else job_filter


def cmd_retry(args: argparse.Namespace, console: Console) -> int:
    job_filter = _which(args, "retry")
    if job_filter is not None:
        return run_bulk(args, console, controls.RETRY, job_filter)
    job_id = parse_job_id(args.job_id)
    with _open(args, console) as queue:
        job = queue.retry(job_id)
    if job.id != job_id:
        console.say(f"job #{job_id} was dropped: the identical job {describe(job)} is pending already")
    else:
        console.say(f"job {describe(job)} is back in the queue ({job.state.value})")
    return EXIT_OK


RETRY = Command(
    "retry",
    "put a failed job (--all of them, or those a filter matches) back in the queue, counters reset",
    _configure_retry,
    cmd_retry,
)


# --- cancel -------------------------------------------------------------------------------------


def _configure_cancel(parser: argparse.ArgumentParser) -> None:
    add_dsn_option(parser)
    parser.add_argument("job_id", nargs="?", metavar="ID",
                        help="a waiting, deferred or failed job (deleted), or a running one (stopped by its master)")
    parser.add_argument("--all", action="store_true", help="cancel every pending and failed job")
    parser.add_argument("--failed", action="store_true", help="with --all or filters: failed jobs only")
    add_filter_options(parser)


def cmd_cancel(args: argparse.Namespace, console: Console) -> int:
    job_filter = _which(args, "cancel")
    if job_filter is not None:
        return run_bulk(args, console, controls.CANCEL, job_filter, failed_only=args.failed)
    job_id = parse_job_id(args.job_id)
    with _open(args, console) as queue:
        job = queue.cancel(job_id)
    if job.state is JobState.RUNNING:
        console.say(
            f"asked the master of host {job.host!r} to stop job {describe(job)}: it sends its child SIGTERM "
            f"(SIGKILL after the grace) at its next heartbeat; the job ends cancelled and is never retried"
        )
    else:
        console.say(f"cancelled job {describe(job)}, which was {job.state.value}")
    return EXIT_OK


CANCEL = Command(
    "cancel",
    "delete a waiting, deferred or failed job, or stop a running one (or those a filter matches)",
    _configure_cancel,
    cmd_cancel,
)


# --- purge --------------------------------------------------------------------------------------


def _configure_purge(parser: argparse.ArgumentParser) -> None:
    add_dsn_option(parser)
    default = DEFAULT_PURGE_AGE.total_seconds()
    parser.add_argument("--older-than", default=None, metavar="SECONDS",
                        help=f"delete jobs finished more than SECONDS ago ({AGE_HELP}) [default: {default:g}]")
    parser.add_argument("--include-failed", action="store_true",
                        help="delete failed and cancelled jobs too (by default they are kept for a person to see)")
    add_filter_options(parser, older_than=False)


def cmd_purge(args: argparse.Namespace, console: Console) -> int:
    older_than = parse_older_than(args.older_than)
    job_filter = dataclasses.replace(
        parse_filter(args),
        older_than=dt.timedelta(seconds=DEFAULT_PURGE_AGE.total_seconds() if older_than is None else older_than),
    )
    return run_bulk(args, console, controls.PURGE, job_filter, include_failed=args.include_failed)


PURGE = Command(
    "purge",
    "delete finished jobs (done, and with --include-failed failed and cancelled ones)",
    _configure_purge,
    cmd_purge,
)
