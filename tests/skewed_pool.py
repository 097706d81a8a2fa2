"""``python tests/skewed_pool.py SECONDS start ...``: ``fastsched-pool start ...`` whose master is a
``Pool`` made through the API with a wall clock ``SECONDS`` off (negative: behind), as a host whose
clock is wrong would run it. For the one-clock tests (issue 11, item 7)."""

from __future__ import annotations

import datetime as dt
import sys
from typing import Any

import fastsched.pool
from fastsched.cli import main
from fastsched.dbclock import utcnow

SKEW = dt.timedelta(seconds=float(sys.argv[1]))


def skewed_clock() -> dt.datetime:
    return utcnow() + SKEW


class SkewedPool(fastsched.pool.Pool):
    def __init__(self, settings: Any, **kwargs: Any) -> None:
        super().__init__(settings, clock=skewed_clock, **kwargs)


fastsched.pool.Pool = SkewedPool  # type: ignore[misc]  # the CLI makes its pool from this name
raise SystemExit(main(sys.argv[2:]))
