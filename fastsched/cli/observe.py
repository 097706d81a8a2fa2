"""fastsched-pool subcommands that look at a queue and its pools: status, explain, demo.

``status`` and ``explain`` read the database directly (``fastsched.status``, ``fastsched.explain``);
``demo`` runs a pool of its own (``fastsched.demo``). ``fastsched.cli.COMMANDS`` lists them;
each imports what it shows only when it runs, so that ``fastsched-pool start`` does not pay for them.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from fastsched.cli.common import Command, Console, add_start_options, parse_job_id, resolve_dsn, start_option
from fastsched.cli.options import parse_nonneg_float, parse_positive_int, resolve
from fastsched.dsn import parse_dsn
from fastsched.errors import ConfigError
from fastsched.exitcodes import EXIT_FAILURE, EXIT_OK

DEFAULT_WATCH_INTERVAL = 2.0  # seconds between ``status --watch`` readings
CLEAR_SCREEN = "\x1b[H\x1b[2J"


def _configure_status(parser: argparse.ArgumentParser) -> None:
    add_start_options(parser, "dsn", "lease", "imports")
    parser.add_argument("--json", action="store_true", help="print the status as JSON (docs/monitoring.md)")
    parser.add_argument("--watch", action="store_true",
                        help="print it again every --interval seconds until interrupted (with --json: one "
                             "document per line)")
    parser.add_argument("--interval", default=None, metavar="SECONDS",
                        help=f"seconds between readings with --watch [default: {DEFAULT_WATCH_INTERVAL:g}]")


def _status_backend(args: argparse.Namespace, console: Console) -> tuple[Any, float]:
    from fastsched.backends import open_backend
    from fastsched.config import DEFAULT_LEASE

    dsn = resolve_dsn(args, os.environ)
    console.secrets.append(dsn.password)
    lease = resolve(start_option("lease"), args.lease, os.environ) or DEFAULT_LEASE
    _import_tasks(args)
    return open_backend(dsn), lease


def _import_tasks(args: argparse.Namespace) -> None:
    """The task modules of --import (FASTSCHED_IMPORT, as the pool has them): their policies are
    what status and explain show."""
    from fastsched.cli.lifecycle import import_modules

    modules = resolve(start_option("imports"), getattr(args, "imports", None), os.environ) or ()
    import_modules(modules, "--import")


def cmd_status(args: argparse.Namespace, console: Console) -> int:
    import json

    from fastsched import status
    from fastsched.tasks import default_registry

    interval = DEFAULT_WATCH_INTERVAL
    if args.interval is not None:
        try:
            interval = parse_nonneg_float(args.interval)
        except ValueError as exc:
            raise ConfigError(f"--interval: invalid value {args.interval!r}: {exc}") from None
    backend, lease = _status_backend(args, console)
    clear = args.watch and not args.json and sys.stdout.isatty()
    try:
        while True:
            current = status.collect(backend, lease=lease, tasks=status.task_entries(default_registry))
            text = json.dumps(current, indent=None if args.watch else 2) if args.json else status.render_text(current)
            console.say((CLEAR_SCREEN if clear else "") + text + ("" if args.json or clear or not args.watch else "\n"))
            if not args.watch:
                return EXIT_OK
            time.sleep(interval)
    except KeyboardInterrupt:
        return EXIT_OK
    finally:
        backend.close()


STATUS = Command(
    "status",
    "show the queue per priority, the masters and children, and jobs per minute",
    _configure_status,
    cmd_status,
)


def _configure_explain(parser: argparse.ArgumentParser) -> None:
    add_start_options(parser, "dsn", "lease", "imports", "retry_limit", "retry_delay", "max_duration_minutes")
    parser.add_argument("job_id", metavar="ID", help="the job")
    parser.add_argument("--json", action="store_true", help="print the facts and sentences as JSON")


def cmd_explain(args: argparse.Namespace, console: Console) -> int:
    import json

    from fastsched import explain

    job_id = parse_job_id(args.job_id)
    backend, lease = _status_backend(args, console)
    pool = {
        field: resolve(start_option(field), getattr(args, field, None), os.environ)
        for field in ("retry_limit", "retry_delay", "max_duration_minutes")
    }
    try:
        result = explain.explain(backend, job_id, lease=lease, pool={k: v for k, v in pool.items() if v is not None})
    finally:
        backend.close()
    console.say(json.dumps(result, indent=2) if args.json else explain.render_text(result))
    return EXIT_OK if result["found"] else EXIT_FAILURE


EXPLAIN = Command(
    "explain",
    "say why a job has not run yet: its state, its priority's share, the jobs ahead of it",
    _configure_explain,
    cmd_explain,
)


def _configure_demo(parser: argparse.ArgumentParser) -> None:
    from fastsched import demo

    parser.add_argument("--jobs", default=str(demo.DEFAULT_JOBS), metavar="N",
                        help=f"jobs to enqueue over the five priorities [default: {demo.DEFAULT_JOBS}]")
    parser.add_argument("--workers", default=str(demo.DEFAULT_WORKERS), metavar="N",
                        help=f"child processes of the demo's pool [default: {demo.DEFAULT_WORKERS}]")
    parser.add_argument("--dsn", default=None, metavar="DSN",
                        help="run on this database, whose queue must be empty [default: a temporary SQLite "
                             "file, removed afterwards]")


def cmd_demo(args: argparse.Namespace, console: Console) -> int:
    from fastsched import demo

    values = {}
    for name in ("jobs", "workers"):
        try:
            values[name] = parse_positive_int(getattr(args, name))
        except ValueError as exc:
            raise ConfigError(f"--{name}: invalid value {getattr(args, name)!r}: {exc}") from None
    dsn = parse_dsn(args.dsn) if args.dsn else None
    if dsn is not None:
        console.secrets.append(dsn.password)
    return demo.run(dsn, jobs=values["jobs"], workers=values["workers"], say=console.say)


DEMO = Command(
    "demo",
    "enqueue a mixed workload, run a pool on it with a live display, print a summary",
    _configure_demo,
    cmd_demo,
)
