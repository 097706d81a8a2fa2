"""The shares of a cluster's claims (fastsched.backends.shares), without a cluster: who owns which
share, in which order a short share takes from the others, and how often a master records its
node. On the cluster itself: tests/test_galera.py."""
from __future__ import annotations

from fastsched.backends.shares import STAMP_EVERY, ShareKeeper, ShareView, view_of


def test_the_shares_are_the_nodes_that_have_masters_ranked_by_node() -> None:
    members = [("node-c", True, 4), ("node-a", True, 2), ("node-a", False, 8)]
    # Per share, the workers of the masters that claimed lately.
    assert view_of("node-a", members) == ShareView(slot=0, of=2, active=(2, 4))
    assert view_of("node-c", members) == ShareView(slot=1, of=2, active=(2, 4))
    # Not recorded yet (its first claim records it): a share of its own all the same.
    assert view_of("node-b", members) == ShareView(slot=1, of=3, active=(2, 0, 4))


def test_masters_on_one_node_have_no_share() -> None:
    assert view_of("node-a", [("node-a", True, 2), ("node-a", True, 2)]) is None
    assert view_of("node-a", []) is None


def test_a_short_share_takes_the_idle_shares_first_then_past_the_busy_ones_reserve() -> None:
    view = ShareView(slot=1, of=4, active=(2, 1, 0, 1))
    # From the share after its own on: share 2 has no master claiming lately, so from its oldest;
    # the others' masters take their oldest next: a batch for each of their workers is left.
    assert view.steals(100) == [(2, 0), (3, 100), (0, 200)]


def test_a_master_records_its_node_once_per_interval_and_on_a_move() -> None:
    now = [0.0]
    keeper = ShareKeeper(clock=lambda: now[0])
    assert keeper.take_stamp(7, "node-a") is True
    assert keeper.take_stamp(7, "node-a") is False  # the other lane, at the same moment
    assert keeper.take_stamp(7, "node-b") is True  # it moved to another node
    now[0] += STAMP_EVERY
    assert keeper.take_stamp(7, "node-b") is True
    keeper.forget()  # that record was rolled back
    assert keeper.take_stamp(7, "node-b") is True
