"""``abode dev``: one node and one router in one process, talking real gRPC on loopback."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

from abode.cluster.app import load_app
from abode.cluster.cli._common import metrics_url, start_metrics, write_ready
from abode.cluster.metrics import new_registry
from abode.cluster.placement import StaticPlacement
from abode.cluster.supervisor import Supervisor
from abode.node._dispatch import PeerPool
from abode.node._fence import StaticFence
from abode.node._metrics import NodeMetrics
from abode.node._ownership import Ownership
from abode.node._runtime import RuntimeConfig
from abode.node._server import NodeConfig, NodeServer
from abode.router import RouterConfig, RouterServer
from abode.router._metrics import RouterMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DevConfig:
    app: str
    port: int = 8787
    host: str = "127.0.0.1"
    data: str = ".abode"
    runtime: RuntimeConfig = RuntimeConfig()
    max_body: int = 32 * 1024 * 1024
    ready_file: str | None = None
    metrics_port: int | None = None
    storage_scan_interval: float = 60.0


async def run_dev(cfg: DevConfig, stop: asyncio.Event,
                  started: Callable[[RouterServer, dict[str, object]], None] | None = None,
                  ) -> None:
    """Run until ``stop`` is set or a task ended (then ``SupervisedTaskEnded``);
    ``started`` hears of the router and its ready info (the reloader keeps the ports
    and closes sockets with 1012 through it)."""
    app = load_app(cfg.app)
    runtime = cfg.runtime
    # One registry serves both halves: abode_node_* and abode_router_* families.
    registry = new_registry()
    node_metrics = router_metrics = None
    if cfg.metrics_port is not None:
        node_metrics = NodeMetrics(registry, storage_scan_interval=cfg.storage_scan_interval)
        router_metrics = RouterMetrics(registry)
    metrics, metrics_port = await start_metrics(
        cfg.metrics_port, registry, cfg.host,
        usage=node_metrics.usage if node_metrics is not None else None,
    )
    url = metrics_url(cfg.host, metrics_port) if metrics is not None else ""
    async with Supervisor("abode dev") as sup:
        # One node, home for every object and never fenced: said here, not defaulted.
        node = NodeServer(app, NodeConfig("dev", os.path.join(cfg.data, "dev"), runtime=runtime),
                          fence=StaticFence(), ownership=Ownership(), peers=PeerPool("dev"),
                          replicate=None, tasks=sup)
        router: RouterServer | None = None
        try:
            await node.start(metrics_url=url)
            if node_metrics is not None:
                node_metrics.bind(node)
                print(f"abode dev: metrics at {url}", flush=True)
            router = RouterServer(
                app,
                StaticPlacement(node.address),  # known once the node listens
                RouterConfig(cfg.host, cfg.port, cfg.max_body, runtime.call_timeout),
                tasks=sup,
                healthy=lambda: {"disk_full": {"dev": node.store.full}} if node.store.full else {},
                metrics=router_metrics,
            )
            await router.start()
            print(
                f"abode dev: serving {cfg.app} at {router.url} "
                f"(namespaces: {', '.join(app.namespaces) or 'none'}; data in {cfg.data})",
                flush=True,
            )
            info: dict[str, object] = {"url": router.url, "port": router.port,
                                       "grpc": node.address, "metrics_port": metrics_port,
                                       "pid": os.getpid()}
            write_ready(cfg.ready_file, info)
            if started is not None:
                started(router, info)
            await sup.wait(stop.wait())
            log.info("shutting down")
        finally:
            sup.begin_stop()
            if router is not None:
                await router.stop()
            await node.stop()
            if metrics is not None:
                await metrics.cleanup()
    sup.check()
