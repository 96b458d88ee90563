"""The node's metrics: hooks the runtime calls where things happen, and one collector.

``Observer`` is what the runtime holds (``runtime.observer``); its methods do nothing,
so a node without metrics pays one method call per event. ``NodeMetrics`` fills them
in with plain counters and loop-only histograms, and at scrape time also reads the
counters the components already keep (committer, alarms, sockets, dispatcher,
handoff, lease). Families and alerts: docs/metrics.md.

Two derived numbers need care:

* Object-active seconds (the duration Cloudflare bills): wall time an object spends in
  memory, from the moment its host is created to its eviction (or reset). Closed spans
  accumulate at release; live objects add ``now - active_since`` at each scrape, so
  the counter rises smoothly and never goes back.
* Stored bytes and keys per namespace are *computed*, not maintained: a background task
  walks the whole keyspace every ``storage_scan_interval`` seconds on the store's scan
  thread (a point-in-time RocksDB iterator; about 2 us a key), and the gauges show the
  last complete walk. Maintaining them per write would need
  the old size of every overwritten key, i.e. a read per blind write on the commit path.

``usage(since)`` answers ``abode usage``: per-namespace requests and active seconds
since ``since`` (from snapshots of the counters kept every ``usage_interval`` seconds
for ``usage_retention`` seconds, in memory: a restart starts from zero) plus storage.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric

from abode.cluster import ids
from abode.cluster.errors import InvalidId
from abode.cluster.metrics import COUNT_BUCKETS, Histogram, counter, gauge, histogram
from abode.node._store import DATA

if TYPE_CHECKING:
    from abode.node._host import Event, ObjectHost
    from abode.node._member import ClusterNode
    from abode.node._runtime import Runtime
    from abode.node._server import NodeServer

__all__ = ["KINDS", "NodeMetrics", "Observer", "UsageLedger"]

log = logging.getLogger(__name__)

# Event kinds as metrics name them; "task" (wait_until) is not a request.
KINDS = ("fetch", "rpc", "alarm", "websocket")
_KIND_OF = {
    "fetch": "fetch", "rpc": "rpc", "alarm": "alarm",
    "ws_message": "websocket", "ws_close": "websocket", "ws_error": "websocket",
}
UNKNOWN_NAMESPACE = "_unknown"  # stored data of a class the app no longer defines


class Observer:
    """Runtime hooks; the default does nothing (a node started without metrics)."""

    def event_started(self, host: ObjectHost, ev: Event) -> None:
        """The handler of ``ev`` is about to run (after queueing and activation)."""

    def event_finished(self, host: ObjectHost, ev: Event, outcome: Any) -> None:
        """The handler returned ``outcome`` (an exception if it raised)."""

    def activated(self, host: ObjectHost, seconds: float) -> None:
        """A cold start: the constructor (and block_concurrency_while) took ``seconds``."""

    def released(self, host: ObjectHost, evicted: bool) -> None:
        """The host left memory: evicted (idle, LRU, handoff) or reset (broken)."""


class UsageLedger:
    """Snapshots of cumulative per-namespace usage, to answer "since when?".

    The first snapshot is all zeros at process start, so any window reaching back to
    the start is exact; later windows start at the newest snapshot at or before the
    requested time (at most ``interval`` seconds earlier than asked).
    """

    def __init__(self, started: float, *, interval: float = 60.0, retention: float = 86400.0):
        self.interval = interval
        self.snapshots: deque[tuple[float, dict[str, dict[str, float]]]] = deque(
            maxlen=max(2, int(retention / interval) + 1)
        )
        self.snapshots.append((started, {}))

    def record(self, at: float, totals: dict[str, dict[str, float]]) -> None:
        self.snapshots.append((at, totals))

    def baseline(self, since: float | None) -> tuple[float, dict[str, dict[str, float]]]:
        """The snapshot a window starting at ``since`` subtracts (None: process start)."""
        chosen = self.snapshots[0]
        if since is None:
            return chosen
        for snap in self.snapshots:
            if snap[0] > since:
                break
            chosen = snap
        return chosen

    @staticmethod
    def delta(
        now: dict[str, dict[str, float]], base: dict[str, dict[str, float]]
    ) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for ns, fields in now.items():
            before = base.get(ns, {})
            out[ns] = {k: v - before.get(k, 0) for k, v in fields.items()}
        return out


class NodeMetrics(Observer):
    """Every ``abode_node_*`` family of one node, on an injected registry."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        storage_scan_interval: float = 60.0,
        usage_interval: float = 60.0,
        usage_retention: float = 86400.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.storage_scan_interval = storage_scan_interval
        self._clock = clock
        self.started = clock()
        self.ledger = UsageLedger(self.started, interval=usage_interval, retention=usage_retention)
        self.events: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.errors: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.wait: dict[str, Histogram] = {}
        self.activations: defaultdict[str, int] = defaultdict(int)
        self.activation = Histogram()
        self.evictions: defaultdict[str, int] = defaultdict(int)
        self.resets: defaultdict[str, int] = defaultdict(int)
        self.active_closed: defaultdict[str, float] = defaultdict(float)
        self.commit = Histogram()
        self.commit_group = Histogram(COUNT_BUCKETS)
        # Last complete storage walk: (namespace, role) -> [bytes, keys, objects], where
        # role is "home" (this node is the object's home now) or "replica" (a copy).
        self.storage: dict[tuple[str, str], list[int]] = {}
        self.storage_scanned = 0.0
        self.storage_scan_seconds = 0.0
        self.server: NodeServer | None = None
        self.member: ClusterNode | None = None
        registry.register(self)

    # -- wiring -----------------------------------------------------------------------
    def bind(self, server: NodeServer, member: ClusterNode | None = None) -> None:
        """Attach to a started node (and its cluster membership, if any).

        Call it right after ``start()`` returns, before the loop runs anything else,
        so no event goes uncounted.
        """
        runtime = server.runtime
        assert runtime is not None, "bind after the node started"
        self.server, self.member = server, member
        for ns in runtime.app.namespaces:
            self.wait.setdefault(ns, Histogram())
            self.activations[ns] += 0
            self.evictions[ns] += 0
            for kind in KINDS:
                self.events[ns, kind] += 0
        runtime.observer = self
        runtime.committer.on_commit = self.committed
        runtime.spawn(self._scan_storage_forever())
        runtime.spawn(self._snapshot_forever())

    @property
    def runtime(self) -> Runtime | None:
        return self.server.runtime if self.server is not None else None

    # -- hooks (on the loop, per event: keep them cheap) --------------------------------
    def event_started(self, host: ObjectHost, ev: Event) -> None:
        kind = _KIND_OF.get(ev.kind)
        if kind is None:
            return
        ns = host.id.namespace
        self.events[ns, kind] += 1
        hist = self.wait.get(ns)
        if hist is None:
            hist = self.wait[ns] = Histogram()
        hist.observe(time.monotonic() - ev.queued)

    def event_finished(self, host: ObjectHost, ev: Event, outcome: Any) -> None:
        if isinstance(outcome, BaseException):
            kind = _KIND_OF.get(ev.kind)
            if kind is not None:
                self.errors[host.id.namespace, kind] += 1

    def activated(self, host: ObjectHost, seconds: float) -> None:
        self.activations[host.id.namespace] += 1
        self.activation.observe(seconds)

    def released(self, host: ObjectHost, evicted: bool) -> None:
        ns = host.id.namespace
        self.active_closed[ns] += time.monotonic() - host.active_since
        if evicted:
            self.evictions[ns] += 1
        else:
            self.resets[ns] += 1

    def committed(self, batches: int, seconds: float) -> None:
        self.commit.observe(seconds)
        self.commit_group.observe(batches)

    # -- derived numbers ----------------------------------------------------------------
    def active_seconds(self) -> dict[str, float]:
        out = defaultdict(float, self.active_closed)
        runtime = self.runtime
        if runtime is not None:
            now = time.monotonic()
            for host in runtime.hosts.values():
                out[host.id.namespace] += now - host.active_since
        return dict(out)

    def usage_totals(self) -> dict[str, dict[str, float]]:
        """Cumulative per-namespace usage since this process started."""
        totals: dict[str, dict[str, float]] = {}
        for (ns, kind), n in self.events.items():
            totals.setdefault(ns, {k: 0 for k in KINDS})[kind] = n
        for ns, seconds in self.active_seconds().items():
            totals.setdefault(ns, {k: 0 for k in KINDS})["active_seconds"] = seconds
        for fields in totals.values():
            fields.setdefault("active_seconds", 0.0)
        return totals

    def usage(self, since: float | None = None) -> dict[str, Any]:
        """Usage since ``since`` (Unix seconds; None: since process start), per namespace.

        Requests and active seconds are counted over [from, now], where ``from`` is
        the snapshot the window starts at (see ``UsageLedger``); stored bytes and keys
        are the current size of the objects this node is home for.
        """
        now = self._clock()
        base_at, base = self.ledger.baseline(since)
        namespaces = UsageLedger.delta(self.usage_totals(), base)
        empty = {k: 0.0 for k in KINDS} | {"active_seconds": 0.0}
        for ns, _role in self.storage:
            namespaces.setdefault(ns, dict(empty))
        for fields in namespaces.values():
            fields["stored_bytes"] = fields["stored_keys"] = 0
        for (ns, role), (nbytes, keys, _objects) in self.storage.items():
            if role == "home":  # each object counted once in a cluster: at its home
                namespaces[ns]["stored_bytes"] += nbytes
                namespaces[ns]["stored_keys"] += keys
        return {
            "node_id": self.server.config.node_id if self.server is not None else "",
            "started": self.started,
            "now": now,
            "since": since,
            "from": base_at,
            "storage_scanned": self.storage_scanned,
            "namespaces": namespaces,
        }

    async def _snapshot_forever(self) -> None:
        while True:
            await asyncio.sleep(self.ledger.interval)
            self.ledger.record(self._clock(), self.usage_totals())

    # -- storage walk -------------------------------------------------------------------
    async def _scan_storage_forever(self) -> None:
        while True:
            try:
                await self.scan_storage()
            except Exception as exc:  # the gauges keep the last walk; try again later
                log.warning("storage walk failed: %s: %s", type(exc).__name__, exc)
            await asyncio.sleep(self.storage_scan_interval)

    async def scan_storage(self) -> None:
        """Walk every key once (on the store's scan thread, off the loop) and replace
        the storage gauges."""
        runtime = self.runtime
        assert runtime is not None
        namespaces = runtime.app.namespaces
        owns = runtime.owns  # reads of immutable ring state and atomic dict lookups

        def walk(keys: Iterator[tuple[bytes, bytes]]) -> dict[tuple[str, str], list[int]]:
            totals: dict[tuple[str, str], list[int]] = {(ns, "home"): [0, 0, 0]
                                                        for ns in namespaces}
            last_oid = b""
            current: list[int] | None = None
            for key, value in keys:
                if key[32:33] != DATA:
                    continue  # alarm records, socket metadata: not user data
                oid = key[:32]
                if oid != last_oid:
                    last_oid = oid
                    role = "home" if owns(oid) else "replica"
                    current = totals.setdefault((_namespace_of(oid, namespaces), role), [0, 0, 0])
                    current[2] += 1
                assert current is not None
                current[0] += len(key) - 33 + len(value)
                current[1] += 1
            return totals

        t0 = time.perf_counter()
        self.storage = await runtime.store.walk(walk)
        self.storage_scanned = self._clock()
        self.storage_scan_seconds = time.perf_counter() - t0

    # -- the collector ------------------------------------------------------------------
    def collect(self) -> Iterator[Metric]:
        server, member, runtime = self.server, self.member, self.runtime
        node_id = server.config.node_id if server is not None else ""
        yield gauge("abode_node_info", "Always 1; labels identify the node.", ["node_id"],
                    {(node_id,): 1})
        yield gauge("abode_node_start_time_seconds", "Unix time this node process started.",
                    values={(): self.started})
        yield counter("abode_node_events", "Events delivered to objects' handlers "
                      "(counted as the handler starts).", ["namespace", "kind"],
                      {k: float(v) for k, v in self.events.items()})
        yield counter("abode_node_event_errors", "Events whose handler raised (or whose "
                      "object was aborted).", ["namespace", "kind"],
                      {k: float(v) for k, v in self.errors.items()})
        yield histogram("abode_node_event_wait_seconds", "Time from an event's arrival at "
                        "its object to its handler starting: mailbox queueing plus, on a "
                        "cold start, activation.", ["namespace"],
                        {(ns,): h for ns, h in self.wait.items()})
        yield counter("abode_node_activations", "Cold starts: objects constructed.",
                      ["namespace"], {(ns,): float(v) for ns, v in self.activations.items()})
        yield histogram("abode_node_activation_duration_seconds", "Time a cold start spends "
                        "in the constructor and block_concurrency_while.",
                        values={(): self.activation})
        yield counter("abode_node_evictions", "Objects evicted from memory (idle timeout, "
                      "LRU past max_active_objects, handoff).", ["namespace"],
                      {(ns,): float(v) for ns, v in self.evictions.items()})
        yield counter("abode_node_object_resets", "Object instances dropped as broken "
                      "(failed commit, ctx.abort, failed constructor).", ["namespace"],
                      {(ns,): float(v) for ns, v in self.resets.items()})
        yield counter("abode_node_object_active_seconds", "Wall time objects spent in "
                      "memory (the duration Cloudflare bills), live objects included.",
                      ["namespace"], {(ns,): v for ns, v in self.active_seconds().items()})
        yield histogram("abode_node_commit_duration_seconds", "Time of one group commit "
                        "(one fsync'd RocksDB write).", values={(): self.commit})
        yield histogram("abode_node_commit_group_size", "Event batches written by one group "
                        "commit.", values={(): self.commit_group})
        yield from self._storage_families()
        if runtime is not None:
            yield from self._runtime_families(runtime)
        if member is not None:
            yield from self._member_families(member)

    def _storage_families(self) -> Iterator[Metric]:
        doc = (" on this node; role=home for objects it is home for, replica for copies "
               "(from the last storage walk, see abode_node_storage_scan_timestamp_seconds).")
        labels = ["namespace", "role"]
        yield gauge("abode_node_storage_bytes", "User keys plus values stored" + doc,
                    labels, {k: v[0] for k, v in self.storage.items()})
        yield gauge("abode_node_storage_keys", "User keys stored" + doc,
                    labels, {k: v[1] for k, v in self.storage.items()})
        yield gauge("abode_node_storage_objects", "Objects with at least one key stored" + doc,
                    labels, {k: v[2] for k, v in self.storage.items()})
        yield gauge("abode_node_storage_scan_timestamp_seconds",
                    "Unix time the last storage walk finished (0: none yet).",
                    values={(): self.storage_scanned})
        yield gauge("abode_node_storage_scan_duration_seconds",
                    "How long the last storage walk took.", values={(): self.storage_scan_seconds})

    def _runtime_families(self, runtime: Runtime) -> Iterator[Metric]:
        active: defaultdict[tuple[str], int] = defaultdict(int)
        for ns in runtime.app.namespaces:
            active[(ns,)] += 0
        for host in runtime.hosts.values():
            active[(host.id.namespace,)] += 1
        yield gauge("abode_node_active_objects", "Objects in memory now.", ["namespace"], active)
        committer = runtime.committer
        yield counter("abode_node_commits", "Group commits (RocksDB writes).",
                      values={(): committer.commits})
        yield counter("abode_node_commit_batches", "Event batches committed.",
                      values={(): committer.batches})
        yield gauge("abode_node_disk_full", "1 while this node's disk is full (calls are "
                    "refused with 503 until space returns).",
                    values={(): 0 if runtime.store.full is None else 1})
        yield counter("abode_node_commits_fenced", "Batches refused at commit because this "
                      "node may no longer own the object (fencing).",
                      values={(): committer.fenced})
        alarms = runtime.alarms
        yield counter("abode_node_alarms_fired", "Alarm deliveries (first tries and retries).",
                      values={(): alarms.fired})
        yield counter("abode_node_alarms_retried", "Alarm handlers that raised and were "
                      "scheduled again.", values={(): alarms.retried})
        yield counter("abode_node_alarms_failed", "Alarms dropped after their last retry.",
                      values={(): alarms.failed})
        yield gauge("abode_node_alarms_pending", "Alarms set on objects of this node.",
                    values={(): alarms.pending})
        opened: defaultdict[tuple[str], int] = defaultdict(int)
        hibernated: defaultdict[tuple[str], int] = defaultdict(int)
        for ns in runtime.app.namespaces:
            opened[(ns,)] += 0
            hibernated[(ns,)] += 0
        hosts = runtime.hosts
        for info in list(runtime.sockets.sockets.values()):
            opened[(info.namespace,)] += 1
            owner = hosts.get(info.object_id)
            if owner is None or owner.instance is None:
                hibernated[(info.namespace,)] += 1
        yield gauge("abode_node_websockets_open", "Client WebSockets accepted by objects "
                    "here and still open.", ["namespace"], opened)
        yield gauge("abode_node_websockets_hibernated", "Open WebSockets whose object is "
                    "not in memory (a message will wake it).", ["namespace"], hibernated)
        yield counter("abode_node_websocket_auto_responses", "Messages answered by "
                      "set_websocket_auto_response without waking the object.",
                      values={(): runtime.sockets.auto_responses_sent})
        dispatcher = self.server.dispatcher if self.server is not None else None
        yield counter("abode_node_forwards", "Calls this node forwarded to the object's home.",
                      values={(): dispatcher.forwards if dispatcher is not None else 0})

    def _member_families(self, member: ClusterNode) -> Iterator[Metric]:
        handoff, view, lease, ownership = member.handoff, member.view, member.lease, member.ownership
        if handoff is not None:
            yield counter("abode_node_handoff_ranges_pulled", "Ring ranges pulled from their "
                          "old owner.", values={(): handoff.ranges_pulled})
            yield counter("abode_node_handoff_keys_pulled", "Keys pulled in handoffs.",
                          values={(): handoff.keys_pulled})
            yield counter("abode_node_handoff_ranges_served", "Ring ranges this node served "
                          "to their new owner.", values={(): handoff.ranges_served})
            yield counter("abode_node_handoff_keys_served", "Keys this node served in handoffs.",
                          values={(): handoff.keys_served})
            yield gauge("abode_node_handoff_pulls_active", "Handoff pulls in progress.",
                        values={(): handoff.pulling})
        if ownership is not None:
            yield gauge("abode_node_handoff_ranges_pending", "Ranges still arriving; calls "
                        "for them wait.", values={(): len(ownership.pending)})
            yield gauge("abode_node_fenced", "1 while this node refuses to execute and commit "
                        "(its lease is not fresh).",
                        values={(): 0 if ownership.fenced() is None else 1})
        replicator, catchup = member.replicator, member.catchup
        sink = member.server.service.replicas if member.server.service else None
        if replicator is not None:
            yield histogram("abode_node_replication_duration_seconds", "Time from shipping a "
                            "group commit to the last replica's ack.",
                            values={(): replicator.latency})
            yield counter("abode_node_replication_batches", "Batches shipped to replicas.",
                          values={(): replicator.batches_sent})
            yield counter("abode_node_replication_retries", "Replica writes asked again "
                          "(no answer yet).", values={(): replicator.retries})
            yield counter("abode_node_replication_failures", "Batches a replica did not take "
                          "(their commits failed or are uncertain).",
                          values={(): replicator.failures})
        if sink is not None:
            yield counter("abode_node_replica_writes_applied", "Batches applied as a replica.",
                          values={(): sink.applied})
            yield counter("abode_node_replica_writes_refused", "Batches refused as a replica "
                          "(the sender is not the home here).", values={(): sink.refused})
            yield counter("abode_node_replica_repairs", "Objects fetched whole to close a "
                          "version gap.", values={(): sink.repaired})
        if catchup is not None:
            yield gauge("abode_node_catchup_waiting", "Peers this node still catches up from "
                        "(replication lag: it may not be home for their objects).",
                        values={(): len(catchup.waiting)})
        session = member.session
        yield counter("abode_node_lease_renewals", "Successful lease keepalives.",
                      values={(): session.lease_renewals})
        yield counter("abode_node_lease_renewal_failures", "Lease keepalives that failed.",
                      values={(): session.lease_renewal_failures})
        if lease is not None:
            yield gauge("abode_node_lease_age_seconds", "Seconds since the last successful "
                        "lease renewal was sent (fenced near the TTL).",
                        values={(): time.monotonic() - lease.last_renewal})
        if view is not None:
            yield gauge("abode_node_ring_revision", "Membership revision this node routes with.",
                        values={(): view.revision})
            yield gauge("abode_node_ring_members", "Nodes in the ring.",
                        values={(): len(view.members)})
            yield gauge("abode_node_live_nodes", "Ring members with a live lease.",
                        values={(): len(view.live)})


def _namespace_of(object_id: bytes, namespaces: list[str]) -> str:
    # An id carries a check derived from its namespace: the one that verifies owns it.
    for ns in namespaces:
        try:
            ids.id_from_bytes(ns, object_id)
        except InvalidId:
            continue
        return ns
    return UNKNOWN_NAMESPACE
