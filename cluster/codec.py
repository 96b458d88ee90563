"""Stored values and RPC arguments: msgpack, never pickle.

Stored bytes outlive the code that wrote them, so only plain data is accepted.
Limits follow Cloudflare's: keys at most 2 KiB of UTF-8, values at most 128 KiB.
"""

from __future__ import annotations

from typing import Any

import msgpack

MAX_KEY_BYTES = 2048
MAX_VALUE_BYTES = 128 * 1024


def pack(value: Any) -> bytes:
    """Encode any msgpack-encodable value; a clear ValueError otherwise."""
    try:
        return msgpack.packb(value, use_bin_type=True, datetime=False)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(
            f"value of type {type(value).__name__} cannot be stored: {exc}"
            " (use None, bool, int, float, str, bytes, list, tuple or dict)"
        ) from None


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def encode_value(value: Any) -> bytes:
    data = pack(value)
    if len(data) > MAX_VALUE_BYTES:
        raise ValueError(
            f"value is {len(data)} bytes encoded; the limit is {MAX_VALUE_BYTES} bytes"
        )
    return data


def encode_key(key: str) -> bytes:
    if not isinstance(key, str):
        raise ValueError(f"storage keys are str, got {type(key).__name__}")
    data = key.encode()
    if len(data) > MAX_KEY_BYTES:
        raise ValueError(f"key is {len(data)} bytes of UTF-8; the limit is {MAX_KEY_BYTES}")
    return data
