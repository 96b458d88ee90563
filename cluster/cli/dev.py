"""``abode dev``: one node and one router in one process, talking real gRPC on loopback."""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass

from cluster.app import load_app
from cluster.cli._common import write_ready
from cluster.placement import StaticPlacement
from node._runtime import RuntimeConfig
from node._server import NodeConfig, NodeServer
from router import RouterConfig, RouterServer

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


async def run_dev(cfg: DevConfig, stop: asyncio.Event) -> None:
    app = load_app(cfg.app)
    runtime = cfg.runtime
    node = NodeServer(app, NodeConfig("dev", os.path.join(cfg.data, "dev"), runtime=runtime))
    await node.start()
    router = RouterServer(
        app,
        StaticPlacement(node.address),
        RouterConfig(cfg.host, cfg.port, cfg.max_body, runtime.call_timeout),
    )
    try:
        await router.start()
        print(
            f"abode dev: serving {cfg.app} at {router.url} "
            f"(namespaces: {', '.join(app.namespaces) or 'none'}; data in {cfg.data})",
            flush=True,
        )
        write_ready(cfg.ready_file, {"url": router.url, "port": router.port,
                                     "grpc": node.address, "pid": os.getpid()})
        await stop.wait()
        log.info("shutting down")
    finally:
        await router.stop()
        await node.stop()
