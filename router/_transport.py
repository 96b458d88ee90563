"""Routes each invocation (and socket frame) to its object's home node over that node's stream."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from abode.cluster.errors import Unavailable
from abode.cluster.invocation import Invocation, Outcome
from abode.cluster.peer import FrameHandler, PeerClient
from abode.cluster.placement import Placement
from abode.cluster.sockets import Frame

# How long a stream to a node that left stays open for the answers of its calls in
# flight; a little over the default call timeout, after which they fail anyway.
RETIRE_SECONDS = 35.0


class RouterTransport:
    def __init__(
        self,
        placement: Placement,
        *,
        router_id: str = "",
        on_frames: FrameHandler | None = None,
        on_lost: Callable[[str], None] | None = None,
    ) -> None:
        self._placement = placement
        self._router_id = router_id
        self.on_frames = on_frames
        self.on_lost = on_lost
        self._peers: dict[str, PeerClient] = {}
        # Streams to nodes that went away, kept until their calls in flight are answered.
        self._retiring: dict[str, tuple[PeerClient, asyncio.Task[None]]] = {}
        self.retry_budget = 3.0
        self.retries = 0

    def peer(self, address: str) -> PeerClient:
        peer = self._peers.get(address)
        if peer is None and address in self._retiring:
            # The node came back (its lease lapsed and was renewed): keep its stream.
            peer, task = self._retiring.pop(address)
            task.cancel()
            self._peers[address] = peer
        if peer is None:
            peer = self._peers[address] = PeerClient(
                address,
                router_id=self._router_id,
                on_frames=self._frames,
                on_lost=self._lost,
            )
        return peer

    def _frames(self, address: str, frames: list[Frame]) -> None:
        if self.on_frames is not None:
            self.on_frames(address, frames)

    def _lost(self, address: str) -> None:
        if self.on_lost is not None:
            self.on_lost(address)

    def take_unsent_frames(self, address: str) -> list[Frame]:
        """Frames queued for the node at `address` and not sent (its stream broke)."""
        peer = self._peers.get(address)
        return peer.take_frames() if peer is not None else []

    def home_address(self, object_id: bytes) -> str:
        return self._placement.home(object_id)[0]

    async def invoke(self, inv: Invocation) -> Outcome:
        # A refusal means the call never ran (no home right now, node starting or
        # fenced, object moving): retry with a fresh view, within a bounded budget.
        # Nothing that may have run is retried.
        deadline = time.monotonic() + min(self.retry_budget, inv.timeout)
        delay = 0.05
        while True:
            try:
                address, revision = self._placement.home(inv.object_id)
                inv.revision = revision
                inv.hops = 0
                return await self.peer(address).invoke(inv)
            except Unavailable:
                if time.monotonic() + delay > deadline:
                    raise
                self.retries += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)

    def send_frame(self, frame: Frame) -> str:
        """Send a client's frame to the home of its object; returns that node's address."""
        address, revision = self._placement.home(frame.object_id)
        frame.revision = revision
        self.peer(address).send_frame(frame)
        return address

    async def retain(self, addresses: set[str]) -> None:
        """Close the streams to nodes that are gone (no longer live at those addresses).

        A stream with calls in flight closes once they are answered (bounded): a node
        whose lease only lapsed still answers them, and cutting its stream would turn
        each into a 502 (the call may have run) instead of its real outcome.
        """
        for address in [a for a in self._peers if a not in addresses]:
            peer = self._peers.pop(address, None)
            if peer is None:  # closed meanwhile
                continue
            if not peer.in_flight:
                await peer.close(flush_timeout=0)
            elif address not in self._retiring:
                task = asyncio.get_running_loop().create_task(self._retire(address, peer))
                self._retiring[address] = (peer, task)

    async def _retire(self, address: str, peer: PeerClient) -> None:
        deadline = time.monotonic() + RETIRE_SECONDS
        while peer.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self._retiring.get(address, (None,))[0] is peer:
            del self._retiring[address]
        await peer.close(flush_timeout=0)

    async def close(self) -> None:
        while self._retiring:
            peer, task = self._retiring.popitem()[1]
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await peer.close(flush_timeout=0)
        # Pop as we go: a membership listener may add or drop peers while we await.
        while self._peers:
            await self._peers.popitem()[1].close()
