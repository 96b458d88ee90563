"""Small HTTP helpers shared by the example tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp

from examples.doc import replay

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


async def edit_until_applied(
    http: aiohttp.ClientSession, url: str, client: str, seq: int,
    make_edit: Callable[[str], dict[str, Any]], state: dict[str, Any],
) -> int:
    """Send one edit made against ``state``; on 409, re-make it against the version and
    text the answer carries and retry. Updates ``state`` to the text after the edit."""
    for _ in range(1000):
        edit = {"client": client, "seq": seq, "base": state["version"], **make_edit(state["text"])}
        status, body = await call(http, "POST", f"{url}/edit", edit)
        if status == 200:
            assert "duplicate" not in body and body["version"] == state["version"] + 1
            # The edit went in right on top of the text it was made against.
            state.update(version=body["version"], text=replay([edit], state["text"]))
            return body["version"]
        assert status == 409, body
        assert body["error"] == "stale base version" and body["version"] > state["version"]
        state.update(version=body["version"], text=body["text"])
    raise AssertionError(f"{client} made no progress in 1000 attempts")
