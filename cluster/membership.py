"""Membership and liveness in etcd (DESIGN §3: "Membership, liveness, one live home").

The two are kept apart on purpose:

* ``/{cluster}/members/{node_id}`` -> ``{"address", "weight"}``, no lease. Written when a
  node first starts and kept across restarts until an operator removes it. The ring is
  computed from these keys only, so a crash never rehashes anyone's objects.
* ``/{cluster}/live/{node_id}`` -> ``{"address", "started"}``, on the node's lease.
  A crash or partition ends the lease and etcd deletes the key; membership is unchanged.
* ``/{cluster}/routers/{router_id}`` -> ``{"started", ...}``, on the router's lease, so
  nodes learn when a router dies (and close its WebSockets).

`EtcdSession` is one process's connection; `Lease` keeps a lease alive and answers the
self-fencing question ("may I still execute objects?") from the monotonic clock alone;
`MembershipView` mirrors the keys above into memory by one read plus a watch.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import math
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aetcd
import grpc
from aetcd import rpc
from aetcd.utils import prefix_range_end

from abode.cluster.ring import WEIGHT_UNIT, Member, Ring
from abode.cluster.supervisor import Tasks

__all__ = [
    "DEFAULT_CLUSTER",
    "DEFAULT_FENCING_MARGIN",
    "DEFAULT_TTL",
    "EtcdSession",
    "EtcdUnavailableError",
    "Lease",
    "LiveKey",
    "LiveNode",
    "MembershipSnapshot",
    "MembershipView",
    "live_key_at",
    "parse_etcd_endpoints",
    "revoke_live_lease",
]

log = logging.getLogger(__name__)

DEFAULT_CLUSTER = "abode"
DEFAULT_TTL = 3.0
DEFAULT_FENCING_MARGIN = 0.5
"""Seconds of lease life a node keeps in reserve: it stops executing objects this long
before etcd could possibly expire its lease, so a turn that just passed the check cannot
outlive the lease by more than the margin."""

_CONNECT_TIMEOUT = 5.0
_RPC_TIMEOUT = 5.0
_PROBE_TIMEOUT = 1.0
_BACKOFF_MIN = 0.1
_BACKOFF_MAX = 5.0

# gRPC's default reconnect backoff grows to 120 s; after an etcd restart we want the
# channel back within about a second. Keepalive pings notice a silently dead etcd
# under an idle watch stream (etcd refuses pings more often than every 5 s).
_CHANNEL_OPTIONS: dict[str, Any] = {
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.min_reconnect_backoff_ms": 100,
    "grpc.max_reconnect_backoff_ms": 1000,
    "grpc.keepalive_time_ms": 10_000,
    "grpc.keepalive_timeout_ms": 5_000,
    "grpc.keepalive_permit_without_calls": 1,
    "grpc.http2.max_pings_without_data": 0,
}

Endpoint = tuple[str, int]
Listener = Callable[["MembershipView"], "Awaitable[None] | None"]


class EtcdUnavailableError(ConnectionError):
    """etcd could not be reached (at start, or for an operation that needs it now).

    A `ConnectionError` so process entry points can report "etcd unreachable" as the
    one-line fatal reason DESIGN §4 asks for.
    """


def parse_etcd_endpoints(url: str) -> list[Endpoint]:
    """Parse ``--etcd``: ``http://host:port``, comma-separated for several endpoints.

    Only plain http is accepted (aetcd's channel here is insecure); an explicit port is
    required because guessing 2379 hides typos in deployment files.
    """
    if not url or not url.strip():
        raise ValueError("etcd URL is empty; expected http://host:port[,http://host:port]")
    endpoints: list[Endpoint] = []
    for part in url.split(","):
        text = part.strip()
        where = f"etcd endpoint {text!r} in {url!r}"
        parsed = urllib.parse.urlsplit(text)
        if parsed.scheme != "http":
            raise ValueError(f"{where}: expected http://host:port (scheme must be http)")
        if parsed.username or parsed.password or parsed.query or parsed.fragment:
            raise ValueError(f"{where}: credentials, query and fragment are not supported")
        if parsed.path not in ("", "/"):
            raise ValueError(f"{where}: unexpected path {parsed.path!r}")
        try:
            port = parsed.port
        except ValueError as e:
            raise ValueError(f"{where}: bad port ({e})") from None
        if not parsed.hostname or port is None:
            raise ValueError(f"{where}: expected http://host:port with an explicit port")
        if port == 0:
            raise ValueError(f"{where}: port 0 is not a reachable port")
        endpoints.append((parsed.hostname, port))
    return endpoints


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _encode(value: dict[str, Any]) -> bytes:
    # Sorted keys make equal values byte-equal, which register_member's compare needs.
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _endpoint_str(endpoint: Endpoint) -> str:
    host, port = endpoint
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class EtcdSession:
    """One process's connection to etcd, with the key layout of one cluster.

    Created by `connect`, which fails fast with `EtcdUnavailableError` so a process
    can exit with a clear reason instead of hanging at start. With several endpoints
    the session talks to one at a time; `failover` moves to another reachable one.
    """

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        client: aetcd.Client,
        index: int,
        *,
        cluster: str,
        ttl: float,
    ) -> None:
        self.endpoints: list[Endpoint] = list(endpoints)
        self.cluster = cluster
        self.ttl = ttl
        self.prefix = f"/{cluster}/"
        self._client = client
        self._index = index
        self._failover_lock = asyncio.Lock()
        self._closed = False
        self._leases: set[Lease] = set()
        self.lease_renewals = self.lease_renewal_failures = 0  # metrics, every lease

    # -- connection -----------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        endpoints: str | Sequence[Endpoint],
        cluster: str = DEFAULT_CLUSTER,
        ttl: float = DEFAULT_TTL,
        *,
        timeout: float = _CONNECT_TIMEOUT,
    ) -> EtcdSession:
        """Connect to the first endpoint that answers within `timeout` seconds.

        Retries until the deadline because `abode up` starts etcd and the nodes
        together: a node may come up a moment before etcd listens.
        """
        if isinstance(endpoints, str):
            endpoints = parse_etcd_endpoints(endpoints)
        if not endpoints:
            raise ValueError("no etcd endpoints given")
        if not cluster or "/" in cluster:
            raise ValueError(f"cluster name must be non-empty without '/': {cluster!r}")
        if ttl <= 0:
            raise ValueError(f"lease TTL must be positive, got {ttl}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last_error: BaseException | None = None
        while True:
            for index, endpoint in enumerate(endpoints):
                remaining = deadline - loop.time()
                client = await _open_client(endpoint)
                try:
                    await _probe(client, min(_PROBE_TIMEOUT, max(remaining, 0.05)))
                except Exception as e:  # any failure means "try the next endpoint"
                    last_error = e
                    await client.close()
                    continue
                log.info("connected to etcd at %s (cluster %r)", _endpoint_str(endpoint), cluster)
                return cls(endpoints, client, index, cluster=cluster, ttl=ttl)
            if loop.time() >= deadline:
                urls = ",".join(f"http://{_endpoint_str(e)}" for e in endpoints)
                raise EtcdUnavailableError(
                    f"etcd unreachable at {urls} within {timeout:g}s: {last_error!r}"
                )
            await asyncio.sleep(min(0.2, max(deadline - loop.time(), 0)))

    @property
    def client(self) -> aetcd.Client:
        """The current aetcd client; read it per call, since `failover` replaces it."""
        if self._closed:
            raise EtcdUnavailableError("etcd session is closed")
        return self._client

    @property
    def endpoint(self) -> Endpoint:
        return self.endpoints[self._index]

    async def failover(self) -> None:
        """After a failed call, move to another endpoint if the current one is down.

        With one endpoint this does nothing: the gRPC channel reconnects by itself.
        Safe to call from several tasks at once; only one probes.
        """
        if len(self.endpoints) == 1 or self._closed:
            return
        async with self._failover_lock:
            try:
                await _probe(self._client, _PROBE_TIMEOUT)
                return
            except Exception as e:
                log.warning("etcd endpoint %s failed: %r", _endpoint_str(self.endpoint), e)
            for step in range(1, len(self.endpoints)):
                index = (self._index + step) % len(self.endpoints)
                client = await _open_client(self.endpoints[index])
                try:
                    await _probe(client, _PROBE_TIMEOUT)
                except Exception:
                    await client.close()
                    continue
                if self._closed:  # closed while we probed: do not resurrect it
                    await client.close()
                    return
                old, self._client, self._index = self._client, client, index
                log.info("switched to etcd endpoint %s", _endpoint_str(self.endpoint))
                await old.close()
                return

    async def close(self) -> None:
        """Close the connection. Leases are left to expire; revoke them first to hand
        their keys over at once."""
        if self._closed:
            return
        for lease in list(self._leases):
            await lease.stop_keepalive()  # their renewals would only fail from now on
        self._closed = True
        await self._client.close()

    # -- keys -----------------------------------------------------------------------

    def member_key(self, node_id: str) -> bytes:
        return f"{self.prefix}members/{node_id}".encode()

    def live_key(self, node_id: str) -> bytes:
        return f"{self.prefix}live/{node_id}".encode()

    def router_key(self, router_id: str) -> bytes:
        return f"{self.prefix}routers/{router_id}".encode()

    # -- writes -----------------------------------------------------------------------

    async def start_lease(self, ttl: float | None = None, *, tasks: Tasks | None = None) -> Lease:
        """Grant a lease of `ttl` seconds (default: the session's) and keep it alive
        (by a task of `tasks`, the process's supervisor, when given)."""
        lease = await Lease.start(self, self.ttl if ttl is None else ttl, tasks=tasks)
        self._leases.add(lease)
        return lease

    async def register_member(self, member: Member) -> bool:
        """Make `member` part of the ring; returns whether etcd changed.

        Idempotent: a restart with the same address and weight writes nothing, so it
        does not bump the revision or move data. A different weight or address is a
        membership change and is written.
        """
        key = self.member_key(member.node_id)
        value = _encode({"address": member.address, "weight": member.weight})
        client = self.client
        unchanged, _ = await client.transaction(
            compare=[client.transactions.value(key) == value],
            success=[],
            failure=[client.transactions.put(key, value)],
        )
        if not unchanged:
            log.info(
                "registered member %s at %s weight %d",
                member.node_id,
                member.address,
                member.weight,
            )
        return not unchanged

    async def remove_member(self, node_id: str) -> bool:
        """Take a node out of the ring; returns whether it was a member."""
        deleted = await self.client.delete(self.member_key(node_id))
        if deleted is not None:
            log.info("removed member %s", node_id)
        return deleted is not None

    async def set_live(
        self,
        node_id: str,
        address: str,
        lease: Lease,
        *,
        started_ms: int | None = None,
        waiting: Iterable[str] = (),
        disk_full: str = "",
    ) -> int:
        """Announce `node_id` as live for as long as `lease` lives; returns the etcd
        revision of the write."""
        body: dict[str, Any] = {
            "address": address, "started": started_ms or _now_ms(), "waiting": sorted(waiting),
        }
        if disk_full:
            body["disk_full"] = disk_full  # why its writes fail now (routers' health)
        value = _encode(body)
        result = await self.client.put(self.live_key(node_id), value, lease=lease.id)
        return int(result.header.revision)

    async def ensure_config(self, name: str, value: Any) -> Any:
        """The cluster-wide setting `name`: written if absent, else the stored value."""
        key = f"{self.prefix}config/{name}".encode()
        current = await self.client.get(key)
        if current is not None:
            return json.loads(current.value)
        await self.client.put(key, json.dumps(value).encode())
        return value

    async def register_router(
        self, router_id: str, lease: Lease, *, address: str | None = None
    ) -> None:
        """Announce a router for as long as `lease` lives."""
        body: dict[str, Any] = {"started": _now_ms()}
        if address is not None:
            body["address"] = address
        await self.client.put(self.router_key(router_id), _encode(body), lease=lease.id)

    # -- reads ------------------------------------------------------------------------

    async def snapshot(self) -> MembershipSnapshot:
        """Members, live nodes and routers, read together at one etcd revision."""
        result = await self.client.get_prefix(self.prefix.encode())
        snap = MembershipSnapshot(revision=result.header.revision)
        for kv in result:
            snap.apply(self.prefix, kv.key, kv.value)
        return snap


async def _open_client(endpoint: Endpoint) -> aetcd.Client:
    host, port = endpoint
    client = aetcd.Client(
        host=f"[{host}]" if ":" in host else host,
        port=port,
        timeout=_RPC_TIMEOUT,  # type: ignore[arg-type]  # gRPC takes float deadlines
        options=_CHANNEL_OPTIONS,
    )
    await client.connect()  # only builds the channel; nothing is dialled yet
    return client


async def _probe(client: aetcd.Client, timeout: float) -> None:
    # A serializable read of one key is the cheapest call that proves etcd answers.
    await asyncio.wait_for(client.get(b"\0", serializable=True), timeout)


# -- a crashed node's lease ------------------------------------------------------------


@dataclass(frozen=True)
class LiveKey:
    """A node's live key as etcd holds it now, with the lease it hangs on."""

    node_id: str
    node: LiveNode
    lease_id: int
    mod_revision: int


async def live_key_at(session: EtcdSession, address: str) -> LiveKey | None:
    """The live key that names `address`, read from etcd now (not from a view, which
    may lag), or None if no live node is there."""
    prefix = f"{session.prefix}live/"
    result = await asyncio.wait_for(session.client.get_prefix(prefix.encode()), _RPC_TIMEOUT)
    for kv in result:
        node_id = kv.key.decode(errors="replace")[len(prefix):]
        try:
            node = _parse_value("live", node_id, kv.value)
        except (ValueError, TypeError, KeyError, AttributeError):
            continue
        if isinstance(node, LiveNode) and node.address == address and kv.lease:
            return LiveKey(node_id, node, int(kv.lease), int(kv.mod_revision))
    return None


async def revoke_live_lease(session: EtcdSession, key: LiveKey) -> bool:
    """Revoke the lease of a live key read earlier, if that key still names the same
    address on the same lease; returns whether this call revoked it.

    The check keeps a restarted node safe: its new process publishes its live key on
    a fresh lease, which a stale suspicion must never end. (Between the check and the
    revoke the key can only move to another lease, which the revoke then leaves alone.)
    """
    current = await asyncio.wait_for(
        session.client.get(session.live_key(key.node_id)), _RPC_TIMEOUT)
    if current is None or int(current.lease) != key.lease_id:
        return False
    try:
        node = _parse_value("live", key.node_id, current.value)
    except (ValueError, TypeError, KeyError, AttributeError):
        return False
    if not isinstance(node, LiveNode) or node.address != key.node.address:
        return False
    try:
        await asyncio.wait_for(session.client.revoke_lease(key.lease_id), _RPC_TIMEOUT)
    except aetcd.exceptions.ClientError as e:
        if "not found" in str(e).lower():
            return False  # it expired, or someone else revoked it, meanwhile
        raise
    return True


# -- leases -------------------------------------------------------------------------------


class Lease:
    """An etcd lease kept alive by a background task, and the self-fencing clock.

    etcd expires a lease no earlier than TTL after it *received* the last renewal; we
    count from when we *sent* it, on the monotonic clock, so `fresh()` errs on the safe
    side without trusting wall clocks. Renewal errors are logged and retried at the
    next tick; only etcd saying the lease is gone (TTL <= 0) ends it, and then
    `expired` is true and `wait_expired()` returns so the owner can fence and rejoin.
    """

    def __init__(self, session: EtcdSession, lease_id: int, ttl: float, granted_at: float):
        self._session = session
        self.id = lease_id
        self.ttl = ttl
        self.last_renewal = granted_at
        self._expired = asyncio.Event()
        self._revoked = False
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, session: EtcdSession, ttl: float, *, tasks: Tasks | None = None) -> Lease:
        if ttl <= 0:
            raise ValueError(f"lease TTL must be positive, got {ttl}")
        sent = time.monotonic()
        raw = await session.client.lease(math.ceil(ttl))
        # etcd may round a short TTL up to its minimum; fencing keeps the shorter one.
        lease = cls(session, raw.id, min(float(ttl), float(raw.ttl)), sent)
        name = f"lease-keepalive-{raw.id:x}"
        # Its keepalive ends when etcd says the lease is gone: that is the lease's end,
        # not the process's (its owner takes a new one); only raising is fatal.
        lease._task = (tasks.start(name, lease._keepalive(), may_end=True) if tasks is not None
                       else asyncio.create_task(lease._keepalive(), name=name))
        log.info("lease %x granted, ttl %gs", raw.id, lease.ttl)
        return lease

    @property
    def interval(self) -> float:
        """Renewal period: three tries before the lease can lapse."""
        return self.ttl / 3

    @property
    def expired(self) -> bool:
        """True once etcd reported the lease gone (or we revoked it)."""
        return self._expired.is_set()

    def fresh(self, margin: float = DEFAULT_FENCING_MARGIN) -> bool:
        """Whether this process may still act as the lease holder.

        False from `ttl - margin` seconds after the last successful renewal was sent,
        which is before etcd can expire the lease, and forever after expiry/revoke.
        """
        if self._expired.is_set():
            return False
        return time.monotonic() - self.last_renewal < self.ttl - margin

    async def wait_expired(self) -> None:
        """Return when the lease is known to be gone (for a supervising task)."""
        await self._expired.wait()

    async def _keepalive(self) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        failures = 0
        while True:
            # Fixed rate, but after a slow failure retry at once rather than in a burst.
            next_tick = max(next_tick + self.interval, loop.time())
            await asyncio.sleep(next_tick - loop.time())
            sent = time.monotonic()
            try:
                reply = await asyncio.wait_for(
                    self._session.client.refresh_lease(self.id), self.interval
                )
            except asyncio.CancelledError:
                raise
            except Exception as e:
                # Transient until etcd says otherwise: fencing (fresh()) keeps us safe
                # meanwhile, and the next tick retries.
                failures += 1
                self._session.lease_renewal_failures += 1
                log.warning("lease %x renewal failed (%d in a row): %r", self.id, failures, e)
                await self._session.failover()
                continue
            if reply is None:
                failures += 1
                log.warning("lease %x renewal got no reply", self.id)
                continue
            if reply.TTL <= 0:
                log.error("lease %x expired in etcd; this process is fenced", self.id)
                self._expired.set()
                return
            if failures:
                log.info("lease %x renewed again after %d failures", self.id, failures)
                failures = 0
            self.last_renewal = sent
            self._session.lease_renewals += 1

    async def stop_keepalive(self) -> None:
        """Stop renewing without revoking (the lease then lapses, as after a crash)."""
        self._session._leases.discard(self)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def revoke(self) -> None:
        """Stop renewing and revoke now, so this lease's keys vanish at once.

        The graceful-shutdown path: peers see the node gone without waiting a TTL.
        Fencing starts before the revoke is sent; a failed revoke still lapses.
        """
        await self.stop_keepalive()
        self._expired.set()
        if self._revoked:
            return
        self._revoked = True
        try:
            await asyncio.wait_for(self._session.client.revoke_lease(self.id), _RPC_TIMEOUT)
            log.info("lease %x revoked", self.id)
        except Exception as e:
            log.warning("lease %x revoke failed, it will lapse in %gs: %r", self.id, self.ttl, e)


# -- the view -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LiveNode:
    """A node's live key: where it listens now and when that process started."""

    address: str
    started_ms: int
    # Peers this node has not caught up from since its lease began: it may not be
    # home for an object whose preference list includes one of them.
    waiting: frozenset[str] = frozenset()
    # Why this node cannot write now (its disk is full), or "".
    disk_full: str = ""


@dataclass
class MembershipSnapshot:
    """The cluster's membership keys as of one etcd revision."""

    revision: int
    members: dict[str, Member] = field(default_factory=dict)
    live: dict[str, LiveNode] = field(default_factory=dict)
    routers: dict[str, dict[str, Any]] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    def apply(self, prefix: str, key: bytes, value: bytes | None) -> str | None:
        """Apply one key's new value (None: deleted). Returns the kind that changed
        ("members", "live", "routers") or None for a key that is not ours.

        A malformed value is logged and treated as absent, never fatal: one bad key
        written by hand must not take the routing table of every process down.
        """
        try:
            rest = key.decode()[len(prefix) :] if key.startswith(prefix.encode()) else None
        except UnicodeDecodeError:
            rest = None
        if rest is None or "/" not in rest:
            return None
        kind, ident = rest.split("/", 1)
        tables: dict[str, dict[str, Any]] = {
            "members": self.members,
            "live": self.live,
            "routers": self.routers,
            "config": self.config,
        }
        table = tables.get(kind)
        if table is None or not ident or "/" in ident:
            return None
        if value is None:
            return kind if table.pop(ident, None) is not None else None
        try:
            table[ident] = _parse_value(kind, ident, value)
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            log.warning("ignoring malformed etcd key %r: %r", key, e)
            return kind if table.pop(ident, None) is not None else None
        return kind


def _parse_value(kind: str, ident: str, value: bytes) -> Member | LiveNode | dict[str, Any]:
    body = json.loads(value)
    if kind == "members":
        return Member(ident, str(body["address"]), int(body.get("weight", WEIGHT_UNIT)))
    if kind == "live":
        return LiveNode(
            str(body["address"]), int(body.get("started", 0)), frozenset(body.get("waiting", ())),
            str(body.get("disk_full", "")),
        )
    if kind == "config":
        return body  # type: ignore[no-any-return]
    return dict(body)


class _WatchLostError(Exception):
    """etcd ended our watch (compaction, cancel); we must reload to be correct."""


class MembershipView:
    """An in-memory mirror of members, live nodes and routers, kept current by a watch.

    Routers and nodes read `ring`, `live` and `revision` on every request, so these are
    plain attributes updated in place by one task; listeners hear about each change.
    On any watch failure the view reloads everything (a full read, then a new watch)
    with bounded backoff, so it never drifts from etcd for longer than the outage.
    """

    def __init__(self, session: EtcdSession, snapshot: MembershipSnapshot) -> None:
        self.session = session
        self.revision = snapshot.revision
        self.members: dict[str, Member] = snapshot.members
        self.live_nodes: dict[str, LiveNode] = snapshot.live
        self.live: set[str] = set(snapshot.live)
        self.router_info: dict[str, dict[str, Any]] = snapshot.routers
        self.routers: set[str] = set(snapshot.routers)
        self.config: dict[str, Any] = snapshot.config
        self.ring = Ring(self.members.values(), revision=self.revision)
        self._listeners: list[Listener] = []
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._watch_created = False
        self._give_up_after: float | None = None

    @classmethod
    async def start(
        cls,
        session: EtcdSession,
        *,
        tasks: Tasks | None = None,
        give_up_after: float | None = None,
    ) -> MembershipView:
        """Load the current state (one read) and follow it from the next revision.

        Raises `EtcdUnavailableError` if the first read fails: a process should not
        start routing from an empty view. The watch runs as a task of `tasks` (the
        process's supervisor) when given. With `give_up_after`, a watch that cannot
        reload for that many seconds raises `EtcdUnavailableError` (its supervisor
        then stops the process, to be restarted) instead of retrying for ever.
        """
        try:
            snapshot = await session.snapshot()
        except Exception as e:
            raise EtcdUnavailableError(f"cannot read membership from etcd: {e!r}") from e
        view = cls(session, snapshot)
        log.info(
            "membership at revision %d: members %s, live %s",
            view.revision,
            sorted(view.members),
            sorted(view.live),
        )
        view._give_up_after = give_up_after
        view._task = (tasks.start("membership-watch", view._run()) if tasks is not None
                      else asyncio.create_task(view._run(), name="membership-watch"))
        return view

    async def stop(self) -> None:
        """Stop watching. Safe to call twice."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    # -- queries and notifications ---------------------------------------------------

    @property
    def replicas(self) -> int:
        """Copies of each object (cluster-wide, set by the first node)."""
        return int(self.config.get("replicas", 1))

    def address_of(self, node_id: str) -> str:
        """Where to reach `node_id`: its live address if live, else its member address."""
        live = self.live_nodes.get(node_id)
        if live is not None:
            return live.address
        return self.members[node_id].address

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call `listener(view)` after each applied change; returns an unsubscribe.

        Listeners run on the watch task, in order, so an async listener slows the
        watch down rather than letting changes pile up unbounded.
        """
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    async def wait_for(self, predicate: Callable[[MembershipView], bool], timeout: float) -> None:
        """Wait until `predicate(view)` holds; raises TimeoutError after `timeout` s."""
        try:
            async with asyncio.timeout(timeout):
                async with self._changed:
                    await self._changed.wait_for(lambda: predicate(self))
        except TimeoutError:
            raise TimeoutError(
                f"membership condition not met within {timeout:g}s "
                f"(revision {self.revision}, members {sorted(self.members)}, "
                f"live {sorted(self.live)}, routers {sorted(self.routers)})"
            ) from None

    async def _notify(self) -> None:
        for listener in list(self._listeners):
            try:
                result = listener(self)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("membership listener %r failed", listener)
        async with self._changed:
            self._changed.notify_all()

    # -- applying changes ----------------------------------------------------------------

    def _replace(self, snapshot: MembershipSnapshot) -> None:
        """Adopt a full reload, logging what changed while we were not watching."""
        old_members, old_live = self.members, self.live
        self.members = snapshot.members
        self.live_nodes = snapshot.live
        self.live = set(snapshot.live)
        self.router_info = snapshot.routers
        self.routers = set(snapshot.routers)
        self.config = snapshot.config
        self.revision = max(self.revision, snapshot.revision)
        if old_members != self.members:
            self._rebuild_ring()
        if old_live != self.live:
            log.info("live nodes now %s (revision %d)", sorted(self.live), self.revision)

    def _rebuild_ring(self) -> None:
        self.ring = Ring(self.members.values(), revision=self.revision)
        log.info(
            "ring at revision %d: %s",
            self.revision,
            ", ".join(f"{m.node_id}({m.weight})" for m in self.members.values()) or "empty",
        )

    def _apply_events(self, response: Any) -> None:
        snap = MembershipSnapshot(
            revision=self.revision,
            members=self.members,
            live=self.live_nodes,
            routers=self.router_info,
            config=self.config,
        )
        changed: set[str] = set()
        for event in response.events:
            deleted = event.type == rpc.Event.EventType.DELETE
            kv = event.kv
            kind = snap.apply(self.session.prefix, kv.key, None if deleted else kv.value)
            if kind is None:
                continue
            changed.add(kind)
            ident = kv.key.decode().rsplit("/", 1)[-1]
            if kind == "live":
                log.info("node %s %s", ident, "is down" if deleted else "is live")
            elif kind == "routers":
                log.info("router %s %s", ident, "is gone" if deleted else "is up")
        # Every event of a response is at or below its header revision, so after
        # applying them the view is exactly etcd's state at that revision.
        self.revision = max(self.revision, response.header.revision)
        if "live" in changed:
            self.live = set(self.live_nodes)
        if "routers" in changed:
            self.routers = set(self.router_info)
        if "members" in changed:
            self._rebuild_ring()

    # -- the watch task -----------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        delay = _BACKOFF_MIN
        while True:
            self._watch_created = False
            try:
                await self._watch()  # returns only by raising
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("membership watch failed: %r; reloading", e)
            # A watch that got going earns a fast retry; one that keeps failing at
            # once backs off, so a broken etcd is not hammered.
            if self._watch_created:
                delay = _BACKOFF_MIN
            lost_at = loop.time()
            while True:
                await asyncio.sleep(delay)
                delay = min(delay * 2, _BACKOFF_MAX)
                try:
                    await self.session.failover()
                    snapshot = await self.session.snapshot()
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    lost = loop.time() - lost_at
                    if self._give_up_after is not None and lost >= self._give_up_after:
                        raise EtcdUnavailableError(
                            f"membership watch: etcd unreachable for {lost:.0f} s: {e!r}"
                        ) from e
                    log.warning("membership reload failed: %r; retrying in %.1fs", e, delay)
                    continue
                self._replace(snapshot)
                await self._notify()
                break

    async def _watch(self) -> None:
        """Follow the prefix from `revision + 1` until the stream fails.

        We drive etcd's Watch RPC directly rather than aetcd's `watch_prefix`: that
        helper hands out events one by one and drops the response boundaries, and a
        response is exactly the batch we want to apply and announce atomically.
        """
        client = self.session.client
        prefix = self.session.prefix.encode()
        call = rpc.WatchStub(client.channel).Watch(metadata=client.metadata)
        try:
            await call.write(
                rpc.WatchRequest(
                    create_request=rpc.WatchCreateRequest(
                        key=prefix,
                        range_end=prefix_range_end(prefix),
                        start_revision=self.revision + 1,
                    )
                )
            )
            while True:
                response = await call.read()
                if response is grpc.aio.EOF:
                    raise _WatchLostError("etcd closed the watch stream")
                if response.compact_revision:
                    raise _WatchLostError(f"compacted at revision {response.compact_revision}")
                if response.canceled:
                    raise _WatchLostError(f"watch canceled: {response.cancel_reason!r}")
                if response.created:
                    self._watch_created = True
                if not response.events:
                    continue
                self._apply_events(response)
                await self._notify()
        finally:
            call.cancel()
