"""The node's one RocksDB, and group commit.

Layout (raw bytes; ids begin with their ring position, so a ring range is one scan):
    default CF   {object id 32B}d{user key}      -> msgpack value
                 {object id 32B}a                -> msgpack [alarm time (epoch ms), namespace]
                 {object id 32B}n                -> namespace (utf-8)
                 {object id 32B}w{socket id}     -> msgpack socket metadata
                 {object id 32B}v                -> object version, 8B BE (see below)
    alarms CF    {when ms 8B BE}{object id 32B}  -> namespace (node-wide alarm index)
    meta CF      name                            -> node-level records (e.g. the last ring
                                                    whose handoffs completed)

Versions: every batch moves its object from version ``base`` to ``version``; a
replica applies a batch only on top of ``base`` and otherwise takes the whole object
from the home. Versions are ``(term << 32) + n``, the term being the writer's
membership revision, so a new home's writes outrank anything an old home wrote
(acknowledged or not: an old home may hold writes no replica took). Two copies with
one version hold the same history; catch-up keeps the copy with the higher version.

Which rocksdict calls run where is decided here and only here:
* on the event loop: point reads and bounded scans (one object, one list() page:
  microseconds, from the block cache);
* on the commit thread (``GroupCommitter``): every fsync'd write, and the scans that
  must be ordered with commits (the alarm index reload, catch-up and handoff ingest,
  fetching one object whole);
* on the scan thread (``Store.walk``): walks of the whole keyspace (storage metrics),
  which may take seconds and must hold up neither the loop nor commits.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import msgpack
from rocksdict import Options, Rdict, ReadOptions, WriteBatch, WriteOptions

from abode.cluster.errors import CommitUncertain, Unavailable
from abode.cluster.lockfile import describe_process, lock_holder
from abode.cluster.replica import Batch
from abode.cluster.supervisor import Tasks

log = logging.getLogger(__name__)
T = TypeVar("T")
# Ships a group to replicas; returns {batch index: why it failed}.
Replicate = Callable[[list["Batch"]], Awaitable[dict[int, str]]]

DATA = b"d"
ALARM = b"a"
NAMESPACE = b"n"
SOCKET = b"w"
VERSION = b"v"
ID_BYTES = 32
TERM_SHIFT = 32  # version = (term << TERM_SHIFT) + n
DISK_RETRY_AFTER = 5.0  # seconds a caller waits before retrying on a full disk
DISK_RESERVE_BYTES = 1 << 20  # free space before writes are tried again
DISK_PROBE_SECONDS = 0.5  # how often a full node looks for space
_ALARMS_CF = "alarms"
_META_CF = "meta"


def alarm_index_key(when_ms: int, object_id: bytes) -> bytes:
    return when_ms.to_bytes(8, "big") + object_id


def alarm_record(when_ms: int, namespace: str) -> bytes:
    # The namespace rides along so a node that receives the object in a handoff can
    # rebuild its time index entry from this record alone.
    return msgpack.packb([when_ms, namespace])


def alarm_record_time(raw: bytes) -> int:
    value = msgpack.unpackb(raw)
    return int(value[0] if isinstance(value, list) else value)


def position_key(position: int) -> bytes:
    return position.to_bytes(8, "big")


class ReplicationFailed(CommitUncertain):
    """A replica did not take the batch: its outputs must not be released. The batch
    is durable here (and maybe on other replicas), so its fate is uncertain."""


class DiskFull(Unavailable):
    """The node's disk is full: the batch was not written (nothing of it is visible)
    and the event's outputs never left the node, so the caller may retry. The node
    writes again by itself once space returns."""


class CommitFenced(RuntimeError):
    """The commit was refused: this node may no longer own the object."""


class StoreClosing(RuntimeError):
    """A walk was cut short: the store is closing."""


class StoreLocked(RuntimeError):
    """Another process holds the data directory."""


class Store:
    """One RocksDB per node."""

    def __init__(
        self, path: str, *, term: Callable[[], int], sync: bool = True, open_timeout: float = 10.0
    ) -> None:
        self._opts = Options(raw_mode=True)
        self._opts.create_if_missing(True)
        self._opts.create_missing_column_families(True)
        self.path = path
        # Held while the DB is swapped (reopen after a full disk), so a read on the
        # loop never meets a closed DB.
        self._swap = threading.Lock()
        self._open(open_timeout)
        self._scanner = ThreadPoolExecutor(1, thread_name_prefix="abode-scan")
        self._closing = False
        self._write_opts = WriteOptions()
        self._write_opts.sync = sync
        # The term of new versions: the node's membership revision (0 outside a cluster).
        self.term = term
        # Why writes fail now (the disk is full), or None. Set on the commit thread,
        # cleared by ``reopen``.
        self.full: str | None = None

    def _open(self, timeout: float) -> None:
        self._db = _open_with_retry(self.path, self._opts, timeout)
        self._alarms = self._db.get_column_family(_ALARMS_CF)
        self._alarms_handle = self._db.get_column_family_handle(_ALARMS_CF)
        self._meta = self._db.get_column_family(_META_CF)

    # -- reads (on the loop) --------------------------------------------------------
    def get(self, key: bytes) -> bytes | None:
        with self._swap:
            return self._db.get(key)

    def scan(
        self, lower: bytes, upper: bytes, *, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        """Keys in [lower, upper), ascending or descending; lazily."""
        with self._swap:
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
        with self._swap:
            it = self._alarms.iter(ReadOptions())
        it.seek_to_first()
        while it.valid():
            k = it.key()
            yield int.from_bytes(k[:8], "big"), k[8:], it.value().decode()
            it.next()

    def walk(self, fn: Callable[[Iterator[tuple[bytes, bytes]]], T]) -> asyncio.Future[T]:
        """Run ``fn`` over every key (ascending) on the scan thread. A store that is
        closing ends the walk early (``StoreClosing``) rather than wait for it."""

        def run() -> T:
            return fn(self._keys_until_closing())

        return asyncio.get_running_loop().run_in_executor(self._scanner, run)

    def _keys_until_closing(self) -> Iterator[tuple[bytes, bytes]]:
        for n, item in enumerate(self.scan_positions(0, 0)):
            if n % 1024 == 0 and self._closing:
                raise StoreClosing("the store is closing")
            yield item

    def meta_get(self, name: str) -> bytes | None:
        with self._swap:
            return self._meta.get(name.encode())

    def meta_put(self, name: str, value: bytes) -> None:
        self._check_writable()
        try:
            self._meta.put(name.encode(), value, self._write_opts)
        except Exception as exc:
            raise self._write_failed(exc) from exc

    def scan_positions(self, start: int, end: int) -> Iterator[tuple[bytes, bytes]]:
        """Every key of the objects whose ring position is in [start, end) (end 0: 2^64)."""
        lower = position_key(start)
        with self._swap:
            it = self._db.iter(ReadOptions())
        it.seek(lower)
        upper = position_key(end) if 0 < end < 1 << 64 else None
        while it.valid():
            k = it.key()
            if upper is not None and k >= upper:
                return
            yield k, it.value()
            it.next()

    # -- writes (on the commit thread) ----------------------------------------------
    def object_version(self, object_id: bytes) -> int:
        with self._swap:
            raw = self._db.get(object_id + VERSION)
        return 0 if raw is None else int.from_bytes(raw, "big")

    def next_version(self, version: int) -> int:
        """The version of an object's next batch, after ``version``."""
        return max(version + 1, self.term() << TERM_SHIFT)

    def scan_object(self, object_id: bytes) -> list[tuple[bytes, bytes]]:
        return list(self.scan(object_id, object_id + b"\xff"))

    def ingest(self, items: list[tuple[bytes, bytes]]) -> list[bytes]:
        """Take objects received whole (handoff, replica catch-up): each replaces the
        local copy only if its version is newer. Returns the ids replaced."""
        by_object: dict[bytes, list[tuple[bytes, bytes]]] = {}
        for k, v in items:
            by_object.setdefault(k[:ID_BYTES], []).append((k, v))
        wb = WriteBatch(raw_mode=True)
        replaced = []
        for oid, keys in by_object.items():
            incoming = next(
                (int.from_bytes(v, "big") for k, v in keys if k[ID_BYTES:] == VERSION), 0
            )
            if incoming <= self.object_version(oid) and incoming:
                continue
            self._replace(wb, oid, keys)
            replaced.append(oid)
        self._write(wb)
        return replaced

    def replace_object(self, object_id: bytes, keys: list[tuple[bytes, bytes]]) -> None:
        wb = WriteBatch(raw_mode=True)
        self._replace(wb, object_id, keys)
        self._write(wb)

    def _replace(self, wb: WriteBatch, oid: bytes, keys: list[tuple[bytes, bytes]]) -> None:
        for k, v in self.scan_object(oid):
            wb.delete(k)
            if k[ID_BYTES:] == ALARM:
                wb.delete(alarm_index_key(alarm_record_time(v), oid), self._alarms_handle)
        for k, v in keys:
            wb.put(k, v)
            if k[ID_BYTES:] == ALARM:
                when, ns = msgpack.unpackb(v)
                wb.put(alarm_index_key(int(when), oid), ns.encode(), self._alarms_handle)

    def apply_replicas(self, batches: list[Batch]) -> list[bool]:
        """Apply a home's batches on a replica, in order, with one write. Per batch:
        True if it is applied (now or before), False if this copy is not at its base
        (it missed or diverged: the caller repairs the object, then applies again)."""
        versions: dict[bytes, int] = {}
        broken: set[bytes] = set()
        ok: list[bool] = []
        todo: list[Batch] = []
        for batch in batches:
            oid = batch.object_id
            local = versions.get(oid)
            if local is None:
                local = self.object_version(oid)
            if oid in broken:
                ok.append(False)
            elif local == batch.base:
                todo.append(batch)
                versions[oid] = batch.version
                ok.append(True)
            elif local >= batch.version:
                ok.append(True)  # a resend of a batch applied before
            else:
                broken.add(oid)
                ok.append(False)
        if todo:
            self.write(todo)
        return ok

    def drop_positions(self, ranges: list[tuple[int, int]]) -> int:
        """Delete every key (and alarm index entry) of objects in the ranges."""
        wb = WriteBatch(raw_mode=True)
        count = 0
        for start, end in ranges:
            for k, v in self.scan_positions(start, end):
                wb.delete(k)
                count += 1
                if len(k) == 33 and k[32:] == ALARM:
                    wb.delete(alarm_index_key(alarm_record_time(v), k[:32]), self._alarms_handle)
        self._write(wb)
        return count

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
        self._write(wb)

    # -- a full disk (on the commit thread) ------------------------------------------
    def _write(self, wb: WriteBatch) -> None:
        self._check_writable()
        try:
            self._db.write(wb, self._write_opts)
        except Exception as exc:
            raise self._write_failed(exc) from exc

    def _check_writable(self) -> None:
        if self.full is not None:
            raise DiskFull(f"node's disk is full: {self.full}", retry_after=DISK_RETRY_AFTER)

    def _write_failed(self, exc: Exception) -> Exception:
        # RocksDB refuses every write after a failed one ("Writer has previous
        # error") until the DB is opened again; a failed write left nothing visible.
        text = str(exc)
        if "No space left" in text or "previous error" in text:
            if self.full is None:
                log.error("disk full: writes refused until space returns (%s)", text)
            self.full = text
            return DiskFull(f"node's disk is full: {text}", retry_after=DISK_RETRY_AFTER)
        return exc

    def has_space(self, reserve: int = DISK_RESERVE_BYTES) -> bool:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize >= reserve

    def reopen(self) -> None:
        """Open the DB again after a full disk (rocksdict has no resume). Everything
        acknowledged is in the WAL and comes back; the failed write never happened."""
        with self._swap:
            self._close_db()
            gc.collect()  # iterators of readers keep the old DB's LOCK until collected
            self._open(timeout=1.0)
            self.full = None
        log.info("disk has space again: writes resume")

    def _close_db(self) -> None:
        # Column family handles keep the DB (and its LOCK) alive until dropped.
        del self._alarms, self._alarms_handle, self._meta
        try:
            self._db.close()
        except Exception as exc:  # its flush fails after a failed write; it closes anyway
            if self.full is None:
                raise
            log.warning("closing the store after a full disk: %s", exc)

    def close(self) -> None:
        self._closing = True
        self._scanner.shutdown(wait=True)  # a walk's iterator would keep the DB open
        with self._swap:
            self._close_db()


def _open_with_retry(path: str, opts: Options, timeout: float) -> Rdict:
    # A process that was just killed may still hold the LOCK for a moment.
    deadline = time.monotonic() + timeout
    while True:
        try:
            return Rdict(path, opts, column_families={
                _ALARMS_CF: Options(raw_mode=True), _META_CF: Options(raw_mode=True),
            })
        except Exception as exc:
            if "lock" not in str(exc).lower():
                raise
            # A lock another process holds is held by a live process: say which, now.
            holder = lock_holder(f"{path}/LOCK") if "current process" not in str(exc) else None
            if holder is not None or time.monotonic() > deadline:
                raise StoreLocked(
                    f"data directory {path} is in use by "
                    + (describe_process(holder) if holder else f"another process: {exc}")
                ) from None
            time.sleep(0.1)


class GroupCommitter:
    """Commits the batches of many objects together: one WriteBatch, one fsync.

    While one write is on the disk, new batches gather; the next write takes them
    all. Each submitter gets a future that resolves when its batch is durable.
    """

    def __init__(
        self,
        store: Store,
        *,
        fence: Callable[[Batch], str | None],
        replicate: Replicate | None,
        tasks: Tasks,
        storage_state: Callable[[str | None], None] = lambda full: None,
    ) -> None:
        self._store = store
        # Told when the disk fills (with the reason) and when writing resumes (None).
        self._storage_state = storage_state
        # Fencing in the commit path: a batch of an object this node may no longer
        # own (lost lease, range handed off) is refused, never made durable.
        self.fence = fence
        # Replication (None: this node keeps the only copy).
        self.replicate = replicate
        self._tasks = tasks
        self._queue: list[tuple[Batch, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="abode-commit")
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.commits = 0
        self.batches = 0
        self.fenced = 0
        self.last_latency = 0.0
        self.on_commit: Callable[[int, float], None] | None = None  # metrics: (batches, s)

    def start(self) -> None:
        self._task = self._tasks.start("group-commit", self._run_until_closed(), may_end=True)

    async def _run_until_closed(self) -> None:
        await self._run()
        if not self._closing:
            # Nothing would commit again, and every output would wait at its gate.
            raise RuntimeError("the group commit loop returned while the node runs")

    def run_exclusive(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Run a large store operation on the commit thread, ordered with commits.

        Queued at once (not when awaited), so calls run in the order they were made.
        """
        fut = asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)
        fut.add_done_callback(self._after_exclusive)
        return fut

    def _after_exclusive(self, _: asyncio.Future[Any]) -> None:
        if self._store.full is not None:
            self._wake.set()  # a replica write found the disk full: recover from it

    def submit(self, batch: Batch) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._closing:
            fut.set_exception(RuntimeError("node is shutting down"))
            return fut
        if self._store.full is not None:
            fut.set_exception(self._disk_full())
            self._wake.set()
            return fut
        self._queue.append((batch, fut))
        self._wake.set()
        return fut

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self._store.full is not None and not self._closing:
                await self._recover()
            await self._wake.wait()
            self._wake.clear()
            if not self._queue:
                if self._closing:
                    return
                continue
            group, self._queue = self._queue, []
            if self._store.full is not None:
                self._refuse(group, self._disk_full())
                continue
            group = self._refuse_fenced(group)
            if not group:
                continue
            t0 = time.perf_counter()
            batches = [b for b, _ in group]
            # The replicas write while the local disk syncs; outputs wait for both.
            remote = (
                asyncio.ensure_future(self.replicate(batches)) if self.replicate else None
            )
            try:
                await loop.run_in_executor(self._thread, self._store.write, batches)
            except DiskFull as exc:
                # Not written here. Replicas may have taken it, so with replication
                # its fate is uncertain; alone, it simply never happened.
                if remote is not None:
                    await self._replicated(remote, len(group))
                    uncertain = ReplicationFailed(f"{exc}; replicas may hold the write")
                self._refuse(group, uncertain if remote is not None else exc)
            except Exception as exc:
                log.error("commit of %d batches failed: %s", len(group), exc)
                if remote is not None:
                    await self._replicated(remote, len(group))
                for _, fut in group:
                    if not fut.done():
                        fut.set_exception(exc)
            else:
                failed = await self._replicated(remote, len(group)) if remote is not None else {}
                for i, (_, fut) in enumerate(group):
                    if fut.done():
                        continue
                    if i in failed:
                        fut.set_exception(ReplicationFailed(failed[i]))
                    else:
                        fut.set_result(None)
            self.last_latency = time.perf_counter() - t0
            self.commits += 1
            self.batches += len(group)
            if self.on_commit is not None:
                self.on_commit(len(group), self.last_latency)
            if self._closing and not self._queue:
                return

    @staticmethod
    async def _replicated(remote: asyncio.Future[dict[int, str]], n: int) -> dict[int, str]:
        """The replication outcome of a group; a replication that raised fails every
        batch of the group (uncertain: some replicas may have taken it) instead of
        ending this loop, and so does a CancelledError that is not this task's own."""
        try:
            return await remote
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            why = "replication was cancelled"
        except Exception as exc:
            why = f"replication failed: {type(exc).__name__}: {exc}"
        log.error("%s; %d batches are uncertain", why, n)
        return {i: why for i in range(n)}

    def _disk_full(self) -> DiskFull:
        return DiskFull(f"node's disk is full: {self._store.full}", retry_after=DISK_RETRY_AFTER)

    @staticmethod
    def _refuse(group: list[tuple[Batch, asyncio.Future[None]]], exc: Exception) -> None:
        for _, fut in group:
            if not fut.done():
                fut.set_exception(exc)

    async def _recover(self) -> None:
        """Refuse batches until the disk has space again, then open the DB again."""
        loop = asyncio.get_running_loop()
        self._storage_state(self._store.full)
        while self._store.full is not None and not self._closing:
            self._wake.clear()
            try:
                async with asyncio.timeout(DISK_PROBE_SECONDS):
                    await self._wake.wait()
            except TimeoutError:
                pass
            group, self._queue = self._queue, []
            self._refuse(group, self._disk_full())
            if self._closing or not self._store.has_space():
                continue
            try:
                await loop.run_in_executor(self._thread, self._store.reopen)
            except Exception as exc:
                log.warning("cannot open the store again yet: %s", exc)
        if self._store.full is None:
            self._storage_state(None)
        self._wake.set()  # what arrived meanwhile (a close, say) is looked at next

    def _refuse_fenced(
        self, group: list[tuple[Batch, asyncio.Future[None]]]
    ) -> list[tuple[Batch, asyncio.Future[None]]]:
        kept = []
        for batch, fut in group:
            reason = self.fence(batch)
            if reason is None:
                kept.append((batch, fut))
            elif not fut.done():
                self.fenced += 1
                fut.set_exception(CommitFenced(reason))
        return kept

    async def close(self, timeout: float | None = None) -> None:
        """Commit what is queued, then stop; a group still unconfirmed after
        ``timeout`` s (its replication retrying) is given up: a stopping node must
        exit within its grace. Safe to call twice."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            # Its own outcome is the supervisor's to judge.
            await asyncio.wait([self._task], timeout=timeout)
            if not self._task.done():
                log.warning("stopping: a commit group still unconfirmed after %g s is "
                            "given up", timeout)
                self._task.cancel()
                await asyncio.wait([self._task])
            self._task = None
        self._thread.shutdown(wait=True)
