"""``abode node`` and ``abode router``: one cluster process each (docker-compose, systemd)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from dataclasses import dataclass

from abode.cluster.app import load_app
from abode.cluster.cli._common import host_of, metrics_url, start_metrics, write_ready
from abode.cluster.crashes import CrashDetector
from abode.cluster.membership import EtcdSession, Lease, MembershipView
from abode.cluster.metrics import new_registry
from abode.cluster.placement import RingPlacement
from abode.cluster.retry import until_done
from abode.cluster.supervisor import Supervisor
from abode.node._member import ClusterNode, MemberConfig
from abode.node._metrics import NodeMetrics
from abode.node._runtime import RuntimeConfig
from abode.node._server import NodeConfig
from abode.router import RouterConfig, RouterServer
from abode.router._metrics import RouterMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NodeProcessConfig:
    app: str
    etcd: str
    node_id: str
    listen: str
    advertise: str
    data: str
    cluster: str
    weight: int
    replicas: int
    lease_ttl: float
    runtime: RuntimeConfig
    metrics_port: int | None = None
    ready_file: str | None = None
    storage_scan_interval: float = 60.0
    etcd_give_up: float | None = 60.0


async def run_node(cfg: NodeProcessConfig, stop: asyncio.Event) -> None:
    """Run one node until ``stop`` is set, it was removed, or a task of it ended
    (then ``SupervisedTaskEnded``: the process exits non-zero, to be restarted)."""
    app = load_app(cfg.app)
    node_id = cfg.node_id or socket.gethostname()
    session = await EtcdSession.connect(cfg.etcd, cfg.cluster, cfg.lease_ttl)
    registry = new_registry()
    node_metrics = NodeMetrics(registry, storage_scan_interval=cfg.storage_scan_interval)
    metrics, metrics_port = await start_metrics(
        cfg.metrics_port, registry, host_of(cfg.listen), usage=node_metrics.usage
    )
    async with Supervisor(f"node {node_id}") as sup:
        node = await ClusterNode.open(
            app,
            NodeConfig(node_id, os.path.join(cfg.data, node_id), cfg.listen, cfg.runtime),
            MemberConfig(advertise=cfg.advertise, weight=cfg.weight, replicas=cfg.replicas,
                         etcd_give_up=cfg.etcd_give_up),
            session,
            sup,
        )
        try:
            advertised = host_of(cfg.advertise or cfg.listen)
            await node.start(metrics_url=metrics_url(advertised, metrics_port)
                             if metrics is not None else "")
            if metrics is not None:
                node_metrics.bind(node.server, node)  # before anything else runs: nothing missed
            write_ready(cfg.ready_file, {"node_id": node_id, "grpc": node.address,
                                         "metrics_port": metrics_port, "pid": os.getpid()})
            removed = node.wait_removed()
            await sup.wait(stop.wait(), removed)
            if node.handoff.released.is_set():
                log.info("node %s was removed and has handed off its data: exiting", node_id)
        finally:
            sup.begin_stop()
            await node.stop()
            if metrics is not None:
                await metrics.cleanup()
    sup.check()


def _health(view: MembershipView) -> dict[str, object] | None:
    """What the router's /_abode/health says: None (503) until a node is live; nodes
    whose disk is full answer their writes with 503 and are named here."""
    if not view.live:
        return None
    state: dict[str, object] = {"live_nodes": len(view.live)}
    full = {n: live.disk_full for n, live in view.live_nodes.items() if live.disk_full}
    if full:
        state["disk_full"] = full
    return state


@dataclass(frozen=True, slots=True)
class RouterProcessConfig:
    app: str
    etcd: str
    cluster: str
    router: RouterConfig
    lease_ttl: float
    metrics_port: int | None = None
    ready_file: str | None = None


async def run_router(cfg: RouterProcessConfig, stop: asyncio.Event) -> None:
    """Run one router until ``stop`` is set or a task of it ended (then
    ``SupervisedTaskEnded``: the process exits non-zero, to be restarted)."""
    app = load_app(cfg.app)
    session = await EtcdSession.connect(cfg.etcd, cfg.cluster, cfg.lease_ttl)
    async with Supervisor("router") as sup:
        # A router keeps routing from its last view through an etcd outage: no give-up.
        view = await MembershipView.start(session, tasks=sup)
        registry = new_registry()
        router_metrics = RouterMetrics(registry, view) if cfg.metrics_port is not None else None
        # This router keeps a stream to every live node: the first to see one crash.
        crashes = CrashDetector(session)
        server = RouterServer(
            app, RingPlacement(view), cfg.router, tasks=sup,
            healthy=lambda: _health(view),
            survive_node_loss=lambda: view.replicas > 1, metrics=router_metrics,
            on_node_lost=crashes.suspect,
        )

        async def connect_all(view: MembershipView) -> None:
            # A stream to every live node, so any of them can send frames to this
            # router's sockets (after a failover the new home has not been called yet);
            # none to nodes that are gone.
            live = {view.address_of(node_id) for node_id in view.live}
            await server.transport.retain(live)
            for address in live:
                server.transport.peer(address).connect()

        stop_connecting = view.add_listener(connect_all)
        metrics, metrics_port = await start_metrics(cfg.metrics_port, registry, cfg.router.host)
        lease: Lease | None = None
        keeper: asyncio.Task[None] | None = None

        async def keep_registered() -> None:
            # A lease etcd expired (the router was cut off from etcd for a TTL) is
            # replaced, so nodes see this router again instead of treating it as dead.
            nonlocal lease
            while True:
                assert lease is not None
                await lease.wait_expired()
                log.warning("router %s lost its lease; registering again", server.router_id)

                async def register() -> None:
                    nonlocal lease
                    lease = await session.start_lease(tasks=sup)
                    await session.register_router(server.router_id, lease, address=server.url)

                await until_done(register, what="registering the router", log=log,
                                 first_delay=0.2)
                log.info("router %s registered again with a new lease", server.router_id)

        try:
            await server.start()
            await connect_all(view)
            # Nodes learn of this router (and of its death) from its key on its own lease.
            lease = await session.start_lease(tasks=sup)
            await session.register_router(server.router_id, lease, address=server.url)
            keeper = sup.start("lease-supervision", keep_registered())
            print(f"abode router {server.router_id} serving {cfg.app} at {server.url}",
                  flush=True)
            write_ready(cfg.ready_file, {"url": server.url, "port": server.port,
                                         "router_id": server.router_id,
                                         "metrics_port": metrics_port, "pid": os.getpid()})
            await sup.wait(stop.wait())
        finally:
            sup.begin_stop()
            if keeper is not None:
                keeper.cancel()
                await asyncio.wait([keeper])
            stop_connecting()  # nodes stopping now must not reopen streams we are closing
            await crashes.stop()  # streams closed now are no news of a crash
            await server.stop()
            if lease is not None:
                await lease.revoke()
            await view.stop()
            await session.close()
            if metrics is not None:
                await metrics.cleanup()
    sup.check()
