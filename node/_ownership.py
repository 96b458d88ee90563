"""Whether this node executes an object now, forwards it, makes it wait, or refuses.

With one node (``abode dev``) every object is local. In a cluster the answer comes
from the ring at the node's current membership revision: the owner executes if its
lease is fresh (self-fencing) and the object's range is not still being pulled in
a handoff; anyone else forwards to a live owner; a dead owner means 503 (with one
replica there is no other copy to serve from).

Fencing tickets: an object instance takes a ticket when it activates (the lease the
node holds then); its events' writes commit, and their outputs leave, only while that
same lease is still fresh, and once it lapsed a fresh instance (reading storage
again) takes over. Checking the node's *current* lease is not enough: after a pause
longer than the TTL (SIGSTOP, a VM stall) the node may already hold a new lease, and
be home again, when an event that started under the old one ends, or when an event
queued meanwhile runs on a cache from before, while another node was home in between
and changed the object. A lease, once lapsed, never turns fresh again, so a ticket is
the lease's deadline as of the activation, moved on only by renewals of that lease.
"""

from __future__ import annotations

import asyncio
import bisect
import enum
from collections.abc import Callable, Iterable

from abode.cluster.ids import ring_position
from abode.cluster.membership import Lease, MembershipView
from abode.cluster.placement import home_of, unavailable

_UNFENCED = object()  # one node, no leases: the ticket of `abode dev`


class Decision(enum.Enum):
    LOCAL = "local"
    FORWARD = "forward"
    WAIT = "wait"
    REFUSE = "refuse"


class Ownership:
    """Interface; the single-node answer: everything is local."""

    @property
    def revision(self) -> int:
        return 0

    def decide(self, object_id: bytes) -> tuple[Decision, str]:
        return Decision.LOCAL, ""

    def owns(self, object_id: bytes) -> bool:
        return True

    def fenced(self) -> str | None:
        """Why commits must be refused right now, or None."""
        return None

    def ticket(self) -> object:
        """What an instance holds from its activation: its commits are checked against it."""
        return _UNFENCED

    def lapsed(self, ticket: object) -> str | None:
        """Why work begun under `ticket` may no longer commit or answer, or None."""
        return None if ticket is _UNFENCED else "the event has no fencing ticket"

    def commit_refusal(self, object_id: bytes, ticket: object) -> str | None:
        """Why a batch of `object_id` taken under `ticket` must not be committed."""
        return self.lapsed(ticket)

    async def caught_up(self, revision: int, timeout: float) -> bool:
        return True

    async def ready(self, object_id: bytes, timeout: float) -> bool:
        return True


class RangeSet:
    """Disjoint half-open position ranges (end 0 means 2^64), with membership tests."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._changed = asyncio.Event()

    def add(self, ranges: Iterable[tuple[int, int]]) -> None:
        for start, end in ranges:
            i = bisect.bisect_left(self._starts, start)
            self._starts.insert(i, start)
            self._ends.insert(i, end or 1 << 64)

    def remove(self, ranges: Iterable[tuple[int, int]]) -> None:
        for start, end in ranges:
            i = bisect.bisect_left(self._starts, start)
            if i < len(self._starts) and self._starts[i] == start and self._ends[i] == (end or 1 << 64):
                del self._starts[i]
                del self._ends[i]
        self._changed.set()
        self._changed = asyncio.Event()

    def contains(self, position: int) -> bool:
        i = bisect.bisect_right(self._starts, position) - 1
        return i >= 0 and position < self._ends[i]

    def overlaps(self, start: int, end: int) -> bool:
        end = end or 1 << 64
        i = bisect.bisect_left(self._ends, start + 1)
        return i < len(self._starts) and self._starts[i] < end

    async def wait_changed(self, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                await self._changed.wait()
        except TimeoutError:
            pass

    def __len__(self) -> int:
        return len(self._starts)


class PositionSet:
    """A set of ring positions kept as sorted, disjoint, merged half-open spans.

    Unlike `RangeSet`, any span may be taken out of it, whatever spans were put in.
    """

    def __init__(self) -> None:
        self._spans: list[tuple[int, int]] = []

    def add(self, ranges: Iterable[tuple[int, int]]) -> None:
        spans = sorted([*self._spans, *((s, e or 1 << 64) for s, e in ranges)])
        merged: list[tuple[int, int]] = []
        for start, end in spans:
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], end))
            else:
                merged.append((start, end))
        self._spans = merged

    def discard(self, ranges: Iterable[tuple[int, int]]) -> None:
        # One sweep over both sorted lists: a handoff cuts hundreds of ranges at once.
        cuts = sorted((s, e or 1 << 64) for s, e in ranges)
        kept: list[tuple[int, int]] = []
        j = 0
        for start, end in self._spans:
            while j < len(cuts) and cuts[j][1] <= start:
                j += 1
            cursor = start
            k = j
            while k < len(cuts) and cuts[k][0] < end:
                if cuts[k][0] > cursor:
                    kept.append((cursor, cuts[k][0]))
                cursor = max(cursor, cuts[k][1])
                k += 1
            if cursor < end:
                kept.append((cursor, end))
        self._spans = kept

    def contains(self, position: int) -> bool:
        i = bisect.bisect_right(self._spans, (position, 1 << 65)) - 1
        return i >= 0 and position < self._spans[i][1]

    def __len__(self) -> int:
        return len(self._spans)


class RingOwnership(Ownership):
    def __init__(
        self, node_id: str, view: MembershipView, lease_fresh: Callable[[], bool], *,
        lease: Callable[[], Lease | None], commit_margin: float,
    ) -> None:
        self.node_id = node_id
        self.view = view
        self._lease_fresh = lease_fresh
        self._lease = lease
        # Commits keep less of a margin than admission: an event admitted just before
        # the node fenced itself may still commit, yet always before etcd could
        # expire the lease (and another node could become home).
        self._commit_margin = commit_margin
        # The lease this node last published its live key under, and that key's etcd
        # revision. Under a new lease the node is home only once its view has reached
        # that revision: then it shows what happened while the node was away (its old
        # key's deletion, the homes that took over, its own waiting list), not the
        # world as it was before a pause.
        self._published: tuple[Lease | None, int] = (None, 0)
        self.pending = RangeSet()  # ranges this node is pulling: requests wait
        # Ranges that moved away from this node but whose new owner has not pulled them
        # yet: this node still holds their only copy, so events it admitted before the
        # change may finish and commit. Serving the pull takes them out (after quiesce).
        self.releasing = PositionSet()

    @property
    def revision(self) -> int:
        return self.view.revision

    def owner_of(self, object_id: bytes) -> str | None:
        return home_of(self.view, object_id)[0]

    def owns(self, object_id: bytes) -> bool:
        return self.owner_of(object_id) == self.node_id

    def decide(self, object_id: bytes) -> tuple[Decision, str]:
        owner, prefs = home_of(self.view, object_id)
        if owner is None:
            return Decision.REFUSE, unavailable(prefs).message
        if owner == self.node_id:
            if not self._lease_fresh():
                return Decision.REFUSE, f"node {self.node_id} is fenced (its lease is not fresh)"
            if (why := self._rejoining(self._lease())) is not None:
                return Decision.REFUSE, why
            if len(self.pending) and self.pending.contains(ring_position(object_id)):
                return Decision.WAIT, "object is moving to this node"
            return Decision.LOCAL, ""
        return Decision.FORWARD, self.view.address_of(owner)

    def published(self, lease: Lease, revision: int) -> None:
        """This node's live key is written under `lease`, at etcd `revision`."""
        self._published = (lease, revision)

    def _rejoining(self, lease: object) -> str | None:
        published, revision = self._published
        if published is None or lease is not published:
            return f"node {self.node_id} has not published its liveness under this lease"
        if self.view.revision < revision:
            return f"node {self.node_id} is rejoining: its view is behind its own live key"
        return None

    def releasing_object(self, object_id: bytes) -> bool:
        """Whether the object moved away but this node still holds it (not yet pulled)."""
        return len(self.releasing) > 0 and self.releasing.contains(ring_position(object_id))

    def fenced(self) -> str | None:
        if not self._lease_fresh():
            return f"node {self.node_id} lost its lease"
        return self._rejoining(self._lease())

    def ticket(self) -> object:
        return self._lease()

    def lapsed(self, ticket: object) -> str | None:
        if not isinstance(ticket, Lease):
            return f"node {self.node_id} held no lease when the event started"
        if not ticket.fresh(self._commit_margin):
            return f"node {self.node_id} lost the lease the event started under"
        return self._rejoining(ticket)

    def commit_refusal(self, object_id: bytes, ticket: object) -> str | None:
        reason = self.lapsed(ticket)
        # An object whose range moved away commits until its new owner pulls it: the
        # pull waits for those commits and carries them along.
        if reason is None and not self.owns(object_id) and not self.releasing_object(object_id):
            reason = "the object moved to another node"
        return reason

    async def caught_up(self, revision: int, timeout: float) -> bool:
        try:
            await self.view.wait_for(lambda v: v.revision >= revision, timeout)
        except TimeoutError:
            return False
        return True

    async def ready(self, object_id: bytes, timeout: float) -> bool:
        position = ring_position(object_id)
        deadline = asyncio.get_running_loop().time() + timeout
        while self.pending.contains(position):
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return False
            await self.pending.wait_changed(remaining)
        return True
