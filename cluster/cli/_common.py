"""Pieces every long-running command shares: ready files and the metrics endpoint."""

from __future__ import annotations

import json
import os

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest


def write_ready(path: str | None, info: dict[str, object]) -> None:
    """Tell a supervisor (tests, ``abode up``) the process serves, and on which ports."""
    if not path:
        return
    # Write then rename, so a reader never sees half a file.
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(info, f)
    os.replace(tmp, path)


async def start_metrics(
    port: int | None, host: str = "127.0.0.1", registry: CollectorRegistry = REGISTRY
) -> tuple[web.AppRunner | None, int]:
    """Serve ``/metrics`` (Prometheus text) on ``port``; None: no endpoint, 0: any port."""
    if port is None:
        return None, 0

    async def metrics(request: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, bound
