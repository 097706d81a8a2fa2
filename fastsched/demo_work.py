"""The task of ``fastsched-pool demo``, registered on import: only the demo's pool imports it."""
from __future__ import annotations

import time

import fastsched
from fastsched.demo import COMMAND, DEFER_DELAY


@fastsched.task(COMMAND)
def work(n: int, milliseconds: int, defer_once: bool = False) -> None:
    """Sleep; the first time, a few jobs defer themselves instead (retried after DEFER_DELAY)."""
    if defer_once and fastsched.current_job().retrial == 0:
        fastsched.defer(DEFER_DELAY)
        return
    time.sleep(milliseconds / 1000)
