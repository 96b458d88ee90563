"""Every call that reaches a node passes here: run it, forward it once, or refuse it.

A call routed with a newer membership revision than the node's makes the node catch
up first. A node that is not home forwards the call once to the home; a call that
was already forwarded and still lands on a non-home is refused (503, never ran), so
the router retries with a fresh view rather than the call bouncing around.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from abode.cluster.errors import AbodeError, CallTimeout, Unavailable
from abode.cluster.invocation import Invocation, Outcome
from abode.cluster.peer import PeerClient
from abode.node._host import Reply
from abode.node._ownership import Decision, Ownership
from abode.node._runtime import Runtime

log = logging.getLogger(__name__)

MAX_HOPS = 1
CATCH_UP_SECONDS = 3.0
HANDOFF_WAIT_SECONDS = 10.0


class PeerPool:
    """One stream per peer node, opened on first use."""

    def __init__(self, node_id: str = "", on_lost: Callable[[str], None] | None = None) -> None:
        self._node_id = node_id  # names this node to peers (the sender of replica writes)
        self._on_lost = on_lost  # a peer's stream broke (crash detection)
        self._peers: dict[str, PeerClient] = {}

    def get(self, address: str) -> PeerClient:
        peer = self._peers.get(address)
        if peer is None:
            peer = self._peers[address] = PeerClient(
                address, node_id=self._node_id, on_lost=self._on_lost)
        return peer

    async def close(self) -> None:
        for peer in self._peers.values():
            await peer.close()
        self._peers.clear()


class Dispatcher:
    def __init__(self, runtime: Runtime, ownership: Ownership, peers: PeerPool) -> None:
        self.runtime = runtime
        self.ownership = ownership
        self.peers = peers
        self.forwards = 0

    def submit(self, inv: Invocation, reply: Reply, *, waited: bool = False) -> None:
        own = self.ownership
        if inv.revision > own.revision and not waited:
            self.runtime.spawn(self._after(inv, reply, own.caught_up(inv.revision, CATCH_UP_SECONDS)))
            return
        decision, detail = own.decide(inv.object_id)
        if decision is Decision.LOCAL:
            self.runtime.submit(inv, reply)
        elif decision is Decision.FORWARD:
            if inv.hops >= MAX_HOPS:
                reply(Unavailable(f"routed to a node that is not the object's home ({detail})"))
                return
            inv.hops += 1
            inv.revision = max(inv.revision, own.revision)
            self.forwards += 1
            self.runtime.spawn(self._forward(detail, inv, reply))
        elif decision is Decision.WAIT and not waited:
            self.runtime.spawn(
                self._after(inv, reply, own.ready(inv.object_id, HANDOFF_WAIT_SECONDS))
            )
        else:
            reply(Unavailable(detail or "object is not available here yet", retry_after=1.0))

    async def _after(self, inv: Invocation, reply: Reply, waiting: Any) -> None:
        await waiting
        self.submit(inv, reply, waited=True)

    async def _forward(self, address: str, inv: Invocation, reply: Reply) -> None:
        try:
            reply(await self.peers.get(address).invoke(inv))
        except AbodeError as exc:
            reply(exc)

    async def invoke(self, inv: Invocation) -> Outcome:
        """Calls from objects on this node (their ``env``)."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def reply(outcome: Any) -> None:
            if not fut.done():
                fut.set_result(outcome)

        self.submit(inv, reply)
        try:
            async with asyncio.timeout(inv.timeout + 1.0):
                outcome = await fut
        except TimeoutError:
            raise CallTimeout(f"no answer within {inv.timeout:g} s") from None
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome  # type: ignore[no-any-return]
