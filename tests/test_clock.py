"""The master's wall clock on the database server's (fastsched.clock.DatabaseWall), in-process."""

from __future__ import annotations

import datetime as dt

from fastsched.clock import SKEW_IGNORED, DatabaseWall

T0 = dt.datetime(2026, 12, 3, 12, 0, 0)
MS = dt.timedelta(milliseconds=1)


def test_a_host_clock_behind_or_ahead_is_moved_onto_the_server_s() -> None:
    host = [T0]
    wall = DatabaseWall(lambda: host[0])
    wall.sync(T0 + dt.timedelta(seconds=40, milliseconds=1), T0, T0 + 2 * MS)  # the host is 40 s behind
    assert wall() == T0 + dt.timedelta(seconds=40) and wall.host() == T0
    wall.sync(T0 - dt.timedelta(seconds=40) + MS, T0, T0 + 2 * MS)  # now 40 s ahead
    assert wall() == T0 - dt.timedelta(seconds=40)


def test_a_small_offset_and_an_uncertain_reading_leave_the_clock_alone() -> None:
    host = [T0]
    wall = DatabaseWall(lambda: host[0])
    wall.sync(T0 + SKEW_IGNORED, T0 - MS, T0 + MS)  # within what a round trip leaves unknown
    assert wall() == T0
    wall.sync(T0 + dt.timedelta(seconds=5), T0, T0 + dt.timedelta(seconds=2))  # a reading that took 2 s
    assert wall() == T0


def test_off_where_the_server_s_clock_is_this_host_s() -> None:
    wall = DatabaseWall(lambda: T0, enabled=False)
    wall.sync(T0 + dt.timedelta(hours=1), T0, T0)
    assert wall() == T0
