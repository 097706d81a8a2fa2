"""One clock for every decision that more than one host reads: the database server's.

Leases, heartbeats, recovery and the times of jobs (``created``, ``next_try``) are compared by
processes on different hosts, whose wall clocks may disagree or step. So they are taken on the
database server: MySQL/MariaDB evaluates ``UTC_TIMESTAMP(6)`` in the statement itself (the named
queries write ``COALESCE(%(now)s, UTC_TIMESTAMP(6))``, and a backend passes None for "the
server's clock"). SQLite is one file on one host: its "server clock" is this host's, read here.

A test injects time by passing a datetime where None would mean "the server's clock".
"""

from __future__ import annotations

import datetime as dt

from fastsched.clock import utcnow  # this host's wall clock (one home: fastsched.clock)

__all__ = ["MICROSECOND", "utcnow"]

MICROSECOND = dt.timedelta(microseconds=1)
