"""The Huey application of the optional peer comparison (bench/test_bench_peers.py).

Its queue is named by FASTSCHED_BENCH_HUEY_NAME; Redis at FASTSCHED_BENCH_REDIS (default
redis://127.0.0.1:6379/0), else SqliteHuey at FASTSCHED_BENCH_HUEY_SQLITE when that is set.
Huey's own defaults otherwise, as its docs start you with.
"""
from __future__ import annotations

import os

from huey import Huey, RedisHuey, SqliteHuey

NAME = os.environ.get("FASTSCHED_BENCH_HUEY_NAME", "fastsched-bench")
SQLITE = os.environ.get("FASTSCHED_BENCH_HUEY_SQLITE", "")

huey: Huey = (
    SqliteHuey(NAME, filename=SQLITE)
    if SQLITE
    else RedisHuey(NAME, url=os.environ.get("FASTSCHED_BENCH_REDIS", "redis://127.0.0.1:6379/0"))
)


@huey.task()
def noop(n: int) -> None:
    """Does nothing, like bench.jobs.BenchNoop."""
