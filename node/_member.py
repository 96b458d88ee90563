"""A node as a cluster member: etcd membership, its lease, ring ownership and handoff.

Start: open storage and listen (refusing calls) -> register membership -> take a
lease and publish liveness -> follow membership -> own by the ring, pull what moved.
Stop (SIGTERM is a restart, not a departure): stop admitting, finish in-flight
events, flush, revoke the lease so homes move at once, close storage.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from abode.cluster.app import App
from abode.cluster.crashes import CrashDetector
from abode.cluster.membership import EtcdSession, Lease, MembershipView
from abode.cluster.retry import until_done
from abode.cluster.ring import Member
from abode.node._handoff import Handoff
from abode.node._ownership import Decision, Ownership, RingOwnership
from abode.node._replication import Catchup, ReplicaSink, Replicator
from abode.node._server import NodeConfig, NodeServer
from abode.node._store import Batch

log = logging.getLogger(__name__)


class _NotReady(Ownership):
    """Until the node knows the ring it executes nothing."""

    def decide(self, object_id: bytes) -> tuple[Decision, str]:
        return Decision.REFUSE, "node is starting"

    def owns(self, object_id: bytes) -> bool:
        return False

    def ticket(self) -> object:
        return None  # no lease yet: nothing begun now may commit


@dataclass(frozen=True, slots=True)
class MemberConfig:
    advertise: str = ""
    weight: int = 100
    fencing_margin: float = 0.5
    # Copies of each object; the first node to start sets it for the cluster.
    replicas: int = 1


class ClusterNode:
    def __init__(
        self, app: App, config: NodeConfig, member: MemberConfig, session: EtcdSession
    ) -> None:
        self.config = config
        self.member = member
        self.session = session
        # Peers this node replicates to break their streams when they crash.
        self.crashes = CrashDetector(session)
        self.server = NodeServer(app, config, _NotReady(), on_peer_lost=self.crashes.suspect)
        self.lease: Lease | None = None
        self.view: MembershipView | None = None
        self.ownership: RingOwnership | None = None
        self.handoff: Handoff | None = None
        self.catchup: Catchup | None = None
        self.replicator: Replicator | None = None
        self._started_ms = int(time.time() * 1000)
        self._supervisor: asyncio.Task[None] | None = None
        self._stopped = False
        self._fenced = False

    @property
    def node_id(self) -> str:
        return self.config.node_id

    @property
    def address(self) -> str:
        return self.member.advertise or self.server.address

    async def start(self) -> None:
        await self.server.start()
        runtime = self.server.runtime
        assert runtime is not None and self.server.dispatcher is not None
        await self.session.register_member(Member(self.node_id, self.address, self.member.weight))
        replicas = await self.session.ensure_config("replicas", self.member.replicas)
        if replicas != self.member.replicas:
            log.warning("cluster keeps %s copies of each object (set when it was created); "
                        "--replicas %d is ignored", replicas, self.member.replicas)
        self.view = view = await MembershipView.start(self.session)
        self.ownership = RingOwnership(self.node_id, view, self._fresh, lease=lambda: self.lease,
                                       commit_margin=self.member.fencing_margin / 2)
        self.handoff = Handoff(runtime, view, self.ownership)
        self.replicator = Replicator(self.node_id, view, self.server.peers)
        self.catchup = Catchup(self.node_id, view, runtime, self._publish_live)
        runtime.owns = self.ownership.owns
        runtime.refusal = self._refusal
        runtime.fencing = self.ownership
        runtime.store.term = lambda: view.revision  # versions outrank older homes'
        runtime.committer.fence = self._commit_fence
        runtime.committer.replicate = self.replicator.replicate
        assert self.server.service is not None
        self.server.service.handoff = self.handoff
        self.server.service.replicas = ReplicaSink(self.node_id, view, runtime, self.server.peers)
        catchup = self.catchup
        self.server.service.waiting = lambda: catchup.waiting
        self.server.dispatcher.ownership = self.ownership
        await self._go_live()
        view.add_listener(self.handoff.on_view)
        view.add_listener(self.catchup.on_view)
        runtime.sockets.hand_over = lambda: view.replicas > 1

        def reload_alarms(_: MembershipView) -> None:
            # Where this node just became home, the alarms its replicas kept are its own.
            runtime.alarms.load()

        view.add_listener(reload_alarms)
        self.handoff.start()
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise_lease())
        log.info("node %s ready at %s (membership revision %d)",
                 self.node_id, self.address, self.view.revision)

    async def _go_live(self) -> None:
        """Take a lease and publish liveness, waiting on every peer until caught up."""
        assert self.catchup is not None
        self.lease = await self.session.start_lease()
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
                                           started_ms=self._started_ms, waiting=waiting)

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

    def _refusal(self, object_id: bytes) -> str | None:
        """Whether a queued call may start now: not once this node fenced itself, nor
        after the object's home moved elsewhere (unless it still holds the object until
        its new owner pulls it)."""
        assert self.ownership is not None
        reason = self.ownership.fenced()
        if (reason is None and not self.ownership.owns(object_id)
                and not self.ownership.releasing_object(object_id)):
            reason = "the object's home moved to another node"
        return reason

    def _commit_fence(self, batch: Batch) -> str | None:
        assert self.ownership is not None
        return self.ownership.commit_refusal(batch.object_id, batch.ticket)

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
        assert self.handoff is not None
        await self.handoff.released.wait()

    async def stop(self, grace: float = 10.0) -> None:
        if self._stopped:
            return
        self._stopped = True
        log.info("node %s stopping: draining", self.node_id)
        runtime = self.server.runtime
        if runtime is not None:
            await runtime.drain(timeout=grace)
        # Homes move as soon as liveness is gone, not a TTL later.
        if self.lease is not None:
            await self.lease.revoke()
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
        await self.crashes.stop()
        if self.handoff is not None:
            await self.handoff.stop()
        if self.catchup is not None:
            await self.catchup.stop()
        if self.view is not None:
            await self.view.stop()
        await self.server.stop(grace=1.0)
        await self.session.close()
