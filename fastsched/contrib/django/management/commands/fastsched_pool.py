"""``python manage.py fastsched_pool start|stop|status|init|... [flags]``: fastsched-pool's
subcommands and flags, on the project's fastsched database (see ``fastsched.contrib.django``),
with Django set up (manage.py does it) before ``start`` imports the task modules."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand

from fastsched import cli
from fastsched.cli.common import Console
from fastsched.contrib.django import dsn_text
from fastsched.dsn import DSN_ENV
from fastsched.exitcodes import ExitCode


class Command(BaseCommand):
    help = "Run fastsched-pool's subcommands (start, stop, status, init, ...) on this project's database."

    def add_arguments(self, parser: Any) -> None:
        cli.add_commands(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))

    def handle(self, *args: Any, **options: Any) -> None:
        namespace = argparse.Namespace(**options)
        if getattr(namespace, "dsn", None) is None:
            # Through the environment, where fastsched-pool reads it: not on a command line,
            # where the password would show in the process list.
            try:
                os.environ[DSN_ENV] = dsn_text()
            except ImproperlyConfigured as exc:  # a setting fastsched reads: a configuration error, as in the CLI
                Console().error(str(exc))
                sys.exit(ExitCode.CONFIG)
        code = cli.run_parsed(namespace)
        if code:
            sys.exit(code)
