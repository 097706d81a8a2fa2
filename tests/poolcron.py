"""A cron task for the pool-level cron test of tests/test_task_policy_pool.py, imported only by it
(so no other test's pool enqueues it). It records its runs to the file named by $POOLCRON_RUNS."""
from __future__ import annotations

import os

import fastsched
from tests.taskjobs import write

CRON = "5 4 * * *"  # 04:05 in Berlin: 03:05 UTC in winter
TZ = "Europe/Berlin"


@fastsched.periodic(cron=CRON, tz=TZ, priority=fastsched.PRIORITY_HIGH)
def berlin_morning() -> None:
    write(os.environ["POOLCRON_RUNS"], event="cron", id=fastsched.current_job().id)
