"""Pieces every long-running command shares: ready files and the metrics endpoint."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


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
    port: int | None,
    registry: CollectorRegistry,
    host: str = "127.0.0.1",
    usage: Callable[[float | None], dict[str, Any]] | None = None,
) -> tuple[web.AppRunner | None, int]:
    """Serve ``/metrics`` (Prometheus text of ``registry``, the process's own, never
    the global one) on ``port``; None: no endpoint, 0: any port.

    With ``usage`` (a node's), ``/usage[?since=UNIX_SECONDS]`` answers per-namespace
    usage as JSON for ``abode usage``.
    """
    if port is None:
        return None, 0

    async def metrics(request: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def usage_json(request: web.Request) -> web.Response:
        assert usage is not None
        raw = request.query.get("since")
        try:
            since = float(raw) if raw else None
        except ValueError:
            return web.json_response({"error": "since is Unix seconds"}, status=400)
        return web.json_response(usage(since))

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    if usage is not None:
        app.router.add_get("/usage", usage_json)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, bound


def host_of(address: str) -> str:
    """The host of ``HOST:PORT`` (IPv6 brackets removed); empty means every interface."""
    host = address.rsplit(":", 1)[0].strip("[]")
    return host or "0.0.0.0"


def metrics_url(host: str, port: int) -> str:
    """The URL of the metrics endpoint on ``host`` (as peers reach it) and ``port``."""
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/metrics"
