"""``python -m tests.clocked_pool OPTIONS_JSON``: tests/test_pool.py's pool, whose wall clock is
the time written in the file $FASTSCHED_TEST_CLOCK (ISO, naive UTC), frozen until the test writes
another: schedules (cron slots) are hit when the test says, never by timing luck. Each call of
run_periodic is written as a JSON line (the master's pid, the time it used, the job it queued or
null) to $FASTSCHED_TEST_PERIODIC_CALLS, so the test knows every master has looked at a slot."""
from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import fastsched.pool
from fastsched.backends.sql import SQLBackend
from tests.taskjobs import write

CLOCK = Path(os.environ["FASTSCHED_TEST_CLOCK"])


def file_clock() -> dt.datetime:
    return dt.datetime.fromisoformat(CLOCK.read_text().strip())


class ClockedPool(fastsched.pool.Pool):
    def __init__(self, settings: Any, **kwargs: Any) -> None:
        super().__init__(settings, clock=file_clock, **kwargs)
        # The file's time is the test's, years from the server's: the master must not move onto the
        # server's clock (fastsched.clock.DatabaseWall), or the test would no longer say the time.
        self._db_wall.enabled = False


def logged_run_periodic(self: SQLBackend, entry: Any, now: dt.datetime | None = None) -> int | None:
    job = run_periodic(self, entry, now)
    write(os.environ["FASTSCHED_TEST_PERIODIC_CALLS"], task=entry.name, now=now.isoformat() if now else None, job=job)
    return job


run_periodic = SQLBackend.run_periodic
SQLBackend.run_periodic = logged_run_periodic  # type: ignore[method-assign]
fastsched.pool.Pool = ClockedPool  # type: ignore[misc]  # POOL_MAIN makes its pool from this name

from tests.test_pool import POOL_MAIN  # after the patch: POOL_MAIN imports Pool when it runs

exec(POOL_MAIN)  # noqa: S102 - the suite's own launcher, run as tests/test_pool.py runs it
