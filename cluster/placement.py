"""Where an object lives: the answer routers and nodes ask before each call."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from cluster.errors import Unavailable
from cluster.ids import ring_position

if TYPE_CHECKING:
    from cluster.membership import MembershipView


class Placement(Protocol):
    """Maps an object id to its home node's gRPC address, at a ring revision."""

    def home(self, object_id: bytes) -> tuple[str, int]: ...


class StaticPlacement:
    """One node holds every object (``abode dev``)."""

    def __init__(self, address: str) -> None:
        self.address = address

    def home(self, object_id: bytes) -> tuple[str, int]:
        return self.address, 0


class RingPlacement:
    """The object's home from the consistent-hash ring and liveness in etcd.

    With one replica the home is the ring owner, and a dead owner means the object is
    unavailable (503, retry later): it is never served from an empty store.
    """

    def __init__(self, view: MembershipView) -> None:
        self.view = view

    def home(self, object_id: bytes) -> tuple[str, int]:
        view = self.view
        ring = view.ring
        if not ring.members:
            raise Unavailable("the cluster has no nodes yet", retry_after=1.0)
        owner = ring.owner(ring_position(object_id))
        if owner not in view.live:
            raise Unavailable(f"the object's home node {owner} is down", retry_after=1.0)
        return view.address_of(owner), view.revision
