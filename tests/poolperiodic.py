"""A periodic task for tests/test_pool.py: imported only by the periodic test, so that no other
test's pool enqueues it. It records to the file named by $FASTSCHED_TEST_TICKS."""
from __future__ import annotations

import os

import fastsched
from tests.pooljobs import _write

TICK_SECONDS = 1.0


@fastsched.periodic(TICK_SECONDS, priority=fastsched.PRIORITY_HIGH, name="Tick")
def tick() -> None:
    _write(os.environ["FASTSCHED_TEST_TICKS"], "start", "tick")
