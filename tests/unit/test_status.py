"""``abode status``'s replication summary: the share of the keyspace short of copies."""

from __future__ import annotations

from abode.cluster.cli.admin import _under_replicated
from abode.cluster.membership import LiveNode, MembershipSnapshot
from abode.cluster.ring import Member, Ring

NODES = ["a", "b", "c"]


def _snapshot(live: dict[str, frozenset[str]]) -> tuple[Ring, MembershipSnapshot]:
    members = {n: Member(n, f"{n}:1") for n in NODES}
    snap = MembershipSnapshot(
        revision=1,
        members=members,
        live={n: LiveNode(f"{n}:1", 0, waiting) for n, waiting in live.items()},
        config={"replicas": 2},
    )
    return Ring(members.values(), revision=1), snap


def test_all_live_and_caught_up_is_fully_replicated() -> None:
    ring, snap = _snapshot({n: frozenset() for n in NODES})
    assert _under_replicated(ring, snap, 2) == 0.0


def test_a_dead_node_leaves_the_ranges_it_held_short() -> None:
    ring, snap = _snapshot({"a": frozenset(), "b": frozenset()})
    short = _under_replicated(ring, snap, 2)
    # c held a copy of every range where it is in the preference list.
    held_by_c = sum(e - s for s, e in ring.replica_ranges("c", 2)) / 2**64
    assert abs(short - held_by_c) < 1e-9
    assert 0.5 < short < 0.8


def test_a_node_still_catching_up_counts_as_missing_where_it_waits() -> None:
    ring, snap = _snapshot({"a": frozenset({"b"}), "b": frozenset(), "c": frozenset()})
    short = _under_replicated(ring, snap, 2)
    both = [(s, e) for s, e in ring.arcs()
            if {"a", "b"} == set(ring.preference_list(s, 2))]
    assert abs(short - sum(e - s for s, e in both) / 2**64) < 1e-9
    assert short > 0
