"""``ctx.storage``: one object's view of the node's RocksDB.

Reads and writes go through a per-object cache, so ``put`` returns at once and later
reads see it. Writes land in the top *layer*: each event pushes one (so a raising
event discards its writes), each transaction pushes one more. When an event ends
well its layer folds into the cache and becomes one ``Batch`` for group commit;
the output gate (in the runtime) holds the event's outputs until that batch is
durable. Values stay encoded in the cache, so a caller mutating a returned list
cannot change what is stored.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar, Token
from datetime import datetime
from typing import Any, TypeVar

from abode.cluster import codec
from abode.node._store import (
    ALARM,
    DATA,
    SOCKET,
    VERSION,
    Batch,
    Store,
    alarm_index_key,
    alarm_record,
    alarm_record_time,
)

T = TypeVar("T")

MAX_BATCH_KEYS = 128


class _Tombstone:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<deleted>"


_DELETED = _Tombstone()
_ALARM_KEY = ("alarm",)  # a non-str key: cannot collide with a user key
_MISSING = object()

Layer = dict[Any, Any]


class Frame(list[Layer]):
    """The layers one event sees: its parent event's (when it re-entered the object
    from its own call chain) and its own on top, plus any open transactions.

    Each event has its own frame in its own task's context, so two re-entrant events
    running side by side each write to their own layer and cannot discard each
    other's writes.
    """

    __slots__ = ("storage", "token")

    def __init__(self, storage: StorageReader, layers: list[Layer]) -> None:
        super().__init__(layers)
        self.storage = storage
        self.token: Token[Frame | None] | None = None


_frame: ContextVar[Frame | None] = ContextVar("abode_storage_frame", default=None)


def _keys(keys: list[str]) -> list[str]:
    if len(keys) > MAX_BATCH_KEYS:
        raise ValueError(f"at most {MAX_BATCH_KEYS} keys per call, got {len(keys)}")
    for k in keys:
        codec.encode_key(k)
    return keys


def alarm_ms(when: datetime | int | float) -> int:
    if isinstance(when, datetime):
        if when.tzinfo is None:
            raise ValueError("set_alarm needs an aware datetime (with tzinfo) or epoch ms")
        return int(when.timestamp() * 1000)
    if isinstance(when, bool) or not isinstance(when, int | float):
        raise ValueError(f"set_alarm takes a datetime or epoch milliseconds, got {when!r}")
    return int(when)


class StorageReader:
    """The read half shared by storage and transactions."""

    def __init__(self, object_id: bytes, namespace: str, store: Store) -> None:
        self._id = object_id
        self._namespace = namespace
        self._store = store
        # Clean values read from disk and values of events not yet durable.
        self._cache: Layer = {}
        self.last_commit: asyncio.Future[None] | None = None
        # The object's version as of its latest batch (loaded on the first write).
        self._version: int | None = None

    @property
    def _layers(self) -> list[Layer]:
        frame = _frame.get()
        return frame if frame is not None and frame.storage is self else []

    # -- lookups --------------------------------------------------------------------
    def _lookup(self, key: Any, *, below_events: bool = False) -> Any:
        if not below_events:
            for layer in reversed(self._layers):
                if key in layer:
                    return layer[key]
        value = self._cache.get(key, _MISSING)
        if value is _MISSING:
            if key is _ALARM_KEY:
                raw = self._store.get(self._id + ALARM)
                value = alarm_record_time(raw) if raw is not None else None
            else:
                raw = self._store.get(self._id + DATA + key.encode())
                value = _DELETED if raw is None else raw
            self._cache[key] = value
        return value

    async def get(self, key: str | list[str], default: Any = None) -> Any:
        if isinstance(key, list):
            out = {}
            for k in sorted(_keys(key)):
                raw = self._lookup(k)
                if raw is not _DELETED:
                    out[k] = codec.unpack(raw)
            return out
        codec.encode_key(key)
        raw = self._lookup(key)
        return default if raw is _DELETED else codec.unpack(raw)

    async def list(
        self,
        *,
        prefix: str = "",
        start: str | None = None,
        start_after: str | None = None,
        end: str | None = None,
        reverse: bool = False,
        limit: int | None = None,
    ) -> dict[str, Any]:
        """Keys in order, Cloudflare's semantics: ``end`` exclusive; ``start`` inclusive
        and ``start_after`` exclusive, not both."""
        if start is not None and start_after is not None:
            raise ValueError("list() takes start or start_after, not both")
        if limit is not None and limit <= 0:
            raise ValueError("limit must be a positive integer")
        lo = prefix.encode()
        lo_exclusive = False
        if start is not None and start.encode() > lo:
            lo = start.encode()
        if start_after is not None and start_after.encode() >= lo:
            lo, lo_exclusive = start_after.encode(), True
        hi = _prefix_end(prefix.encode()) if prefix else None
        if end is not None and (hi is None or end.encode() < hi):
            hi = end.encode()
        out: dict[str, Any] = {}
        if hi is not None and hi <= lo:
            return out
        for k, raw in self._merged(lo, lo_exclusive, hi, reverse):
            out[k] = codec.unpack(raw)
            if limit is not None and len(out) >= limit:
                break
        return out

    def _merged(
        self, lo: bytes, lo_exclusive: bool, hi: bytes | None, reverse: bool
    ) -> Iterator[tuple[str, bytes]]:
        def in_range(kb: bytes) -> bool:
            if kb < lo or (lo_exclusive and kb == lo):
                return False
            return hi is None or kb < hi

        overlay: dict[bytes, Any] = {}
        for source in (self._cache, *self._layers):
            for k, v in source.items():
                if isinstance(k, str):
                    kb = k.encode()
                    if in_range(kb):
                        overlay[kb] = v
        base = len(self._id) + 1
        prefix = self._id + DATA
        upper = prefix + hi if hi is not None else self._id + bytes([DATA[0] + 1])
        disk = (
            (k[base:], v)
            for k, v in self._store.scan(prefix + lo, upper, reverse=reverse)
            if not (lo_exclusive and k[base:] == lo)
        )
        mem = iter(sorted(overlay.items(), reverse=reverse))
        # Where both hold a key the overlay must come first, so it wins: its tag sorts
        # first in the merge's direction.
        first, second = (1, 0) if reverse else (0, 1)
        merged = heapq.merge(
            ((k, first, v) for k, v in mem), ((k, second, v) for k, v in disk), reverse=reverse
        )
        last: bytes | None = None
        for k, _tag, v in merged:
            if k == last:
                continue
            last = k
            if v is _DELETED:
                continue
            yield k.decode(), v

    async def get_alarm(self) -> int | None:
        value = self._lookup(_ALARM_KEY)
        return None if value is None else int(value)


def _prefix_end(prefix: bytes) -> bytes | None:
    b = bytearray(prefix)
    while b and b[-1] == 0xFF:
        b.pop()
    if not b:
        return None
    b[-1] += 1
    return bytes(b)


class Transaction:
    """The ``txn`` of ``storage.transaction(fn)``: same API, its own layer."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self.rolled_back = False

    def rollback(self) -> None:
        """Undo the transaction's writes when ``fn`` returns."""
        self.rolled_back = True

    def __getattr__(self, name: str) -> Any:
        if name in {"get", "put", "delete", "list", "get_alarm", "set_alarm", "delete_alarm"}:
            return getattr(self._storage, name)
        raise AttributeError(name)


class Storage(StorageReader):
    """The public ``ctx.storage`` API (every method async, as in Cloudflare)."""

    def _top(self) -> Layer:
        if not self._layers:
            raise RuntimeError(
                "storage writes must happen inside an event (fetch, RPC, alarm, "
                "websocket handler, wait_until, or the constructor)"
            )
        return self._layers[-1]

    async def put(self, key: str | dict[str, Any], value: Any = None) -> None:
        if isinstance(key, dict):
            _keys(list(key))
            encoded = {k: codec.encode_value(v) for k, v in key.items()}
            self._top().update(encoded)
            return
        codec.encode_key(key)
        self._top()[key] = codec.encode_value(value)

    async def delete(self, key: str | list[str]) -> bool | int:
        if isinstance(key, list):
            count = 0
            for k in _keys(key):
                count += self._delete_one(k)
            return count
        codec.encode_key(key)
        return self._delete_one(key)

    def _delete_one(self, key: str) -> bool:
        existed = self._lookup(key) is not _DELETED
        self._top()[key] = _DELETED
        return existed

    async def delete_all(self) -> None:
        keys = list((await self.list()).keys())
        top = self._top()
        for k in keys:
            top[k] = _DELETED

    def put_socket_meta(self, socket_id: str, meta: bytes | None) -> None:
        """Record (or, with None, drop) a socket's metadata with the current event."""
        layers = self._layers
        if layers:
            layers[-1][("ws", socket_id)] = meta

    async def set_alarm(self, when: datetime | int | float) -> None:
        self._top()[_ALARM_KEY] = alarm_ms(when)

    async def delete_alarm(self) -> None:
        self._top()[_ALARM_KEY] = None

    async def transaction(self, fn: Callable[[Transaction], Awaitable[T]]) -> T:
        txn = Transaction(self)
        layers = self._layers
        if not layers:
            self._top()  # raises: outside an event
        layers.append({})
        try:
            result = await fn(txn)
        except BaseException:
            layers.pop()
            raise
        layer = layers.pop()
        if not txn.rolled_back:
            layers[-1].update(layer)
        return result

    async def sync(self) -> None:
        """Wait until every earlier event's writes are durable."""
        if self.last_commit is not None:
            await asyncio.shield(self.last_commit)

    # -- driven by the runtime ------------------------------------------------------
    def begin(self, parent: Frame | None = None) -> Frame:
        """Open an event's frame in this task's context (on top of ``parent``'s layers
        for an event that re-entered from the running event's call chain)."""
        frame = Frame(self, [*(parent or ()), {}])
        frame.token = _frame.set(frame)
        return frame

    def _close(self) -> Layer:
        frame = _frame.get()
        assert frame is not None and frame.storage is self, "no event frame open"
        layer = frame.pop()
        assert frame.token is not None
        _frame.reset(frame.token)
        return layer

    def discard(self) -> None:
        self._close()

    def alarm_touched(self) -> bool:
        """Whether the current event set or deleted the alarm."""
        return _ALARM_KEY in self._layers[-1]

    def end(self) -> Batch | None:
        """Fold the event's layer into its parent event's, or into the cache and a Batch."""
        frame = _frame.get()
        layer = self._close()
        if frame:  # a re-entrant event: its writes join its parent event's
            frame[-1].update(layer)
            return None
        if not layer:
            return None
        if self._version is None:
            self._version = self._store.object_version(self._id)
        base, self._version = self._version, self._store.next_version(self._version)
        batch = Batch(self._id, self._version, self._namespace, base=base)
        batch.puts.append((self._id + VERSION, self._version.to_bytes(8, "big")))
        for k, v in layer.items():
            if k is _ALARM_KEY:
                self._alarm_ops(batch, v)
            elif isinstance(k, tuple):  # ("ws", socket id): socket metadata
                skey = self._id + SOCKET + k[1].encode()
                if v is None:
                    batch.deletes.append(skey)
                else:
                    batch.puts.append((skey, v))
                continue
            elif v is _DELETED:
                batch.deletes.append(self._id + DATA + k.encode())
            else:
                batch.puts.append((self._id + DATA + k.encode(), v))
            self._cache[k] = v
        return batch

    def _alarm_ops(self, batch: Batch, when: int | None) -> None:
        old = self._lookup(_ALARM_KEY, below_events=True)
        if old == when:
            return
        if old is not None:
            batch.index_deletes.append(alarm_index_key(int(old), self._id))
        if when is None:
            batch.deletes.append(self._id + ALARM)
        else:
            batch.puts.append((self._id + ALARM, alarm_record(when, self._namespace)))
            batch.index_puts.append((alarm_index_key(when, self._id), self._namespace.encode()))

    @property
    def depth(self) -> int:
        return len(self._layers)
