"""The node's alarm clock: fires each object's alarm at or after its time.

Durable state lives in the store (the object's alarm record and the node-wide time
index, written atomically with the object's other writes); this class keeps the
in-memory heap built from that index and the retry counts. Delivery is at least
once: a crash between firing and the commit that clears an alarm fires it again.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from typing import TYPE_CHECKING, Any

from abode.node._object import AlarmInfo

if TYPE_CHECKING:
    from abode.node._runtime import Runtime

log = logging.getLogger(__name__)

MAX_RETRIES = 6
FIRST_RETRY_SECONDS = 2.0


def now_ms() -> int:
    return int(time.time() * 1000)


class AlarmScheduler:
    def __init__(self, runtime: Runtime, *, first_retry: float = FIRST_RETRY_SECONDS) -> None:
        self._runtime = runtime
        self._first_retry = first_retry
        # At most one live entry per object: the one whose time ``_queued`` holds.
        # Entries superseded since stay until popped or compacted away.
        self._heap: list[tuple[int, bytes, str]] = []
        self._queued: dict[bytes, int] = {}  # object id -> time of its live heap entry
        self._current: dict[bytes, int] = {}  # object id -> durable alarm time
        self._retries: dict[bytes, int] = {}
        self._in_flight: set[bytes] = set()
        self._wake = asyncio.Event()
        self.fired = 0
        self.retried = 0
        self.failed = 0

    async def load(self) -> int:
        """Schedule every alarm of the node-wide index not scheduled yet (at start,
        and where membership made this node home). Returns how many were new."""
        store = self._runtime.store
        # A full scan: on the commit thread (ordered after the commits before it).
        entries = await self._runtime.committer.run_exclusive(lambda: list(store.alarm_index()))
        count = 0
        for when, oid, ns in entries:
            if self._current.get(oid) == when:
                continue  # known: a reload must not reset its retries or queue it twice
            self.set(oid, ns, when)
            count += 1
        return count

    def set(self, object_id: bytes, namespace: str, when: int | None) -> None:
        """Record the object's durable alarm (None: no alarm)."""
        self._retries.pop(object_id, None)
        if when is None:
            self._current.pop(object_id, None)
            self._queued.pop(object_id, None)
            return
        self._current[object_id] = when
        self._push(object_id, namespace, when)

    def _push(self, oid: bytes, ns: str, at: int) -> None:
        if self._queued.get(oid) == at:
            return
        self._queued[oid] = at
        heapq.heappush(self._heap, (at, oid, ns))
        if len(self._heap) > 2 * len(self._queued) + 64:
            self._compact()
        self._wake.set()

    def _compact(self) -> None:
        live = {}
        for when, oid, ns in self._heap:
            if self._queued.get(oid) == when:
                live[oid] = (when, oid, ns)
        self._heap = list(live.values())
        heapq.heapify(self._heap)

    @property
    def queued(self) -> int:
        """Objects with a live entry in the heap (each at most once)."""
        return len(self._queued)

    @property
    def next_due_ms(self) -> int | None:
        """When the next scheduled firing (first try or retry) is due, or None."""
        return min(self._queued.values(), default=None)

    @property
    def heap_size(self) -> int:
        """Entries in the heap, superseded ones included (bounded by compaction)."""
        return len(self._heap)

    @property
    def pending(self) -> int:
        return len(self._current)

    async def run(self) -> None:
        while True:
            delay = self._fire_due()
            self._wake.clear()
            try:
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            except TimeoutError:
                pass

    def _fire_due(self) -> float:
        """Fire every due alarm; return seconds until the next one."""
        now = now_ms()
        while self._heap:
            when, oid, ns = self._heap[0]
            if self._queued.get(oid) != when:
                heapq.heappop(self._heap)  # superseded entry
                continue
            if when > now:
                return min(60.0, (when - now) / 1000.0)
            heapq.heappop(self._heap)
            del self._queued[oid]
            if oid in self._in_flight:
                continue
            self._fire(oid, ns, self._current.get(oid, when))
        return 60.0

    def _fire(self, oid: bytes, ns: str, when: int) -> None:
        self._in_flight.add(oid)
        retry = self._retries.get(oid, 0)
        self.fired += 1

        def done(outcome: Any) -> None:
            self._in_flight.discard(oid)
            if isinstance(outcome, BaseException):
                self._failed(oid, ns, when, outcome)
            else:
                self._retries.pop(oid, None)
            current = self._current.get(oid)
            if current is not None and current != when and oid not in self._retries:
                # Moved while this firing was in flight: its heap entry may have come due
                # and been skipped meanwhile, so schedule it again.
                self._push(oid, ns, current)

        self._runtime.fire_alarm(oid, ns, when, AlarmInfo(retry), done)

    def _failed(self, oid: bytes, ns: str, when: int, exc: BaseException) -> None:
        if self._current.get(oid) != when:
            return  # the alarm was moved or deleted meanwhile
        n = self._retries.get(oid, 0) + 1
        if n > MAX_RETRIES:
            log.warning("alarm of %s %s dropped after %d retries: %s", ns, oid.hex()[:16],
                        MAX_RETRIES, exc)
            self.failed += 1
            self._retries.pop(oid, None)
            self._runtime.drop_alarm(oid, ns, when)
            return
        self._retries[oid] = n
        self.retried += 1
        at = now_ms() + int(self._first_retry * 1000 * 2 ** (n - 1))
        self._push(oid, ns, at)
