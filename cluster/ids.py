"""Object ids.

An id is 32 bytes: a 28-byte body and a 4-byte check derived from the namespace,
so `id_from_string` can reject ids minted for another namespace. The first 8 bytes
of the body are the object's ring position, so storage keys that start with the id
also start with the ring position and a ring range moves as one scan.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

from abode.cluster.errors import InvalidId

ID_BYTES = 32
_BODY = 28
_CHECK = ID_BYTES - _BODY


def _ns_key(namespace: str) -> bytes:
    """The namespace as a blake2b key (at most 64 bytes): longer names are hashed,
    never cut, so two namespaces that share their first 64 bytes stay apart."""
    data = namespace.encode()
    if len(data) <= 64:
        return data
    return hashlib.blake2b(data, digest_size=64, person=b"abode-ns").digest()


def _check(namespace: str, body: bytes) -> bytes:
    return hashlib.blake2b(
        body, digest_size=_CHECK, person=b"abode-id", key=_ns_key(namespace)
    ).digest()


@dataclass(frozen=True, slots=True)
class ObjectId:
    """The address of one durable object within its namespace."""

    namespace: str
    raw: bytes
    name: str | None = field(default=None, compare=False)

    @property
    def hex(self) -> str:
        return self.raw.hex()

    @property
    def ring_position(self) -> int:
        return ring_position(self.raw)

    def __str__(self) -> str:
        return self.raw.hex()

    def equals(self, other: ObjectId) -> bool:
        return self == other


def ring_position(raw: bytes) -> int:
    """Unsigned 64-bit position on the ring, from the id's first 8 bytes."""
    return int.from_bytes(raw[:8], "big")


def id_from_name(namespace: str, name: str) -> ObjectId:
    body = hashlib.blake2b(
        name.encode(), digest_size=_BODY, person=b"abode-nm", key=_ns_key(namespace)
    ).digest()
    return ObjectId(namespace, body + _check(namespace, body), name)


def new_unique_id(namespace: str) -> ObjectId:
    body = os.urandom(_BODY)
    return ObjectId(namespace, body + _check(namespace, body))


def id_from_bytes(namespace: str, raw: bytes, name: str | None = None) -> ObjectId:
    """Validate a raw id of ``namespace``; ``name`` is kept only if it derives the id."""
    if len(raw) != ID_BYTES:
        raise InvalidId(f"an object id is {ID_BYTES} bytes, got {len(raw)}")
    if _check(namespace, raw[:_BODY]) != raw[_BODY:]:
        raise InvalidId(f"id {raw.hex()} does not belong to namespace {namespace!r}")
    if name is not None and id_from_name(namespace, name).raw != raw:
        name = None
    return ObjectId(namespace, bytes(raw), name)


def id_from_string(namespace: str, text: str) -> ObjectId:
    """Parse a 64-hex-character id (case-insensitive) of `namespace`."""
    if not isinstance(text, str) or len(text) != 2 * ID_BYTES:
        raise InvalidId(f"an object id is {2 * ID_BYTES} hex characters")
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise InvalidId(f"malformed object id {text[:80]!r}: not hex") from None
    return id_from_bytes(namespace, raw)
