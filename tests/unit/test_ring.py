"""Invariants of the hash ring (STYLE: Hypothesis for the ring's invariants)."""

from __future__ import annotations

import bisect

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from abode.cluster.ring import (
    KEYSPACE,
    Member,
    Ring,
    moved_ranges,
    position_of,
)

# Few vnodes in property tests: the invariants must hold for any count, and sparse
# rings put more interesting edge cases (wrap-around, adjacent arcs) in reach.
vnodes = st.integers(min_value=1, max_value=24)
node_ids = st.text(alphabet="abcdefgh0123456789-", min_size=1, max_size=8)
weights = st.sampled_from([50, 100, 200])
positions = st.integers(min_value=0, max_value=KEYSPACE - 1)
edge_positions = st.sampled_from([0, 1, KEYSPACE // 2, KEYSPACE - 2, KEYSPACE - 1])
any_position = positions | edge_positions


@st.composite
def member_sets(draw: st.DrawFn, min_size: int = 1, max_size: int = 8) -> list[Member]:
    ids = draw(st.lists(node_ids, min_size=min_size, max_size=max_size, unique=True))
    return [Member(node_id=i, address=f"{i}:1", weight=draw(weights)) for i in ids]


def covering(ranges: list[tuple[int, int]], position: int) -> bool:
    """Whether sorted, disjoint half-open `ranges` contain `position`."""
    i = bisect.bisect_right(ranges, (position, KEYSPACE + 1)) - 1
    return i >= 0 and ranges[i][0] <= position < ranges[i][1]


@settings(max_examples=60, deadline=None)
@given(member_sets(), vnodes, st.lists(any_position, min_size=1, max_size=30))
def test_every_key_has_exactly_one_owner(members: list[Member], v: int, points: list[int]) -> None:
    ring = Ring(members, vnodes_per_weight_unit=v)
    ranges = {m.node_id: ring.ranges_of(m.node_id) for m in members}
    for p in points:
        holders = [node for node, rs in ranges.items() if covering(rs, p)]
        assert holders == [ring.owner(p)]


@settings(max_examples=60, deadline=None)
@given(member_sets(), vnodes)
def test_ranges_tile_the_keyspace(members: list[Member], v: int) -> None:
    ring = Ring(members, vnodes_per_weight_unit=v)
    all_ranges = sorted(r for m in members for r in ring.ranges_of(m.node_id))
    assert all_ranges[0][0] == 0 and all_ranges[-1][1] == KEYSPACE
    for (_, end), (start, _) in zip(all_ranges, all_ranges[1:], strict=False):
        assert end == start
    for m in members:
        for start, end in ring.ranges_of(m.node_id):
            assert start < end
            assert ring.owner(start) == m.node_id == ring.owner(end - 1)
    assert sum(ring.shares().values()) == pytest.approx(1.0)


@settings(max_examples=60, deadline=None)
@given(member_sets(max_size=7), node_ids, weights, vnodes, st.lists(any_position, max_size=40))
def test_adding_a_node_moves_keys_only_to_it(
    members: list[Member], new_id: str, weight: int, v: int, points: list[int]
) -> None:
    if new_id in {m.node_id for m in members}:
        new_id += "-new"
    old = Ring(members, vnodes_per_weight_unit=v)
    new = Ring([*members, Member(new_id, "x:1", weight)], vnodes_per_weight_unit=v)
    for p in points:
        assert new.owner(p) in (old.owner(p), new_id)
    for _, _, _, to in moved_ranges(old, new):
        assert to == new_id


@settings(max_examples=60, deadline=None)
@given(member_sets(min_size=2), st.data(), vnodes, st.lists(any_position, max_size=40))
def test_removing_a_node_moves_only_its_keys(
    members: list[Member], data: st.DataObject, v: int, points: list[int]
) -> None:
    gone = data.draw(st.sampled_from(members))
    old = Ring(members, vnodes_per_weight_unit=v)
    new = Ring([m for m in members if m != gone], vnodes_per_weight_unit=v)
    for p in points:
        if old.owner(p) != gone.node_id:
            assert new.owner(p) == old.owner(p)
        else:
            assert new.owner(p) != gone.node_id
    for _, _, frm, _ in moved_ranges(old, new):
        assert frm == gone.node_id


@settings(max_examples=60, deadline=None)
@given(member_sets(), vnodes, any_position, st.integers(min_value=1, max_value=10))
def test_preference_list_is_distinct_and_starts_with_owner(
    members: list[Member], v: int, p: int, n: int
) -> None:
    ring = Ring(members, vnodes_per_weight_unit=v)
    prefs = ring.preference_list(p, n)
    assert prefs[0] == ring.owner(p)
    assert len(prefs) == len(set(prefs)) == min(n, len(members))
    assert set(prefs) <= set(ring.members)
    # A longer list extends a shorter one: replicas keep their order as n grows.
    assert ring.preference_list(p, n + 1)[:n] == prefs


@settings(max_examples=60, deadline=None)
@given(member_sets(), member_sets(), vnodes, st.lists(any_position, max_size=40))
def test_moved_ranges_agree_with_point_lookups(
    before: list[Member], after: list[Member], v: int, points: list[int]
) -> None:
    old = Ring(before, vnodes_per_weight_unit=v)
    new = Ring(after, vnodes_per_weight_unit=v)
    moved = moved_ranges(old, new)
    # Boundaries are where off-by-one errors live: check both ends of every range.
    probes = list(points)
    for start, end, _, _ in moved:
        probes += [start, end - 1, end % KEYSPACE, max(start - 1, 0)]
    starts = [m[0] for m in moved]
    for p in probes:
        i = bisect.bisect_right(starts, p) - 1
        hit = moved[i] if i >= 0 and moved[i][0] <= p < moved[i][1] else None
        if old.owner(p) == new.owner(p):
            assert hit is None
        else:
            assert hit is not None and hit[2:] == (old.owner(p), new.owner(p))
    assert Ring.moved_ranges(old, new) == moved


# Weight-proportional balance with the default vnode count, on fixed node sets so the
# test is deterministic (the ring itself is: blake2b, no process-dependent hash).
BALANCE_SETS = [
    [("node-1", 100), ("node-2", 100), ("node-3", 100)],
    [("a", 100), ("b", 200), ("c", 100), ("d", 100)],
    [(f"node-{i}", 100) for i in range(1, 6)],
    [(f"n{i}", 200 if i % 2 else 100) for i in range(6)],
    [
        ("alpha", 200),
        ("beta", 100),
        ("gamma", 100),
        ("delta", 200),
        ("eps", 100),
        ("zeta", 100),
        ("eta", 100),
    ],
    [(f"10.0.0.{i}:7000", 100) for i in range(8)],
    [(f"host-{i}", 200 if i < 3 else 100) for i in range(8)],
]


@pytest.mark.parametrize("nodes", BALANCE_SETS, ids=lambda ns: f"{len(ns)}-nodes")
def test_shares_follow_weights_within_ten_percent(nodes: list[tuple[str, int]]) -> None:
    ring = Ring(Member(n, f"{n}:1", w) for n, w in nodes)
    total = sum(w for _, w in nodes)
    shares = ring.shares()
    for node, weight in nodes:
        expected = weight / total
        assert abs(shares[node] / expected - 1) <= 0.10, (node, shares[node], expected)


def test_empty_ring_has_no_owner() -> None:
    ring = Ring([])
    with pytest.raises(LookupError):
        ring.owner(0)
    assert ring.shares() == {}
    assert moved_ranges(ring, Ring([Member("a", "a:1")])) == []


def test_zero_weight_member_owns_nothing() -> None:
    ring = Ring([Member("a", "a:1"), Member("b", "b:1", weight=0)])
    assert ring.shares() == {"a": 1.0, "b": 0.0}
    assert ring.ranges_of("b") == []
    assert ring.preference_list(123, 3) == ["a"]
    with pytest.raises(LookupError):
        Ring([Member("b", "b:1", weight=0)]).owner(5)


def test_wrap_around_arc_is_split_in_two() -> None:
    ring = Ring([Member("a", "a:1"), Member("b", "b:1")], vnodes_per_weight_unit=3)
    wrapper = ring.owner(KEYSPACE - 1)
    assert ring.owner(0) == wrapper
    ranges = ring.ranges_of(wrapper)
    assert ranges[0][0] == 0 and ranges[-1][1] == KEYSPACE


def test_ring_is_stable_and_carries_revision() -> None:
    members = [Member("a", "a:1"), Member("b", "b:1", 200)]
    r1, r2 = Ring(members, revision=7), Ring(reversed(members), revision=8)
    assert r1.revision == 7 and r2.revision == 8
    assert r1.segments() == r2.segments()
    assert dict(r1.members) == {"a": members[0], "b": members[1]}


def test_position_of_uses_first_eight_bytes_big_endian() -> None:
    oid = bytes(range(32))
    assert position_of(oid) == int.from_bytes(bytes(range(8)), "big")
    with pytest.raises(ValueError):
        position_of(b"short")


def test_member_validation() -> None:
    with pytest.raises(ValueError):
        Member("a/b", "x:1")
    with pytest.raises(ValueError):
        Member("a", "x:1", weight=-1)
    with pytest.raises(TypeError):
        Member("a", "x:1", weight=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Ring([Member("a", "x:1"), Member("a", "y:1")])
