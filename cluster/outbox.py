"""Bounded queues of messages waiting for the next Envelope, and how one is filled.

Both ends of a data-path stream (cluster.peer, node._service) queue what is ready
and send it in Envelopes. gRPC refuses a message over MAX_MESSAGE_BYTES and the
stream breaks with it, taking every call and socket on it along; so each item's
encoded size is measured once, as it is queued, and a writer fills an Envelope up
to ENVELOPE_BYTES, then starts another. An item too large for any Envelope is
refused when queued, to whoever sent it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Generic, Protocol, TypeVar

from abode.cluster.errors import Overloaded

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# Batching pays off long before this (per-message cost is what matters, and it is
# spread over thousands of items well under a megabyte); past it, one write would
# hold the stream for longer than a few hundred milliseconds.
ENVELOPE_BYTES = 4 * 1024 * 1024
# One item travels alone in an Envelope up to this: an HTTP body at --max-body
# (32 MiB) with its headers fits; the slack covers the Envelope's own framing.
MAX_ITEM_BYTES = MAX_MESSAGE_BYTES - 1024 * 1024
# A repeated message field's tag and length prefix, per item.
_FRAMING = 6
# What a queued item costs in memory beyond its encoded size (the message object,
# its fields, the queue's tuple): counted against max_bytes, so many small items are
# bounded by memory too.
ITEM_OVERHEAD = 256


class Sized(Protocol):
    def ByteSize(self) -> int: ...  # noqa: N802  (protobuf's name)


M = TypeVar("M", bound=Sized)


class MessageTooLarge(ValueError):
    """One item is larger than any Envelope may be."""

    def __init__(self, what: str, size: int) -> None:
        super().__init__(f"{what} of {size} bytes is over the {MAX_ITEM_BYTES}-byte "
                         "message limit")
        self.size = size


class Outbox(Generic[M]):
    """A FIFO of messages with their encoded sizes, bounded in count and bytes.

    ``put`` raises ``Overloaded`` past the bound; ``force=True`` queues anyway, for
    what must not be refused (answers to work already done, closes), which their
    senders bound by other means.
    """

    def __init__(self, what: str, *, max_items: int, max_bytes: int) -> None:
        self.what = what
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._items: deque[tuple[M, int]] = deque()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    def size_of(self, msg: M) -> int:
        size = msg.ByteSize() + _FRAMING
        if size > MAX_ITEM_BYTES:
            raise MessageTooLarge(self.what, size)
        return size

    def full(self, size: int = 0) -> bool:
        return (len(self._items) >= self.max_items
                or self.bytes + size + ITEM_OVERHEAD > self.max_bytes)

    def put(self, msg: M, *, force: bool = False) -> None:
        """Queue ``msg``; raises MessageTooLarge, or Overloaded when full."""
        size = self.size_of(msg)
        if not force and self.full(size):
            raise Overloaded(f"{self.what} queue is full ({len(self._items)} items, "
                             f"{self.bytes} bytes)")
        self._items.append((msg, size))
        self.bytes += size + ITEM_OVERHEAD

    def take(self, used: int, max_items: int | None = None) -> tuple[list[tuple[M, int]], int]:
        """Items for an Envelope that already holds ``used`` bytes: as many as fit in
        ENVELOPE_BYTES (at least one if it is empty). Returns them and the new total."""
        out: list[tuple[M, int]] = []
        items = self._items
        while items and (max_items is None or len(out) < max_items):
            size = items[0][1]
            if used and used + size > ENVELOPE_BYTES:
                break
            out.append(items.popleft())
            used += size
            self.bytes -= size + ITEM_OVERHEAD
        return out, used

    def put_back(self, taken: Iterable[tuple[M, int]]) -> None:
        """Return items taken and not sent to the front, in order."""
        for item in reversed(list(taken)):
            self._items.appendleft(item)
            self.bytes += item[1] + ITEM_OVERHEAD

    def clear(self) -> list[M]:
        out = [m for m, _ in self._items]
        self._items.clear()
        self.bytes = 0
        return out


def messages(taken: list[tuple[M, int]]) -> list[M]:
    return [m for m, _ in taken]
