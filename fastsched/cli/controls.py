"""fastsched-pool pause and resume, and the filters of the bulk retry, cancel and purge.

    fastsched-pool pause  [--priority P] [--command C] [--queue Q]     (any combination, one at least)
    fastsched-pool resume [--priority P] [--command C] [--queue Q] | --all
    fastsched-pool retry|cancel [--command C] [--priority P] [--queue Q] [--error TEXT] [--older-than S] [--dry-run]
    fastsched-pool purge [--older-than S] [--include-failed] [same filters] [--dry-run]

Each change goes through the producer API (``Queue.pause``, ``Queue.bulk``...), which records it
in the history that ``status`` and the dashboard show. ``fastsched.controls`` says what a pause and
a filter mean.
"""
from __future__ import annotations

import argparse
import dataclasses
import os

from fastsched import controls
from fastsched.cli.common import Command, Console, add_dsn_option, resolve_dsn
from fastsched.cli.options import parse_nonneg_float
from fastsched.errors import ConfigError, InvalidInput
from fastsched.exitcodes import EXIT_FAILURE, EXIT_OK
from fastsched.queue import Queue, connect
from fastsched.status import iso

PRIORITY_HELP = "CRITICAL, HIGH, MEDIUM, LOW, NEGLIGIBLE (or 10 ... 50)"
# --command is stored as args.job_command: args.command names the subcommand (fastsched.cli.main).


def open_queue(args: argparse.Namespace, console: Console) -> Queue:
    dsn = resolve_dsn(args, os.environ)
    console.secrets.append(dsn.password)
    return connect(dsn)


def _add_pause_parts(parser: argparse.ArgumentParser, verb: str) -> None:
    parser.add_argument("--priority", default=None, metavar="P", help=f"{verb} this priority: {PRIORITY_HELP}")
    parser.add_argument("--command", dest="job_command", default=None, metavar="NAME",
                        help=f"{verb} the jobs of this command")
    parser.add_argument("--queue", default=None, metavar="NAME", help=f"{verb} the jobs of this queue")


def add_filter_options(parser: argparse.ArgumentParser, *, older_than: bool = True) -> None:
    """The options of a bulk action: which jobs, and --dry-run."""
    group = parser.add_argument_group("filters (every one given must match; they replace ID)")
    group.add_argument("--command", dest="job_command", default=None, metavar="NAME", help="jobs of this command")
    group.add_argument("--priority", default=None, metavar="P", help=f"jobs of this priority: {PRIORITY_HELP}")
    group.add_argument("--queue", default=None, metavar="NAME", help="jobs of this queue")
    group.add_argument("--error", default=None, metavar="TEXT", help="jobs whose last error contains TEXT")
    if older_than:
        group.add_argument("--older-than", default=None, metavar="SECONDS",
                           help="jobs created (pending ones) or finished (the others) more than SECONDS ago "
                                f"({AGE_HELP})")
    parser.add_argument("--dry-run", action="store_true", help="print how many jobs would change; change nothing")


def _as_config_error(exc: InvalidInput) -> ConfigError:
    return ConfigError(str(exc).replace("older_than", "--older-than"))


AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}  # --older-than 90, 90s, 10m, 1h, 2d, 1w
AGE_HELP = "SECONDS, or a number and a unit: 90s, 10m, 1h, 2d, 1w"


def parse_older_than(text: str | None) -> float | None:
    """Seconds of an --older-than: a plain number of seconds, or one with a unit (``1h``, ``2d``)."""
    if text is None:
        return None
    stripped = text.strip()
    unit = stripped[-1:].lower()
    scale = AGE_UNITS.get(unit, 1)
    number = stripped[:-1] if unit in AGE_UNITS else stripped
    try:
        return parse_nonneg_float(number) * scale
    except ValueError as exc:
        raise ConfigError(f"--older-than: invalid value {text!r}: {exc} (give {AGE_HELP})") from None


def parse_filter(args: argparse.Namespace) -> controls.JobFilter:
    """The filter the options name; ConfigError naming the flag that is wrong."""
    parts = {"command": args.job_command, "priority": args.priority, "queue": args.queue, "error": args.error,
             "older_than": parse_older_than(getattr(args, "older_than", None))}
    for part, value in parts.items():
        if value is not None:
            try:
                controls.JobFilter.of(**{part: value})
            except InvalidInput as exc:
                raise ConfigError(f"--{part.replace('_', '-')}: {exc}") from None
    try:
        return controls.JobFilter.of(**parts)
    except InvalidInput as exc:
        raise _as_config_error(exc) from None


def _jobs(count: int) -> str:
    return f"{count} job{'s' if count != 1 else ''}"


def run_bulk(
    args: argparse.Namespace, console: Console, action: str, job_filter: controls.JobFilter,
    *, include_failed: bool = False, failed_only: bool = False,
) -> int:
    """Run (or with --dry-run count) a bulk action and say what changed, by state."""
    with open_queue(args, console) as queue:
        result = queue.bulk(
            action, job_filter, dry_run=args.dry_run, include_failed=include_failed, failed_only=failed_only
        )
    states = ", ".join(f"{n} {state}" for state, n in result.counts.items())
    if action == controls.PURGE:
        age = job_filter.older_than.total_seconds() if job_filter.older_than is not None else 0.0
        rest = dataclasses.replace(job_filter, older_than=None)
        kind = "done, failed and cancelled" if include_failed else "done"
        what = f"{kind} {_jobs(result.total).split(' ', 1)[1]} finished more than {age:g} s ago"
        what = f"{result.total} {what}" + (f" matching {rest.describe()}" if rest else "")
        verb = "purged"
    else:
        matching = f" matching {job_filter.describe()}" if job_filter else ""
        if action == controls.RETRY:
            what, verb = f"{result.total} failed {_jobs(result.total).split(' ', 1)[1]}{matching}", "put back in the queue"
        else:
            what, verb = f"{_jobs(result.total)}{matching}" + (f" ({states})" if states else ""), "cancelled"
    if args.dry_run:
        console.say(f"dry run: {what} would be {verb}; nothing was changed")
    elif action == controls.PURGE:
        console.say(f"{verb} {what}")
    elif action == controls.RETRY:
        console.say(f"{what} {verb}")
    else:
        console.say(f"{verb} {what}")
        if result.counts.get("running"):
            console.say("the running ones stop at their masters' next heartbeat and end cancelled")
    return EXIT_OK


# --- pause, resume --------------------------------------------------------------------------------


def _configure_pause(parser: argparse.ArgumentParser) -> None:
    add_dsn_option(parser)
    _add_pause_parts(parser, "pause")


def _pause_of(args: argparse.Namespace, flags: str) -> controls.Pause:
    """The pause the flags name; ConfigError naming the flag that is wrong."""
    for flag, part in (("--priority", "priority"), ("--command", "command"), ("--queue", "queue")):
        value = args.job_command if part == "command" else getattr(args, part)
        if value is not None:
            try:
                controls.Pause.of(**{part: value})
            except InvalidInput as exc:
                raise ConfigError(f"{flag}: {exc}") from None
    try:
        return controls.Pause.of(args.priority, args.job_command, args.queue)
    except InvalidInput as exc:
        raise ConfigError(f"{exc} ({flags})") from None


def cmd_pause(args: argparse.Namespace, console: Console) -> int:
    wanted = _pause_of(args, "--priority, --command, --queue")
    with open_queue(args, console) as queue:
        pause = queue.pause(wanted.priority, wanted.command, wanted.queue)
    console.say(
        f"paused {pause.describe()} (by {pause.paused_by} at {iso(pause.paused_at)}): no master claims "
        f"this work until `fastsched-pool resume {controls.pause_flags(pause)}`; what runs goes on"
    )
    return EXIT_OK


PAUSE = Command(
    "pause", "stop claiming a priority, command or queue cluster-wide (running jobs go on)", _configure_pause,
    cmd_pause,
)


def _configure_resume(parser: argparse.ArgumentParser) -> None:
    add_dsn_option(parser)
    _add_pause_parts(parser, "resume")
    parser.add_argument("--all", action="store_true", help="end every pause")


def cmd_resume(args: argparse.Namespace, console: Console) -> int:
    if args.all and (args.priority or args.job_command or args.queue):
        raise ConfigError("resume --all, or one pause by its --priority, --command and --queue: not both")
    wanted = None
    if not args.all:
        wanted = _pause_of(args, "--priority, --command, --queue as the pause was made; or --all")
    with open_queue(args, console) as queue:
        if wanted is None:
            removed = queue.resume(everything=True)
            console.say(f"resumed {removed} pause{'s' if removed != 1 else ''}" if removed else "nothing was paused")
            return EXIT_OK
        removed = queue.resume(wanted.priority, wanted.command, wanted.queue)
        if removed:
            console.say(f"resumed {wanted.describe()}: masters claim it again")
            return EXIT_OK
        left = queue.paused()
    in_force = "; ".join(f"`resume {controls.pause_flags(p)}`" for p in left) or "none"
    console.error(f"{wanted.describe()} is not paused (a pause ends with the same flags it began with; "
                  f"pauses in force: {in_force})")
    return EXIT_FAILURE


RESUME = Command("resume", "end a pause (the same flags as pause), or --all of them", _configure_resume, cmd_resume)
