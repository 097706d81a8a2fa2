"""An on_child_start hook that always fails (its service is down), for the test of
tests/test_task_policy_pool.py that imports it: each call writes a line to $FAILINGHOOK_FILE."""
from __future__ import annotations

import os

import fastsched
from tests.taskjobs import write


@fastsched.on_child_start
def connect_to_a_service_that_is_down() -> None:
    write(os.environ["FAILINGHOOK_FILE"], event="hook")
    raise ConnectionRefusedError("the service this hook needs is down")


@fastsched.task
def needs_the_service(path: str) -> None:
    write(path, event="ran")
