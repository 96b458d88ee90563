"""`PositionSet`: the ranges a node still holds while their new owner pulls them."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from abode.node._ownership import PositionSet

N = 64  # a small keyspace stands in for 2^64; end 0 still means "to the end"

spans = st.lists(st.tuples(st.integers(0, N - 1), st.integers(1, N)).filter(lambda r: r[0] < r[1]),
                 max_size=6)


@given(st.lists(st.tuples(st.booleans(), spans), max_size=8))
def test_add_and_discard_agree_with_a_plain_set(ops: list[tuple[bool, list[tuple[int, int]]]]) -> None:
    positions = PositionSet()
    model: set[int] = set()
    for add, ranges in ops:
        if add:
            positions.add(ranges)
            for start, end in ranges:
                model.update(range(start, end))
        else:
            positions.discard(ranges)
            for start, end in ranges:
                model.difference_update(range(start, end))
        assert [p for p in range(N) if positions.contains(p)] == sorted(model)
        assert (len(positions) == 0) == (not model)
        # The spans hold exactly those positions, sorted, disjoint and not touching.
        listed = positions.spans()
        assert sorted({p for s, e in listed for p in range(s, e)}) == sorted(model)
        assert all(a[1] < b[0] for a, b in zip(listed, listed[1:], strict=False))


def test_end_zero_is_the_end_of_the_keyspace() -> None:
    positions = PositionSet()
    positions.add([(10, 0)])
    assert positions.contains((1 << 64) - 1) and positions.contains(10)
    assert not positions.contains(9)
    positions.discard([(20, 0)])
    assert positions.contains(19) and not positions.contains(20)
