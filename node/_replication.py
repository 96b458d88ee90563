"""Synchronous replication: no acknowledged write is lost when a node dies.

Home side (``Replicator``): each group commit ships every batch to the other live
nodes of its object's preference list, in parallel with the local fsync; a batch's
outputs are released only when every one of them has it durably. A replica that
does not take a batch is asked again until it does or is no longer a live copy (a
dead replica catches up before it can be home), so losing a replica delays commits
by about a lease TTL rather than failing them. A batch still not taken when this
node stops being the object's home, or after RETRY_SECONDS, fails as
``CommitUncertain`` (502): it is durable here and may outlive the failure.

Replica side (``ReplicaSink``): a write is taken from the node that is the object's
home in the replica's own view (caught up to the sender's revision). While a home
moves, the previous home may still commit what it admitted: the new home takes
those writes until it has fenced the sender (it runs the object only after that),
and another replica takes them only on top of exactly the copy it holds. Either
way a superseded home cannot make a write durable once the new home wrote: the new
home refuses it, and its versions outrank it everywhere. An envelope's batches
apply in order, with one disk write, each on top of its base version; a copy that
is not at the base (it missed writes, or holds writes of an old home no one else
took) takes the whole object from the home first. Versions carry the writer's membership
revision (node._store), so a new home's writes outrank anything an old one wrote.

Catch-up (``Catchup``): a node whose lease is new may have missed writes, so it
announces the peers it still waits on (in its live key) and may not be home for any
object whose preference list includes one of them until it has pulled, from that
peer, every object it keeps a copy of. Versions decide which copy is newer. Once it
waits on no one it is home again where it comes first, but it runs those objects
only after fencing each peer (a pull at the revision where it stopped waiting: the
peer forwards from then on and finishes what it admitted before answering); until
then their calls wait, and the peers' last writes are taken (``ReplicaSink``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

import grpc

from abode.cluster import wire
from abode.cluster.ids import ring_position
from abode.cluster.membership import MembershipView
from abode.cluster.metrics import Histogram
from abode.cluster.peer import CHANNEL_OPTIONS
from abode.cluster.placement import home_of, home_ranges
from abode.cluster.replica import ACK_OK, AckStatus, ReplicaAck
from abode.cluster.retry import until_done
from abode.cluster.ring import Ring
from abode.cluster.rpc.v1 import node_pb2 as pb
from abode.cluster.rpc.v1 import node_pb2_grpc as pb_grpc
from abode.node._dispatch import PeerPool
from abode.node._ownership import RingOwnership
from abode.node._runtime import Runtime
from abode.node._store import Batch

log = logging.getLogger(__name__)

REPLICA_TIMEOUT = 5.0  # one attempt
RETRY_SECONDS = 10.0  # every attempt for one group
KEYSPACE = 1 << 64


def _cancelling() -> bool:
    """Whether the current task is being cancelled (a CancelledError is then ours)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class Replicator:
    def __init__(self, node_id: str, view: MembershipView, peers: PeerPool) -> None:
        self.node_id = node_id
        self.view = view
        self.peers = peers
        self.batches_sent = 0
        self.failures = 0
        self.retries = 0
        self.last_latency = 0.0
        # Time from shipping a group to the last replica's ack (what commits wait for).
        self.latency = Histogram()

    def targets(self, object_id: bytes) -> list[str]:
        view = self.view
        if view.replicas <= 1 or not view.ring.members:
            return []
        prefs = view.ring.preference_list(ring_position(object_id), view.replicas)
        return [n for n in prefs if n != self.node_id and n in view.live]

    async def replicate(self, batches: list[Batch]) -> dict[int, str]:
        """Ship the group; returns {index of a failed batch: why}. Never raises (but
        for its own cancellation): the commit loop that awaits it must outlive any
        failure of one group."""
        try:
            return await self._replicate(batches)
        except (Exception, asyncio.CancelledError) as exc:
            if isinstance(exc, asyncio.CancelledError) and _cancelling():
                raise  # this task is being cancelled: that one is ours to pass on
            log.exception("replication of a group of %d batches failed", len(batches))
            return {i: f"replication failed: {type(exc).__name__}: {exc}"
                    for i in range(len(batches))}

    async def _replicate(self, batches: list[Batch]) -> dict[int, str]:
        """Ship the group; returns {index of a failed batch: why}.

        A replica that does not take a batch is asked again (resends are harmless:
        versions make them idempotent) until it does, or it is no longer a live node
        of the object's preference list (a dead replica catches up before it may be
        home again), or this node is no longer the object's home, or RETRY_SECONDS
        pass. So a replica's death delays commits by about a lease TTL instead of
        failing them.
        """
        revision = self.view.revision
        owed: dict[int, set[str]] = {}  # batch index -> replicas that have not acked it
        for i, batch in enumerate(batches):
            targets = self.targets(batch.object_id)
            if targets:
                owed[i] = set(targets)
        if not owed:
            return {}
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        deadline = t0 + RETRY_SECONDS
        why: dict[int, str] = {}
        failed: dict[int, str] = {}
        backoff = 0.05
        while True:
            by_target: dict[str, list[int]] = {}
            for i in sorted(owed):  # in group order, so each object's versions ascend
                for node in owed[i]:
                    by_target.setdefault(node, []).append(i)
            nodes = list(by_target)
            results = await asyncio.gather(*(
                self._attempt(n, [batches[i] for i in by_target[n]], revision)
                for n in nodes
            ), return_exceptions=True)
            for node, acks in zip(nodes, results, strict=True):
                if isinstance(acks, BaseException):
                    # One replica's attempt broke (a bug, not a refusal): that replica
                    # owes the batches still, and the others' acks count.
                    log.error("replication attempt to %s failed: %r", node, acks)
                    acks = [ReplicaAck(AckStatus.FAILED, f"attempt failed: {acks!r}")
                            ] * len(by_target[node])
                for i, ack in zip(by_target[node], acks, strict=True):
                    self.batches_sent += 1
                    if ack.ok:
                        owed[i].discard(node)
                    else:
                        why[i] = f"replica {node}: {ack}"
            owed = {i: nodes for i, nodes in owed.items() if nodes}
            # Still owed: only by replicas that are still live copies of a batch whose
            # object this node still serves, and only while time is left.
            failed.update(self._settle(batches, owed, deadline, why))
            if not owed:
                break
            self.retries += 1
            await self._pause(backoff, revision)
            backoff = min(backoff * 2, 0.5)
            revision = self.view.revision
        self.last_latency = loop.time() - t0
        self.latency.observe(self.last_latency)
        if failed:
            self.failures += len(failed)
            log.warning("replication failed for %d batches: %s", len(failed),
                        next(iter(failed.values())))
        return failed

    async def _pause(self, seconds: float, revision: int) -> None:
        """Wait before asking again, but only until membership changes: a replica whose
        lease just ended (a crash its peers proved and revoked) is forgiven at once,
        not a backoff later."""
        try:
            await self.view.wait_for(lambda v: v.revision > revision, seconds)
        except TimeoutError:
            pass

    async def _attempt(
        self, node: str, batches: list[Batch], revision: int
    ) -> list[ReplicaAck]:
        """One try at one replica; it ends early if the replica stops being live."""
        send = asyncio.ensure_future(self.peers.get(self.view.address_of(node)).replicate(
            batches, revision, REPLICA_TIMEOUT))
        down: asyncio.Future[None] | None = None
        try:
            # The usual case answers well within this; only a slow one watches liveness.
            await asyncio.wait({send}, timeout=0.25)
            if not send.done():
                down = asyncio.ensure_future(
                    self.view.wait_for(lambda v: node not in v.live, REPLICA_TIMEOUT + 1.0))
                await asyncio.wait({send, down}, return_when=asyncio.FIRST_COMPLETED)
                if not send.done() and (down.cancelled() or down.exception() is not None):
                    await asyncio.wait({send})  # the watch ended without news: keep waiting
            if send.done():
                # Never cancelled by us before here; if anything else did, that is no
                # reason to end the commit loop that awaits this: count it as no answer.
                if send.cancelled():
                    why = f"replication to {node} was cancelled"
                    return [ReplicaAck(AckStatus.UNREACHABLE, why)] * len(batches)
                return send.result()
            return [ReplicaAck(AckStatus.UNREACHABLE, f"replica {node} is down")] * len(batches)
        finally:
            tasks = [t for t in (send, down) if t is not None]
            for task in tasks:
                if not task.done():
                    task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _settle(
        self, batches: list[Batch], owed: dict[int, set[str]], deadline: float,
        why: dict[int, str],
    ) -> dict[int, str]:
        """Forgive replicas that are no longer copies; fail what cannot be acked."""
        failed: dict[int, str] = {}
        late = asyncio.get_running_loop().time() > deadline
        for i in list(owed):
            oid = batches[i].object_id
            if home_of(self.view, oid)[0] != self.node_id:
                failed[i] = f"{why.get(i)}; this node is no longer the object's home"
            else:
                owed[i] &= set(self.targets(oid))
                if owed[i] and late:
                    failed[i] = f"{why.get(i)} (for {RETRY_SECONDS:g} s)"
                elif owed[i]:
                    continue
            del owed[i]
        return failed


class ReplicaSink:
    def __init__(self, node_id: str, view: MembershipView, runtime: Runtime,
                 peers: PeerPool, ownership: RingOwnership) -> None:
        self.node_id = node_id
        self.view = view
        self.runtime = runtime
        self.peers = peers
        self.ownership = ownership
        self.applied = 0
        self.refused = 0
        self.repaired = 0

    async def apply(self, sender: str, writes: list[pb.ReplicaWrite]) -> list[ReplicaAck]:
        """Apply one envelope of a home's writes (one disk write for all of them);
        returns the ack of each, in order."""
        revision = max(w.revision for w in writes)
        if revision > self.view.revision:
            try:
                await self.view.wait_for(lambda v: v.revision >= revision, 3.0)
            except TimeoutError:
                pass
        acks = [ACK_OK] * len(writes)
        taken: list[tuple[int, Batch]] = []
        # Objects whose write came from a node that is not their home here, nor one
        # this node (their home) still waits to fence: such a write is taken only on
        # top of the copy held, never by replacing the copy with the sender's.
        tentative: set[bytes] = set()
        for i, w in enumerate(writes):
            why_not, only_on_top = self._refusal(sender, w)
            if why_not:
                acks[i] = ReplicaAck(AckStatus.REFUSED, why_not)
            else:
                taken.append((i, wire.batch_from_pb(w)))
                if only_on_top:
                    tentative.add(w.object_id)
        committer = self.runtime.committer
        store = self.runtime.store
        try:
            applied = (await committer.run_exclusive(store.apply_replicas, [b for _, b in taken])
                       if taken else [])
        except Exception as exc:
            applied = [True] * len(taken)
            for i, _ in taken:
                acks[i] = ReplicaAck(AckStatus.FAILED,
                                     f"replica write failed: {type(exc).__name__}: {exc}")
        # This copy missed or diverged from the home's writes: take each such object
        # whole from the home, then apply its batches again.
        behind = [(i, b) for (i, b), ok in zip(taken, applied, strict=True) if not ok]
        for oid in dict.fromkeys(b.object_id for _, b in behind):
            mine = [(i, b) for i, b in behind if b.object_id == oid]
            if oid in tentative and store.object_version(oid):
                for i, _ in mine:
                    acks[i] = ReplicaAck(AckStatus.REFUSED, (
                        f"{sender} is not the object's home at revision "
                        f"{self.view.revision} of {self.node_id}, and this copy "
                        "is not at the write's base version"))
                continue
            try:
                items = await self._fetch(sender, oid)
                await committer.run_exclusive(store.replace_object, oid, items)
                again = await committer.run_exclusive(store.apply_replicas, [b for _, b in mine])
                self.repaired += 1
            except Exception as exc:
                again = [False] * len(mine)
                why = f"repair failed: {type(exc).__name__}: {exc}"
            else:
                why = "still behind the home after taking the object whole"
            for (i, _), ok in zip(mine, again, strict=True):
                if not ok:
                    acks[i] = ReplicaAck(AckStatus.FAILED, why)
        not_taken = sum(1 for a in acks if not a.ok)
        self.refused += not_taken
        self.applied += len(writes) - not_taken
        return acks

    def _refusal(self, sender: str, w: pb.ReplicaWrite) -> tuple[str, bool]:
        """Why this node does not take the write now ("" if it does), and whether it
        takes it only on top of the copy it holds."""
        home, _ = home_of(self.view, w.object_id)
        only_on_top = False
        if home != sender:
            if home == self.node_id:
                # This node is home but does not run the object before it has fenced
                # the sender: what the sender admitted before commits here first.
                refused = not self.ownership.finishing_elsewhere(sender, w.object_id)
            else:
                # The sender may be a previous home finishing what it admitted (this
                # node may see the move before the sender does, or than the new home
                # fences it). Its write is taken only on top of this copy: once the
                # new home wrote, the versions no longer line up.
                refused = sender not in self.view.members
                only_on_top = True
            if refused:
                return (f"{sender} is not the object's home at revision {self.view.revision} "
                        f"of {self.node_id} (home: {home})"), False
        host = self.runtime.hosts.get(w.object_id)
        if host is not None:
            if not host.idle:
                return "the object is active on the replica", False
            self.runtime.evict(w.object_id)  # its cache would be stale
        # So would what this node knew of its sockets (from a stint as its home).
        self.runtime.sockets.forget_object(w.object_id)
        return "", only_on_top

    async def _fetch(self, node: str, object_id: bytes) -> list[tuple[bytes, bytes]]:
        address = self.view.address_of(node)
        async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
            chunk = await pb_grpc.NodeStub(channel).FetchObject(
                pb.FetchObjectRequest(object_id=object_id, revision=self.view.revision),
                timeout=REPLICA_TIMEOUT,
            )
        return [(kv.key, kv.value) for kv in chunk.items]


class Catchup:
    """After a new lease: pull from each peer before being home for shared objects."""

    def __init__(
        self,
        node_id: str,
        view: MembershipView,
        runtime: Runtime,
        publish: Callable[[frozenset[str]], Awaitable[int]],
        ownership: RingOwnership,
    ) -> None:
        self.node_id = node_id
        self.view = view
        self.runtime = runtime
        self._publish_fn = publish
        # Peers waited on are fenced once this node waits on no one (see ``_fence``).
        self.ownership = ownership
        self._fencing: asyncio.Task[None] | None = None
        # One publish at a time, each of the latest state: two in flight could land in
        # etcd out of order and leave a stale waiting list there for good.
        self._publishing = asyncio.Lock()
        self._publishers: set[asyncio.Task[int]] = set()
        self.waiting: set[str] = set()
        self._ring: Ring | None = None
        # Pulls ask peers to catch up at least to the revision of this node's live key
        # (None until ``start``: no pull before peers can see this node live).
        self._min_revision: int | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.keys_pulled = 0

    def initial_waiting(self) -> frozenset[str]:
        if self.view.replicas <= 1:
            return frozenset()
        return frozenset(n for n in self.view.members if n != self.node_id)

    def begin(self, waiting: frozenset[str]) -> None:
        """A new lease: wait on ``waiting`` (pulls start with ``start``)."""
        for task in self._tasks.values():
            task.cancel()
        self._tasks.clear()
        if self._fencing is not None:
            self._fencing.cancel()
            self._fencing = None
        self._min_revision = None
        self.waiting = set(waiting)
        self.ownership.unfenced.clear()
        self.ownership.unfenced.update(waiting)
        self._ring = self.view.ring

    def start(self, live_revision: int) -> None:
        """Pull from every peer waited on, now that the live key is at ``live_revision``."""
        self._min_revision = live_revision
        self._wait_on(set(self.waiting))

    def _wait_on(self, peers: Iterable[str]) -> None:
        for peer in peers:
            self.waiting.add(peer)
            self.ownership.unfenced.add(peer)
            if peer not in self._tasks and self._min_revision is not None:
                self._tasks[peer] = asyncio.get_running_loop().create_task(self._sync(peer))

    def on_view(self, view: MembershipView) -> None:
        changed = False
        gone = {p for p in self.waiting if p not in view.members}
        if gone:
            self.waiting -= gone
            for p in gone:
                task = self._tasks.pop(p, None)
                if task is not None:
                    task.cancel()
            changed = True
        for p in [p for p in self.ownership.unfenced if p not in view.members]:
            self.ownership.fenced_peer(p)
        old, new = self._ring, view.ring
        if old is not None and new is not old and view.replicas > 1:
            self._ring = new
            # Where this node newly keeps a copy, it has none yet: it waits on the
            # node that held those objects first until it has pulled them.
            sources = self._new_copy_sources(old, new, view.replicas) - self.waiting
            if sources:
                log.info("membership change: catching up new copies from %s", sorted(sources))
                self._wait_on(sources)
                changed = True
        if changed:
            self._spawn_publish()

    def _new_copy_sources(self, old: Ring, new: Ring, replicas: int) -> set[str]:
        sources: set[str] = set()
        if not old.members:
            return sources
        # Cut at both rings' boundaries, so each piece has one list in each ring.
        cuts = sorted({s for s, _ in new.arcs()} | {s for s, _ in old.arcs()})
        for start in cuts:
            if self.node_id not in new.preference_list(start, replicas):
                continue
            before = old.preference_list(start, replicas)
            if before and self.node_id not in before:
                sources.add(before[0])
        sources.discard(self.node_id)
        return {s for s in sources if s in new.members}

    def _spawn_publish(self) -> None:
        task = asyncio.get_running_loop().create_task(self._publish())
        self._publishers.add(task)
        task.add_done_callback(self._publishers.discard)

    async def publish(self) -> int:
        """Write the current waiting list (one writer at a time, always the latest);
        returns the etcd revision of the write."""
        async with self._publishing:
            return await self._publish_fn(frozenset(self.waiting))

    async def _publish(self) -> int:
        try:
            return await self.publish()
        except Exception as exc:
            log.warning("cannot publish catch-up progress: %r", exc)
            return 0

    async def _sync(self, peer: str) -> None:
        async def attempt() -> int:
            await self.view.wait_for(lambda v: peer in v.live, timeout=30.0)
            ranges = self.view.ring.replica_ranges(self.node_id, self.view.replicas)
            return await self._pull(peer, ranges, self._min_revision or 0)

        count = await until_done(attempt, what=f"catch-up from {peer}", log=log,
                                 level=logging.INFO)
        self.keys_pulled += count
        self.waiting.discard(peer)
        self._tasks.pop(peer, None)
        log.info("caught up from %s (%d keys); still waiting on %s", peer, count,
                 sorted(self.waiting) or "none")
        await self._publish()
        if not self.waiting and self._fencing is None:
            self._fencing = asyncio.get_running_loop().create_task(self._fence())

    async def _fence(self) -> None:
        """Fence every peer waited on, at a revision where this node waits on no one.

        Only from there on is this node home where it comes first; a peer that was
        home meanwhile learns it from the pull (it catches up to ``revision`` first),
        lets the events it admitted finish (their writes reach this node as a
        replica's), and only then answers. Fenced earlier, one peer at a time, a peer
        could still be home for objects that need a later peer's catch-up too.
        """
        async def fence(peer: str, revision: int) -> None:
            async def attempt() -> int:
                # Where this node is home is read at the revision it stopped waiting.
                await self.view.wait_for(lambda v: v.revision >= revision, timeout=10.0)
                view = self.view
                if peer not in view.live or peer not in view.members:
                    return 0  # a node that is not live runs nothing
                ranges = home_ranges(view, self.node_id)
                return await self._pull(peer, ranges, view.revision)

            count = await until_done(attempt, what=f"fencing {peer}", log=log,
                                     level=logging.INFO)
            self.ownership.fenced_peer(peer)
            log.info("fenced %s at revision %d (%d keys)", peer, revision, count)

        try:
            # Peers added meanwhile (a membership change) are fenced once caught up
            # (by the fence that follows the last catch-up, if it starts after this).
            while not self.waiting and (todo := set(self.ownership.unfenced)):
                # The list is written again, empty: a publish in flight when the last
                # wait ended may have carried an older one, and where this node is
                # home must be read at a revision that has it empty.
                revision = await self._publish()
                await asyncio.gather(*(fence(p, revision) for p in sorted(todo)))
            # Alarms that came due meanwhile were left to the previous home: take them up.
            await self.runtime.alarms.load()
        finally:
            self._fencing = None

    async def _pull(self, peer: str, ranges: list[tuple[int, int]], revision: int) -> int:
        if not ranges:
            return 0
        request = pb.PullRequest(
            node_id=self.node_id, revision=max(self.view.revision, revision),
            sync=True,
            ranges=[pb.Range(start=s, end=e % KEYSPACE) for s, e in ranges],
        )
        committer = self.runtime.committer
        store = self.runtime.store
        count = 0
        address = self.view.address_of(peer)
        async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
            async for chunk in pb_grpc.NodeStub(channel).Pull(request, timeout=300):
                items = [(kv.key, kv.value) for kv in chunk.items]
                replaced = await committer.run_exclusive(store.ingest, items)
                for oid in replaced:
                    self.runtime.evict(oid)
                    self.runtime.sockets.forget_object(oid)
                count += len(items)
        await self.runtime.alarms.load()
        return count

    async def stop(self) -> None:
        tasks = [*self._tasks.values(), *self._publishers,
                 *([self._fencing] if self._fencing is not None else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
