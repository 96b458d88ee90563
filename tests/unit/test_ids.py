"""Object ids (DESIGN §3 Identity): deterministic names, namespace checks, ring position."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from abode.cluster import ids
from abode.cluster.errors import InvalidId

EXPECTED_CLICKS = "c9aab2f947b8bd3ec313dd945a11fce7bbb9ae0786e8827239e81bca3d8475fb"
NAMESPACES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,80}", fullmatch=True)


@given(ns=NAMESPACES, name=st.text(max_size=50))
def test_id_from_name_is_deterministic_and_round_trips(ns, name):
    oid = ids.id_from_name(ns, name)
    assert oid == ids.id_from_name(ns, name)
    assert len(oid.raw) == ids.ID_BYTES and len(oid.hex) == 2 * ids.ID_BYTES
    assert oid.hex == oid.hex.lower() == str(oid)
    assert ids.id_from_string(ns, oid.hex) == oid
    assert ids.id_from_string(ns, oid.hex.upper()) == oid
    assert ids.id_from_bytes(ns, oid.raw) == oid
    assert oid.ring_position == int.from_bytes(oid.raw[:8], "big") < 2**64


@given(ns=NAMESPACES, a=st.text(max_size=20), b=st.text(max_size=20))
def test_distinct_names_give_distinct_ids(ns, a, b):
    if a != b:
        assert ids.id_from_name(ns, a).raw != ids.id_from_name(ns, b).raw


def test_ids_of_short_namespaces_are_stable():
    """Ids are stored on disk and in clients' hands: they must never change."""
    assert ids.id_from_name("Counter", "clicks").hex == EXPECTED_CLICKS


@given(ns=NAMESPACES, other=NAMESPACES, name=st.text(max_size=20))
def test_an_id_is_rejected_by_every_other_namespace(ns, other, name):
    if ns == other:
        return
    for oid in (ids.id_from_name(ns, name), ids.new_unique_id(ns)):
        with pytest.raises(InvalidId, match="namespace"):
            ids.id_from_string(other, oid.hex)
        with pytest.raises(InvalidId):
            ids.id_from_bytes(other, oid.raw)


def test_long_namespaces_with_a_common_prefix_have_their_own_ids():
    a, b = "N" * 64 + "_a", "N" * 64 + "_b"
    assert ids.id_from_name(a, "x").raw != ids.id_from_name(b, "x").raw
    with pytest.raises(InvalidId):
        ids.id_from_string(b, ids.new_unique_id(a).hex)


def test_unique_ids_are_unique_and_valid():
    made = {ids.new_unique_id("Room") for _ in range(1000)}
    assert len(made) == 1000
    for oid in made:
        assert ids.id_from_string("Room", oid.hex) == oid
        assert oid.name is None


def test_equality_ignores_the_name():
    named = ids.id_from_name("Room", "lobby")
    assert named.name == "lobby"
    parsed = ids.id_from_string("Room", named.hex)
    assert parsed.name is None and parsed == named and parsed.equals(named)
    assert hash(parsed) == hash(named)


@pytest.mark.parametrize("text", [
    "", "ab", "0" * 63, "0" * 65, "g" * 64, " " * 64, "0x" + "0" * 62, "é" * 64, None, 7,
])
def test_malformed_ids_are_invalid(text):
    with pytest.raises(InvalidId):
        ids.id_from_string("Room", text)


@given(raw=st.binary())
def test_arbitrary_bytes_are_almost_never_valid_ids(raw):
    if len(raw) != ids.ID_BYTES:
        with pytest.raises(InvalidId, match="bytes"):
            ids.id_from_bytes("Room", raw)


def test_invalid_id_is_a_value_error():
    assert issubclass(InvalidId, ValueError)
