"""Whether this node executes an object now, forwards it, makes it wait, or refuses.

With one node (``abode dev``) every object is local. In a cluster the answer comes
from the ring at the node's current membership revision: the owner executes if its
lease is fresh (self-fencing) and the object's range is not still being pulled in
a handoff; anyone else forwards to a live owner; a dead owner means 503 (with one
replica there is no other copy to serve from).

A planned change of home is an epoch change with two sides. The new home runs an
object only once it has fenced the previous home (a pull that makes it catch up to
the new revision and finish what it started); until then calls wait, and the writes
the previous home still commits are taken as a replica's. The previous home lets
the events it admitted finish and commit until that fence arrives: nothing that ran
under its epoch fails because the home moved.

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
from abode.cluster.membership import Lease, LiveNode, MembershipView
from abode.cluster.placement import home_of, pick_home, unavailable
from abode.cluster.ring import KEYSPACE, Ring


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

    def spans(self) -> list[tuple[int, int]]:
        """The set as sorted, disjoint half-open spans (end 2^64 for the last)."""
        return list(self._spans)

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
        # Peers that may still be finishing events of objects this node is now home
        # for (it caught up from them but has not fenced them since): those objects
        # wait here, and their writes from such a peer are taken as a replica's.
        self.unfenced: set[str] = set()
        # Where this node stopped being home while live, by the node now home there:
        # events it admitted may still commit until that node's fence reaches it.
        self._moved_away: dict[str, PositionSet] = {}
        self._seen: tuple[Ring, dict[str, LiveNode]] = (view.ring, dict(view.live_nodes))
        self._changed = asyncio.Event()
        view.add_listener(self._on_view)

    @property
    def revision(self) -> int:
        return self.view.revision

    def owner_of(self, object_id: bytes) -> str | None:
        return home_of(self.view, object_id)[0]

    def owns(self, object_id: bytes) -> bool:
        """Whether this node is the object's home and may run it (alarms, socket
        frames): not before it has fenced the previous home."""
        owner, prefs = home_of(self.view, object_id)
        return owner == self.node_id and not self._unfenced_in(prefs)

    def decide(self, object_id: bytes) -> tuple[Decision, str]:
        owner, prefs = home_of(self.view, object_id)
        if owner is None:
            return Decision.REFUSE, unavailable(prefs).message
        if owner == self.node_id:
            if not self._lease_fresh():
                return Decision.REFUSE, f"node {self.node_id} is fenced (its lease is not fresh)"
            if (why := self._rejoining(self._lease())) is not None:
                return Decision.REFUSE, why
            if self._arriving(object_id, prefs):
                return Decision.WAIT, "object is moving to this node"
            return Decision.LOCAL, ""
        return Decision.FORWARD, self.view.address_of(owner)

    def _arriving(self, object_id: bytes, prefs: list[str]) -> bool:
        """Whether this node, home of the object, may not run it yet: its range is
        still being pulled, or a previous home in its list is not fenced yet."""
        if len(self.pending) and self.pending.contains(ring_position(object_id)):
            return True
        return self._unfenced_in(prefs)

    def _unfenced_in(self, prefs: list[str]) -> bool:
        if not self.unfenced:
            return False
        live = self.view.live
        return any(p in self.unfenced and p in live for p in prefs if p != self.node_id)

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
        """Whether the object moved away but this node still finishes what it admitted
        (its new home has not pulled or fenced it yet)."""
        position = ring_position(object_id)
        if len(self.releasing) and self.releasing.contains(position):
            return True
        return any(spans.contains(position) for spans in self._moved_away.values())

    def finishing_elsewhere(self, sender: str, object_id: bytes) -> bool:
        """Whether ``sender`` may still be finishing events of an object this node is
        home for but does not run yet (it has not fenced ``sender`` for it)."""
        if sender in self.unfenced:
            return True
        return len(self.pending) > 0 and self.pending.contains(ring_position(object_id))

    def fenced_peer(self, peer: str) -> None:
        """``peer`` finished every event of objects this node is now home for."""
        self.unfenced.discard(peer)
        self._wake()

    def handed_over(self, node: str, ranges: Iterable[tuple[int, int]]) -> None:
        """``node`` fenced this node for ``ranges``: nothing of them commits here now."""
        spans = self._moved_away.get(node)
        if spans is not None:
            spans.discard(ranges)
            if not len(spans):
                del self._moved_away[node]

    def _on_view(self, view: MembershipView) -> None:
        ring, live = view.ring, dict(view.live_nodes)
        old_ring, old_live = self._seen
        self._seen = (ring, live)
        self._wake()
        for node in [n for n in self._moved_away if n not in live]:
            # A node that is gone fences nothing; nothing of it waits on this one.
            del self._moved_away[node]
        if (old_ring is ring and old_live == live) or not old_ring.members or not ring.members:
            return
        n = view.replicas
        # Cut at both rings' boundaries, so each piece has one list in each ring.
        cuts = sorted({s for s, _ in old_ring.arcs()} | {s for s, _ in ring.arcs()})
        moved: dict[str, list[tuple[int, int]]] = {}
        back: list[tuple[int, int]] = []
        for start, end in zip(cuts, [*cuts[1:], KEYSPACE], strict=True):
            before, after = old_ring.preference_list(start, n), ring.preference_list(start, n)
            if self.node_id not in before and self.node_id not in after:
                continue
            was = pick_home(before, old_live) == self.node_id
            now = pick_home(after, live)
            if was and now is not None and now != self.node_id:
                moved.setdefault(now, []).append((start, end))
            elif now == self.node_id and not was:
                back.append((start, end))
        for node, ranges in moved.items():
            self._moved_away.setdefault(node, PositionSet()).add(ranges)
        if back:
            # Home here again (say after this node's own lease lapsed): no one else
            # will fence it for those objects, and it needs no leave to commit them.
            for node in list(self._moved_away):
                self.handed_over(node, back)

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def fenced(self) -> str | None:
        if not self._lease_fresh():
            return f"node {self.node_id} lost its lease"
        return self._rejoining(self._lease())

    def ticket(self) -> object:
        """What an instance takes when it activates: the lease the node holds now."""
        return self._lease()

    def lapsed(self, ticket: object) -> str | None:
        """Why work begun under ``ticket`` may no longer commit or answer, or None."""
        if not isinstance(ticket, Lease):
            return f"node {self.node_id} held no lease when the event started"
        if not ticket.fresh(self._commit_margin):
            return f"node {self.node_id} lost the lease the event started under"
        return self._rejoining(ticket)

    def commit_refusal(self, object_id: bytes, ticket: object) -> str | None:
        """Why a batch of ``object_id`` written under ``ticket`` must not commit."""
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
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            owner, prefs = home_of(self.view, object_id)
            if owner != self.node_id or not self._arriving(object_id, prefs):
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            # Any of a pull's end, a fence or a membership change may let it run.
            waits = [asyncio.ensure_future(self.pending.wait_changed(remaining)),
                     asyncio.ensure_future(self._changed.wait())]
            try:
                await asyncio.wait(waits, timeout=remaining,
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
                await asyncio.gather(*waits, return_exceptions=True)
