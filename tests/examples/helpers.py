"""Small HTTP helpers shared by the example tests."""

from __future__ import annotations

from typing import Any

import aiohttp

# Every example plus an /rpc/... bridge, so tests reach RPC methods over HTTP.
APP = "tests.examples.rpc_app"


async def call(
    http: aiohttp.ClientSession, method: str, url: str, json: Any = None
) -> tuple[int, Any]:
    """One request; returns (status, decoded JSON body)."""
    async with http.request(method, url, json=json) as resp:
        return resp.status, await resp.json(content_type=None)


async def rpc(http: aiohttp.ClientSession, base: str, target: str, *args: Any) -> Any:
    """``await env.<ns>.get_by_name(name).<method>(*args)`` through the test app's edge."""
    status, body = await call(http, "POST", f"{base}/rpc/{target}", list(args))
    assert status == 200, body
    return body["result"]
