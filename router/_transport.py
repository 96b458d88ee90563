"""Routes each invocation (and socket frame) to its object's home node over that node's stream."""

from __future__ import annotations

from collections.abc import Callable

from cluster.invocation import Invocation, Outcome
from cluster.peer import FrameHandler, PeerClient
from cluster.placement import Placement
from cluster.sockets import Frame


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

    def peer(self, address: str) -> PeerClient:
        peer = self._peers.get(address)
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

    def home_address(self, object_id: bytes) -> str:
        return self._placement.home(object_id)[0]

    async def invoke(self, inv: Invocation) -> Outcome:
        address, revision = self._placement.home(inv.object_id)
        inv.revision = revision
        return await self.peer(address).invoke(inv)

    def send_frame(self, frame: Frame) -> str:
        """Send a client's frame to the home of its object; returns that node's address."""
        address, revision = self._placement.home(frame.object_id)
        frame.revision = revision
        self.peer(address).send_frame(frame)
        return address

    async def close(self) -> None:
        for peer in self._peers.values():
            await peer.close()
        self._peers.clear()
