"""Routes each invocation to its object's home node over that node's stream."""

from __future__ import annotations

from cluster.invocation import Invocation, Outcome
from cluster.peer import PeerClient
from cluster.placement import Placement


class RouterTransport:
    def __init__(self, placement: Placement) -> None:
        self._placement = placement
        self._peers: dict[str, PeerClient] = {}

    def peer(self, address: str) -> PeerClient:
        peer = self._peers.get(address)
        if peer is None:
            peer = self._peers[address] = PeerClient(address)
        return peer

    async def invoke(self, inv: Invocation) -> Outcome:
        address, revision = self._placement.home(inv.object_id)
        inv.revision = revision
        return await self.peer(address).invoke(inv)

    async def close(self) -> None:
        for peer in self._peers.values():
            await peer.close()
        self._peers.clear()
