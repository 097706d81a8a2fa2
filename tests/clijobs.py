"""Tasks for tests/test_cli.py: the module ``fastsched-pool start --import clijobs`` loads."""
from __future__ import annotations

import os
import time

from fastsched.tasks import task


@task
def Touch(path: str) -> None:
    """Create ``path`` holding the pid of the child that ran the job."""
    with open(path, "w") as handle:
        handle.write(str(os.getpid()))


@task
def Sleep(seconds: float) -> None:
    time.sleep(seconds)
