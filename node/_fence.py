"""What the runtime asks before it runs or commits an object's events.

The runtime, its store and its committer are built with a ``Fence`` and never run
without one: a cluster member passes its ring ownership and lease (``node._member``),
``abode dev`` and ``abode.testing`` pass ``StaticFence`` (one node, every object
local) explicitly. There is no default: a fence that was forgotten must fail at
construction, not run every object unfenced.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from abode.node._store import Batch


class Fence(Protocol):
    def owns(self, object_id: bytes) -> bool:
        """Whether this node is the object's home now (alarms, sockets)."""
        ...

    def refusal(self, object_id: bytes) -> str | None:
        """Why a queued call to the object must not start now, or None. Asked as each
        call starts: a mailbox may hold calls admitted before the node fenced itself."""
        ...

    def commit_refusal(self, batch: Batch) -> str | None:
        """Why the batch must not be made durable (its ticket lapsed, object moved), or
        None."""
        ...

    def ticket(self) -> object:
        """What an object instance takes when it activates: its events commit and
        answer only while ``lapsed`` finds nothing wrong with it (node._ownership)."""
        ...

    def lapsed(self, ticket: object) -> str | None:
        """Why work begun under ``ticket`` may no longer commit or answer, or None."""
        ...

    def term(self) -> int:
        """The term of new object versions: the writer's membership revision."""
        ...

    def hand_over_sockets(self) -> bool:
        """Whether a stopping node leaves its WebSockets to the objects' next homes."""
        ...


class StaticFence:
    """One node that is home for every object and never fenced (``abode dev``)."""

    def owns(self, object_id: bytes) -> bool:
        return True

    def refusal(self, object_id: bytes) -> str | None:
        return None

    def commit_refusal(self, batch: Batch) -> str | None:
        return None

    def ticket(self) -> object:
        return None

    def lapsed(self, ticket: object) -> str | None:
        return None

    def term(self) -> int:
        return 0

    def hand_over_sockets(self) -> bool:
        return False
