"""Handoff: when membership changes, the new owner of each moved range pulls it.

Each node compares the ring it last completed handoffs for with the current one.
For every range it gained, it pulls the keys from the old owner (one scan per
range, streamed), writes them durably, then tells the old owner to drop them.
Requests for a range still being pulled wait (bounded). Serving a pull fences the
old owner first: it catches up to the puller's membership revision (so it forwards
new requests for the range), lets in-flight events of objects in the range finish
and commit, evicts them, and only then scans.

The last ring whose handoffs completed is kept in the store, so a node that was
down during a change still does the right pulls when it returns.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable

import grpc
import msgpack

from abode.cluster.ids import ring_position
from abode.cluster.membership import MembershipView
from abode.cluster.peer import CHANNEL_OPTIONS
from abode.cluster.retry import until_done
from abode.cluster.ring import Member, Ring, moved_ranges
from abode.cluster.rpc.v1 import node_pb2 as pb
from abode.cluster.rpc.v1 import node_pb2_grpc as pb_grpc
from abode.node._ownership import PositionSet, RingOwnership
from abode.node._runtime import Runtime
from abode.node._store import ALARM, alarm_record_time

log = logging.getLogger(__name__)

CHUNK_KEYS = 512
_RING_META = "handoff-ring"
KEYSPACE = 1 << 64

Ranges = list[tuple[int, int]]


def _span(ranges: Ranges) -> int:
    return sum((end or KEYSPACE) - start for start, end in ranges)


class Handoff:
    def __init__(self, runtime: Runtime, view: MembershipView, ownership: RingOwnership) -> None:
        self.node_id = ownership.node_id
        self.runtime = runtime
        self.view = view
        self.ownership = ownership
        self.store = runtime.store
        self._ring: Ring | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # Set when this node was removed and every range it owned has been released.
        self.released = asyncio.Event()
        self._leaving_span = 0
        self._released_span = 0
        self.ranges_pulled = 0
        self.keys_pulled = 0
        self.keys_served = 0
        self.ranges_served = 0

    # -- puller ---------------------------------------------------------------------
    def start(self) -> None:
        saved = self.store.meta_get(_RING_META)
        if saved is not None:
            data = json.loads(saved)
            old = Ring([Member(**m) for m in data["members"]], revision=data["revision"])
        else:
            # A node with no record has no data: it joins from the ring without it.
            old = Ring(
                [m for m in self.view.ring.members.values() if m.node_id != self.node_id],
                revision=self.view.ring.revision,
            )
        self._ring = old
        self.on_view(self.view)

    def on_view(self, view: MembershipView) -> None:
        new = view.ring
        old = self._ring
        if old is None or new is old:
            return
        self._ring = new
        moved = moved_ranges(old, new)
        incoming: dict[str, Ranges] = defaultdict(list)
        outgoing: Ranges = []
        for start, end, was, now in moved:
            if now == self.node_id and was != self.node_id:
                incoming[was].append((start, end))
            elif was == self.node_id and now != self.node_id:
                outgoing.append((start, end))
        if self.node_id not in new.members and self.node_id in old.members:
            self._leaving_span = _span(old.ranges_of(self.node_id))
            log.info("this node was removed from the cluster: handing off its ranges")
            if self._leaving_span == 0:
                self.released.set()
        # Until their new owners pull them, this node still holds the moving ranges.
        self.ownership.releasing.discard(r for ranges in incoming.values() for r in ranges)
        if outgoing:
            self.ownership.releasing.add(outgoing)
            log.info("membership revision %d: %d ranges move away from this node",
                     new.revision, len(outgoing))
        if not incoming:
            self._save(new)
            return
        for source, ranges in incoming.items():
            self.ownership.pending.add(ranges)
            task = asyncio.get_running_loop().create_task(self._pull(source, ranges, new))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            log.info("handoff: pulling %d ranges from %s (revision %d)",
                     len(ranges), source, new.revision)

    async def _pull(self, source: str, ranges: Ranges, ring: Ring) -> None:
        async def attempt() -> int:
            await self.view.wait_for(lambda v: source in v.live, timeout=30.0)
            return await self._pull_once(self.view.address_of(source), ranges)

        count = await until_done(attempt, what=f"handoff from {source}", log=log)
        self.ownership.pending.remove(ranges)
        self.ranges_pulled += len(ranges)
        self.keys_pulled += count
        log.info("handoff: %d keys in %d ranges from %s done", count, len(ranges), source)
        if not self._tasks - {asyncio.current_task()} and self._ring is ring:
            self._save(ring)

    async def _pull_once(self, address: str, ranges: Ranges) -> int:
        request = pb.PullRequest(
            node_id=self.node_id,
            revision=self.view.revision,
            ranges=[pb.Range(start=s, end=e % KEYSPACE) for s, e in ranges],
        )
        committer = self.runtime.committer
        count = 0
        async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
            stub = pb_grpc.NodeStub(channel)
            async for chunk in stub.Pull(request, timeout=300):
                items = [(kv.key, kv.value) for kv in chunk.items]
                await committer.run_exclusive(self.store.ingest, items)
                self._schedule_alarms(items)
                count += len(items)
            await stub.Release(request, timeout=60)
        return count

    def _schedule_alarms(self, items: list[tuple[bytes, bytes]]) -> None:
        for key, value in items:
            if len(key) == 33 and key[32:] == ALARM:
                _, namespace = msgpack.unpackb(value)
                self.runtime.alarms.set(key[:32], namespace, alarm_record_time(value))

    def _save(self, ring: Ring) -> None:
        members = [
            {"node_id": m.node_id, "address": m.address, "weight": m.weight}
            for m in ring.members.values()
        ]
        value = json.dumps({"revision": ring.revision, "members": members}).encode()
        # An fsync'd write: on the commit thread, not the event loop (saves stay in order).
        self.runtime.committer.run_exclusive(self.store.meta_put, _RING_META, value)

    @property
    def pulling(self) -> int:
        return len(self._tasks)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- old owner ------------------------------------------------------------------
    async def serve_pull(self, request: pb.PullRequest) -> AsyncIterator[pb.PullChunk]:
        ranges = [(r.start, r.end) for r in request.ranges]
        # The fence: after catching up, this node forwards new calls for the ranges.
        if not await self.ownership.caught_up(request.revision, 10.0):
            raise RuntimeError(f"cannot reach membership revision {request.revision}")
        if request.sync:
            # A replica catching up, or fencing this node once it is home again. What
            # this node admitted for objects now homed there finishes first (its
            # writes replicate to the puller); from then on none of them commits here.
            def moving(oid: bytes) -> bool:
                return self.ownership.owner_of(oid) == request.node_id

            await self._quiesce(ranges, moving)
            self.ownership.handed_over(request.node_id, ranges)
            # This node now sees the puller live, so every group commit from here on
            # replicates to it; the barrier lets a group that started before reach
            # the disk, so the scan below holds it.
            await self.runtime.committer.run_exclusive(lambda: None)
        else:
            await self._wait_own_pulls(ranges)
            # Only what moved away: with replicas this node may stay home of objects
            # in the ranges until the puller has caught up (and then fences it).
            await self._quiesce(ranges, lambda oid: not self.ownership.owns(oid))
            # From here on the puller has the ranges: a late commit here would be lost.
            self.ownership.releasing.discard(ranges)
            self.ownership.handed_over(request.node_id, ranges)
        batch: list[pb.KeyValue] = []
        for start, end in ranges:
            for key, value in self.store.scan_positions(start, end):
                # Chunks end only between objects: the receiver takes each object whole.
                if len(batch) >= CHUNK_KEYS and batch[-1].key[:32] != key[:32]:
                    self.keys_served += len(batch)
                    yield pb.PullChunk(items=batch)
                    batch = []
                    await asyncio.sleep(0)  # let the node keep serving meanwhile
                batch.append(pb.KeyValue(key=key, value=value))
        self.keys_served += len(batch)
        self.ranges_served += len(ranges)
        yield pb.PullChunk(items=batch)

    async def release(self, request: pb.PullRequest) -> int:
        ranges = [(r.start, r.end) for r in request.ranges]
        # Drop only what this node keeps no copy of now (the ring may have moved back;
        # with replicas, an old owner usually stays a replica of part of what it
        # handed off: a copy dropped there would leave it home-able with no data).
        ring = self.view.ring
        gone = PositionSet()
        gone.add(ranges)
        if ring.members:
            gone.discard(ring.replica_ranges(self.node_id, self.view.replicas))
        drop = gone.spans()
        dropped = await self.runtime.committer.run_exclusive(self.store.drop_positions, drop)
        if self._leaving_span:
            self._released_span += _span(drop)
            if self._released_span >= self._leaving_span:
                self.released.set()
        log.info("handoff to %s complete: dropped %d keys in %d ranges",
                 request.node_id, dropped, len(drop))
        return dropped

    async def _wait_own_pulls(self, ranges: Ranges) -> None:
        deadline = time.monotonic() + 60.0
        pending = self.ownership.pending
        while any(pending.overlaps(s, e) for s, e in ranges):
            if time.monotonic() > deadline:
                raise RuntimeError("ranges still arriving at this node; retry later")
            await pending.wait_changed(1.0)

    async def _quiesce(
        self, ranges: Ranges, which: Callable[[bytes], bool] | None = None,
        timeout: float = 10.0,
    ) -> None:
        """Let objects in the ranges (those ``which`` picks) finish what they started,
        then evict them.

        An object still busy after `timeout` fails the pull (the puller retries):
        evicting it would leave its running event beside the new home's instance.
        """
        def in_ranges(oid: bytes) -> bool:
            if which is not None and not which(oid):
                return False
            p = ring_position(oid)
            return any(s <= p < (e or KEYSPACE) for s, e in ranges)

        deadline = time.monotonic() + timeout
        while True:
            busy = [h for k, h in self.runtime.hosts.items() if in_ranges(k) and not h.idle]
            if not busy:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(busy)} objects in the ranges are still busy")
            await asyncio.sleep(0.01)
        for key in [k for k in self.runtime.hosts if in_ranges(k)]:
            self.runtime.evict(key)
