"""``abode dev``: one node and one router in one process, talking real gRPC on loopback."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass

from cluster.app import load_app
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
    idle_timeout: float = 30.0
    max_queue: int = 1000
    max_body: int = 32 * 1024 * 1024
    call_timeout: float = 30.0
    max_active_objects: int = 10_000
    alarm_retry_base: float = 2.0
    ready_file: str | None = None


async def run_dev(cfg: DevConfig, stop: asyncio.Event) -> None:
    app = load_app(cfg.app)
    runtime = RuntimeConfig(
        idle_timeout=cfg.idle_timeout,
        max_queue=cfg.max_queue,
        call_timeout=cfg.call_timeout,
        max_active_objects=cfg.max_active_objects,
        alarm_first_retry=cfg.alarm_retry_base,
    )
    node = NodeServer(app, NodeConfig("dev", os.path.join(cfg.data, "dev"), runtime=runtime))
    await node.start()
    router = RouterServer(
        app,
        StaticPlacement(node.address),
        RouterConfig(cfg.host, cfg.port, cfg.max_body, cfg.call_timeout),
    )
    try:
        await router.start()
        print(
            f"abode dev: serving {cfg.app} at {router.url} "
            f"(namespaces: {', '.join(app.namespaces) or 'none'}; data in {cfg.data})",
            flush=True,
        )
        if cfg.ready_file:
            _write_ready(cfg.ready_file, {"url": router.url, "port": router.port,
                                          "grpc": node.address, "pid": os.getpid()})
        await stop.wait()
        log.info("shutting down")
    finally:
        await router.stop()
        await node.stop()


def _write_ready(path: str, info: dict[str, object]) -> None:
    # Write then rename, so a reader never sees half a file.
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(info, f)
    os.replace(tmp, path)
