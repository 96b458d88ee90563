"""examples/edge.py: an edge function with its own API in front of default routing."""

from __future__ import annotations

import asyncio
from collections import Counter

from tests.examples.helpers import call


async def test_api_reaches_counters_over_rpc_and_the_rest_is_default_routed(dev_factory, http):
    dev = dev_factory("examples.edge")
    api = f"{dev.url}/api/visits"
    assert await call(http, "POST", f"{api}/home") == (200, {"page": "home", "visits": 1})
    assert await call(http, "POST", f"{api}/home") == (200, {"page": "home", "visits": 2})
    assert await call(http, "POST", f"{api}/about") == (200, {"page": "about", "visits": 1})
    assert await call(http, "GET", f"{api}/home") == (200, {"page": "home", "visits": 2})
    assert (await call(http, "DELETE", f"{api}/home"))[0] == 405
    assert (await call(http, "GET", f"{dev.url}/api/nothing"))[0] == 404

    # The edge reached the same object that default routing addresses by name.
    assert await call(http, "GET", f"{dev.url}/Counter/visits:home") == (200, {"value": 2})
    assert await call(http, "POST", f"{dev.url}/Counter/x/increment") == (200, {"value": 1})
    status, body = await call(http, "GET", f"{dev.url}/Nope/x")
    assert status == 404 and "Nope" in body["error"]
    assert (await call(http, "GET", f"{dev.url}/Counter/id/zz"))[0] == 400
    async with http.get(f"{dev.url}/_abode/health") as resp:  # never sent to the edge
        assert resp.status == 200


async def test_api_is_rate_limited_per_client_by_an_object(dev_factory, http):
    dev = dev_factory("examples.edge")

    async def visit(client):
        async with http.post(f"{dev.url}/api/visits/sale", headers={"X-Client-Id": client}) as r:
            return r.status, r.headers.get("Retry-After")

    # 300 at once against 100 per second: at least 100 must be refused even if the
    # burst spans two windows; the refused ones say when to come back.
    results = await asyncio.gather(*(visit("greedy") for _ in range(300)))
    statuses = Counter(status for status, _ in results)
    assert set(statuses) == {200, 429} and statuses[429] >= 100, statuses
    assert all(ra == "1" for status, ra in results if status == 429)
    # Refused requests never reached the counter.
    assert await call(http, "GET", f"{dev.url}/api/visits/sale") == (
        200, {"page": "sale", "visits": statuses[200]})
    # Another client is not affected by the greedy one.
    assert (await visit("polite"))[0] == 200
