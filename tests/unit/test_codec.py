"""The value codec: msgpack only, Cloudflare's key and value limits (DESIGN §2)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from abode.cluster import codec

PLAIN = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False)
    | st.text() | st.binary(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(PLAIN)
def test_plain_values_round_trip(value):
    assert codec.unpack(codec.pack(value)) == value


def test_str_and_bytes_stay_apart_and_tuples_become_lists():
    assert codec.unpack(codec.pack(["a", b"a", (1, (2,))])) == ["a", b"a", [1, [2]]]
    assert codec.unpack(codec.pack({1: "int key"})) == {1: "int key"}


@pytest.mark.parametrize("value", [
    object(), {1, 2}, frozenset(), datetime.now(UTC), 2**64, -(2**63) - 1, 1j, [object()],
    {"k": object()},
])
def test_values_msgpack_cannot_encode_are_value_errors(value):
    with pytest.raises(ValueError, match="cannot be stored"):
        codec.pack(value)


def test_value_limit():
    header = len(codec.pack(b"x" * 70000)) - 70000
    at_limit = b"x" * (codec.MAX_VALUE_BYTES - header)
    assert len(codec.encode_value(at_limit)) == codec.MAX_VALUE_BYTES
    with pytest.raises(ValueError, match=str(codec.MAX_VALUE_BYTES)):
        codec.encode_value(at_limit + b"x")


@pytest.mark.parametrize(("key", "ok"), [
    ("", True),
    ("k" * codec.MAX_KEY_BYTES, True),
    ("k" * (codec.MAX_KEY_BYTES + 1), False),
    ("é" * (codec.MAX_KEY_BYTES // 2), True),  # 2 bytes each: exactly at the limit
    ("é" * (codec.MAX_KEY_BYTES // 2) + "k", False),
    ("\U0001f600" * (codec.MAX_KEY_BYTES // 4 + 1), False),
])
def test_key_limit_is_in_utf8_bytes(key, ok):
    if ok:
        assert codec.encode_key(key) == key.encode()
    else:
        with pytest.raises(ValueError, match="limit"):
            codec.encode_key(key)


@pytest.mark.parametrize("key", [b"k", 1, None, ["k"]])
def test_keys_are_str(key):
    with pytest.raises(ValueError, match="str"):
        codec.encode_key(key)
