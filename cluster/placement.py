"""Where an object lives: the answer routers and nodes ask before each call."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from abode.cluster.errors import Unavailable
from abode.cluster.ids import ring_position

if TYPE_CHECKING:
    from abode.cluster.membership import LiveNode, MembershipView


class Placement(Protocol):
    """Maps an object id to its home node's gRPC address, at a ring revision."""

    def home(self, object_id: bytes) -> tuple[str, int]: ...


class StaticPlacement:
    """One node holds every object (``abode dev``)."""

    def __init__(self, address: str) -> None:
        self.address = address

    def home(self, object_id: bytes) -> tuple[str, int]:
        return self.address, 0


def home_of(view: MembershipView, object_id: bytes) -> tuple[str | None, list[str]]:
    """The object's home node id (None if no copy may serve now) and its preference list.

    The home is the first node of the preference list that is live and has caught up
    from every other node of the list (it waits on none of them): only such a node
    is sure to hold every acknowledged write. With one replica that is simply the
    ring owner, if live.
    """
    ring = view.ring
    if not ring.members:
        return None, []
    prefs = ring.preference_list(ring_position(object_id), view.replicas)
    return pick_home(prefs, view.live_nodes), prefs


def pick_home(prefs: list[str], live_nodes: Mapping[str, LiveNode]) -> str | None:
    """The home among a preference list, given the live keys (see ``home_of``)."""
    for node_id in prefs:
        live = live_nodes.get(node_id)
        if live is None:
            continue
        if live.waiting and not live.waiting.isdisjoint(prefs):
            continue
        return node_id
    return None


def home_ranges(view: MembershipView, node_id: str) -> list[tuple[int, int]]:
    """Half-open position ranges whose objects have ``node_id`` as home now, merged."""
    ring, replicas, live = view.ring, view.replicas, view.live_nodes
    result: list[tuple[int, int]] = []
    for start, end in ring.arcs():  # within an arc every position has one list
        if pick_home(ring.preference_list(start, replicas), live) != node_id:
            continue
        if result and result[-1][1] == start:
            result[-1] = (result[-1][0], end)
        else:
            result.append((start, end))
    return result


def unavailable(prefs: list[str]) -> Unavailable:
    if not prefs:
        return Unavailable("the cluster has no nodes yet", retry_after=1.0)
    if len(prefs) == 1:
        return Unavailable(f"the object's home node {prefs[0]} is down", retry_after=1.0)
    return Unavailable(
        f"no live, caught-up copy of the object right now (nodes {', '.join(prefs)})",
        retry_after=1.0,
    )


class RingPlacement:
    """The object's home from the consistent-hash ring and liveness in etcd.

    A dead home means the object is unavailable (503, retry later) until a node that
    holds every acknowledged write can serve it: never from an empty store.
    """

    def __init__(self, view: MembershipView) -> None:
        self.view = view

    def home(self, object_id: bytes) -> tuple[str, int]:
        view = self.view
        home, prefs = home_of(view, object_id)
        if home is None:
            raise unavailable(prefs)
        return view.address_of(home), view.revision
