"""The node's one RocksDB, and group commit.

Layout (raw bytes; ids begin with their ring position, so a ring range is one scan):
    default CF   {object id 32B}d{user key}      -> msgpack value
                 {object id 32B}a                -> msgpack alarm time (epoch ms)
                 {object id 32B}n                -> namespace (utf-8)
                 {object id 32B}w{socket id}     -> msgpack socket metadata
    alarms CF    {when ms 8B BE}{object id 32B}  -> namespace (node-wide alarm index)

Which rocksdict calls run where is decided here and only here: point reads and
bounded scans run on the event loop (microseconds, from the block cache); fsync'd
writes run on one dedicated thread so the loop keeps serving while the disk syncs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from rocksdict import Options, Rdict, ReadOptions, WriteBatch, WriteOptions

log = logging.getLogger(__name__)

DATA = b"d"
ALARM = b"a"
NAMESPACE = b"n"
SOCKET = b"w"
_ALARMS_CF = "alarms"


def data_prefix(object_id: bytes) -> bytes:
    return object_id + DATA


def alarm_index_key(when_ms: int, object_id: bytes) -> bytes:
    return when_ms.to_bytes(8, "big") + object_id


class StoreLocked(RuntimeError):
    """Another process holds the data directory."""


@dataclass(slots=True)
class Batch:
    """Writes of one event (or activation) of one object: applied atomically."""

    puts: list[tuple[bytes, bytes]] = field(default_factory=list)
    deletes: list[bytes] = field(default_factory=list)
    index_puts: list[tuple[bytes, bytes]] = field(default_factory=list)
    index_deletes: list[bytes] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.puts or self.deletes or self.index_puts or self.index_deletes)

    @property
    def size(self) -> int:
        return sum(len(k) + len(v) for k, v in self.puts) + sum(len(k) for k in self.deletes)


class Store:
    """One RocksDB per node."""

    def __init__(self, path: str, *, sync: bool = True, open_timeout: float = 10.0) -> None:
        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        opts.create_missing_column_families(True)
        self._db = _open_with_retry(path, opts, open_timeout)
        self._alarms = self._db.get_column_family(_ALARMS_CF)
        self._alarms_handle = self._db.get_column_family_handle(_ALARMS_CF)
        self._write_opts = WriteOptions()
        self._write_opts.sync = sync
        self.path = path

    # -- reads (on the loop) --------------------------------------------------------
    def get(self, key: bytes) -> bytes | None:
        return self._db.get(key)

    def scan(
        self, lower: bytes, upper: bytes, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        """Keys in [lower, upper), ascending or descending; lazily."""
        it = self._db.iter(ReadOptions())
        if reverse:
            it.seek_for_prev(upper)
            if it.valid() and it.key() >= upper:
                it.prev()
            while it.valid() and it.key() >= lower:
                yield it.key(), it.value()
                it.prev()
        else:
            it.seek(lower)
            while it.valid() and it.key() < upper:
                yield it.key(), it.value()
                it.next()

    def alarm_index(self) -> Iterator[tuple[int, bytes, str]]:
        """Every pending alarm on this node: (when ms, object id, namespace)."""
        it = self._alarms.iter(ReadOptions())
        it.seek_to_first()
        while it.valid():
            k = it.key()
            yield int.from_bytes(k[:8], "big"), k[8:], it.value().decode()
            it.next()

    # -- writes (on the commit thread) ----------------------------------------------
    def write(self, batches: list[Batch]) -> None:
        wb = WriteBatch(raw_mode=True)
        for b in batches:
            for k, v in b.puts:
                wb.put(k, v)
            for k in b.deletes:
                wb.delete(k)
            for k, v in b.index_puts:
                wb.put(k, v, self._alarms_handle)
            for k in b.index_deletes:
                wb.delete(k, self._alarms_handle)
        self._db.write(wb, self._write_opts)

    def close(self) -> None:
        self._db.close()


def _open_with_retry(path: str, opts: Options, timeout: float) -> Rdict:
    # A process that was just killed may still hold the LOCK for a moment.
    deadline = time.monotonic() + timeout
    while True:
        try:
            return Rdict(path, opts, column_families={_ALARMS_CF: Options(raw_mode=True)})
        except Exception as exc:
            if "lock" not in str(exc).lower():
                raise
            if time.monotonic() > deadline:
                raise StoreLocked(
                    f"data directory {path} is locked by another process: {exc}"
                ) from None
            time.sleep(0.1)


class GroupCommitter:
    """Commits the batches of many objects together: one WriteBatch, one fsync.

    While one write is on the disk, new batches gather; the next write takes them
    all. Each submitter gets a future that resolves when its batch is durable.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._queue: list[tuple[Batch, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="abode-commit")
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.commits = 0
        self.batches = 0
        self.last_latency = 0.0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="group-commit")

    def submit(self, batch: Batch) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._closing:
            fut.set_exception(RuntimeError("node is shutting down"))
            return fut
        self._queue.append((batch, fut))
        self._wake.set()
        return fut

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._queue:
                if self._closing:
                    return
                continue
            group, self._queue = self._queue, []
            t0 = time.perf_counter()
            try:
                await loop.run_in_executor(self._thread, self._store.write, [b for b, _ in group])
            except Exception as exc:
                log.error("commit of %d batches failed: %s", len(group), exc)
                for _, fut in group:
                    if not fut.done():
                        fut.set_exception(exc)
            else:
                for _, fut in group:
                    if not fut.done():
                        fut.set_result(None)
            self.last_latency = time.perf_counter() - t0
            self.commits += 1
            self.batches += len(group)
            if self._closing and not self._queue:
                return

    async def close(self) -> None:
        """Commit what is queued, then stop. Safe to call twice."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        self._thread.shutdown(wait=True)
