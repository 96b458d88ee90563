"""A node as a cluster member: etcd membership, its lease, ring ownership and handoff.

Start: read membership (the fence of everything below) -> open storage and listen
(refusing calls: no lease yet) -> register membership -> take a lease and publish
liveness -> follow membership -> own by the ring, pull what moved.
Stop (SIGTERM is a restart, not a departure): stop admitting, finish in-flight
events, flush, revoke the lease so homes move at once, close storage.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from abode.cluster.app import App
from abode.cluster.crashes import CrashDetector
from abode.cluster.membership import EtcdSession, Lease, MembershipView
from abode.cluster.retry import until_done
from abode.cluster.ring import Member
from abode.cluster.supervisor import Tasks
from abode.node._dispatch import PeerPool
from abode.node._handoff import Handoff
from abode.node._ownership import RingOwnership
from abode.node._replication import Catchup, ReplicaSink, Replicator
from abode.node._server import NodeConfig, NodeServer
from abode.node._store import Batch

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MemberConfig:
    advertise: str = ""
    weight: int = 100
    fencing_margin: float = 0.5
    # Copies of each object; the first node to start sets it for the cluster.
    replicas: int = 1
    # Seconds the membership watch may fail to reach etcd before the process exits
    # (its supervisor restarts it); None: retry for ever.
    etcd_give_up: float | None = 60.0


class ClusterNode:
    """A cluster member, and the fence its runtime asks (``node._fence.Fence``).

    ``ClusterNode.open`` reads the membership first, because everything else is
    fenced by it: ownership, the commit fence, the term of versions.
    """

    def __init__(
        self,
        app: App,
        config: NodeConfig,
        member: MemberConfig,
        session: EtcdSession,
        view: MembershipView,
        tasks: Tasks,
    ) -> None:
        self.config = config
        self.member = member
        self.session = session
        self.view = view
        self._tasks = tasks
        # Peers this node replicates to break their streams when they crash.
        self.crashes = CrashDetector(session)
        self.lease: Lease | None = None
        node_id = config.node_id
        # Until it holds a fresh lease this node is fenced: it executes nothing.
        self.ownership = RingOwnership(node_id, view, self._fresh, lease=lambda: self.lease,
                                       commit_margin=member.fencing_margin / 2)
        peers = PeerPool(node_id, self.crashes.suspect)
        self.replicator = Replicator(node_id, view, peers)
        # With one copy per object (fixed when the cluster was created) nothing replicates.
        replicate = self.replicator.replicate if view.replicas > 1 else None
        self.server = NodeServer(app, config, fence=self, ownership=self.ownership, peers=peers,
                                 replicate=replicate, tasks=tasks,
                                 storage_state=self._storage_state)
        runtime = self.server.runtime
        self.handoff = Handoff(runtime, view, self.ownership)
        self.catchup = Catchup(node_id, view, runtime, self._publish_live, self.ownership)
        self.replicas = ReplicaSink(node_id, view, runtime, peers, self.ownership)
        self._started_ms = int(time.time() * 1000)
        self._supervisor: asyncio.Task[None] | None = None
        self._unsubscribe: list[Callable[[], None]] = []
        self._stopped = False
        self._fenced = False
        self._disk_full = ""  # published in the live key, so routers' health says so
        self._disk_ok = asyncio.Event()
        self._disk_ok.set()

    @classmethod
    async def open(
        cls,
        app: App,
        config: NodeConfig,
        member: MemberConfig,
        session: EtcdSession,
        tasks: Tasks,
    ) -> ClusterNode:
        """Read the cluster's settings and membership, then build the node on them."""
        replicas = await session.ensure_config("replicas", member.replicas)
        if replicas != member.replicas:
            log.warning("cluster keeps %s copies of each object (set when it was created); "
                        "--replicas %d is ignored", replicas, member.replicas)
        view = await MembershipView.start(session, tasks=tasks, give_up_after=member.etcd_give_up)
        return cls(app, config, member, session, view, tasks)

    @property
    def node_id(self) -> str:
        return self.config.node_id

    @property
    def address(self) -> str:
        return self.member.advertise or self.server.address

    async def start(self, metrics_url: str = "") -> None:
        """Serve (refusing calls until live) -> register -> go live -> follow changes."""
        view = self.view
        await self.server.start(handoff=self.handoff, replicas=self.replicas,
                                waiting=lambda: self.catchup.waiting, metrics_url=metrics_url)
        me = Member(self.node_id, self.address, self.member.weight)
        await self.session.register_member(me)
        # The ring this node starts from includes itself.
        await view.wait_for(lambda v: v.members.get(self.node_id) == me, timeout=30.0)
        await self._go_live()
        runtime = self.server.runtime

        async def reload_alarms(_: MembershipView) -> None:
            # Where this node just became home, the alarms its replicas kept are its own.
            if not self._stopped:  # (a stopping node's commit thread is closing)
                await runtime.alarms.load()

        self._unsubscribe = [view.add_listener(self.handoff.on_view),
                             view.add_listener(self.catchup.on_view),
                             view.add_listener(reload_alarms)]
        self.handoff.start()
        self._supervisor = self._tasks.start("lease-supervision", self._supervise_lease())
        log.info("node %s ready at %s (membership revision %d)",
                 self.node_id, self.address, view.revision)

    # -- the fence (node._fence.Fence) ------------------------------------------------
    def owns(self, object_id: bytes) -> bool:
        return self.ownership.owns(object_id)

    def term(self) -> int:
        return self.view.revision  # versions outrank older homes'

    def hand_over_sockets(self) -> bool:
        return self.view.replicas > 1

    async def _go_live(self) -> None:
        """Take a lease and publish liveness, waiting on every peer until caught up."""
        await self._disk_ok.wait()  # a node that cannot write stays out (see _storage_state)
        self.lease = await self.session.start_lease(tasks=self._tasks)
        # The waiting list is set before anything can publish with the new lease, and
        # published through the catch-up's one writer, so no older list lands later.
        self.catchup.begin(self.catchup.initial_waiting())
        live_revision = await self.catchup.publish()
        assert self.ownership is not None
        self.ownership.published(self.lease, live_revision)
        # Pulls start only now, at a revision where peers see this node live: from then
        # on they replicate to it, so nothing falls between a pull and replication.
        self.catchup.start(live_revision)

    async def _publish_live(self, waiting: frozenset[str]) -> int:
        if self.lease is None or self.lease.expired or self._stopped:
            return 0
        return await self.session.set_live(self.node_id, self.address, self.lease,
                                           started_ms=self._started_ms, waiting=waiting,
                                           disk_full=self._disk_full)

    def _storage_state(self, full: str | None) -> None:
        self._disk_full = full or ""
        if full is None:
            self._disk_ok.set()  # lease supervision takes a lease again and catches up
        else:
            self._disk_ok.clear()
        if self.lease is None or self.lease.expired:
            return
        if full is not None and self.view.replicas > 1:
            # Its copies elsewhere serve meanwhile: leaving liveness moves its objects
            # to their next homes and stops homes waiting for it as a replica. Once it
            # can write again it rejoins and catches up what it missed.
            log.warning("node %s leaves liveness until its disk has space again",
                        self.node_id)
            self.server.runtime.spawn(self.lease.revoke())
        else:
            self.server.runtime.spawn(self._republish())

    async def _republish(self) -> None:
        try:
            await self.catchup.publish()
        except Exception as exc:
            log.warning("cannot publish the disk's state: %r", exc)

    def _fresh(self) -> bool:
        fresh = self.lease is not None and self.lease.fresh(self.member.fencing_margin)
        if fresh == self._fenced:  # a transition: worth one line in the log
            self._fenced = not fresh
            if self._fenced and not self._stopped:
                log.warning("node %s fenced: its lease was not renewed in time; it executes "
                            "no object until it renews or rejoins", self.node_id)
            elif not self._fenced:
                log.info("node %s unfenced: lease renewed", self.node_id)
        return fresh

    def refusal(self, object_id: bytes) -> str | None:
        """Whether a queued call may start now: not once this node fenced itself, nor
        after the object's home moved elsewhere (unless it still holds the object until
        its new owner pulls it)."""
        reason = self.ownership.fenced()
        if (reason is None and not self.ownership.owns(object_id)
                and not self.ownership.releasing_object(object_id)):
            reason = "the object's home moved to another node"
        return reason

    def commit_refusal(self, batch: Batch) -> str | None:
        return self.ownership.commit_refusal(batch.object_id, batch.ticket)

    def ticket(self) -> object:
        return self.ownership.ticket()

    def lapsed(self, ticket: object) -> str | None:
        return self.ownership.lapsed(ticket)

    async def _supervise_lease(self) -> None:
        """A lease etcd expired (e.g. after a partition) is replaced, and liveness renewed."""
        while True:
            assert self.lease is not None
            await self.lease.wait_expired()
            if self._stopped:
                return
            log.warning("lease lost: node %s is fenced until it rejoins", self.node_id)
            # It may have missed writes while it was not live: _go_live catches up again.
            # (stop() cancels this task, which ends the retries.)
            await until_done(self._go_live, what="renewing liveness", log=log,
                             first_delay=0.2)
            log.info("node %s live again with a new lease", self.node_id)

    async def wait_removed(self) -> None:
        """Return once this node was removed and has handed every range off."""
        await self.handoff.released.wait()

    async def stop(self, grace: float = 10.0) -> None:
        """Drain, flush, revoke the lease, stop following, close. Safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        log.info("node %s stopping: draining", self.node_id)
        await self.server.runtime.drain(timeout=grace)
        # Homes move as soon as liveness is gone, not a TTL later.
        if self.lease is not None:
            await self.lease.revoke()
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.wait([self._supervisor])
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        await self.crashes.stop()
        await self.handoff.stop()
        await self.catchup.stop()
        await self.view.stop()
        await self.server.stop(grace=1.0)
        await self.session.close()
