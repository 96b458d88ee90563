"""examples/tickets.py: a sale that cannot oversell, through a real ``abode dev``."""

from __future__ import annotations

import asyncio
from collections import Counter

from tests.examples.helpers import call, rpc


async def test_300_concurrent_buys_of_100_sell_exactly_100_distinct_tickets(app, http):
    url = f"{app.url}/Tickets/rush"
    results = await asyncio.gather(
        *(call(http, "POST", f"{url}/buy", {"buyer": f"b{i}"}) for i in range(300))
    )
    statuses = Counter(status for status, _ in results)
    assert statuses == {200: 100, 409: 200}, statuses
    tickets = sorted(body["ticket"] for status, body in results if status == 200)
    assert tickets == list(range(1, 101))  # none sold twice, none skipped
    assert all(body == {"sold_out": True} for status, body in results if status == 409)
    assert await call(http, "GET", url) == (200, {"stock": 100, "sold": 100, "remaining": 0})
    assert await rpc(http, app.url, "Tickets/rush/remaining") == 0
    # Each ticket is recorded with the buyer whose request got it.
    buyers = {body["ticket"]: f"b{i}" for i, (status, body) in enumerate(results) if status == 200}
    status, body = await call(http, "GET", f"{url}/tickets/57")
    assert (status, body) == (200, {"ticket": 57, "buyer": buyers[57]})
    assert (await call(http, "GET", f"{url}/tickets/101"))[0] == 404


async def test_setup_sets_the_stock_once_and_only_before_the_first_sale(app, http):
    url = f"{app.url}/Tickets/gig"
    assert await call(http, "POST", f"{url}/setup", {"stock": 2}) == (
        200, {"stock": 2, "sold": 0, "remaining": 2})
    assert await call(http, "POST", f"{url}/setup", {"stock": 50}) == (
        409, {"error": "already set up", "stock": 2})
    assert await rpc(http, app.url, "Tickets/gig/remaining") == 2
    assert await call(http, "POST", f"{url}/buy") == (200, {"ticket": 1})
    assert await call(http, "POST", f"{url}/buy") == (200, {"ticket": 2})
    assert await call(http, "POST", f"{url}/buy") == (409, {"sold_out": True})

    # An event sold from the default stock is fixed at it.
    other = f"{app.url}/Tickets/walk-in"
    assert await call(http, "POST", f"{other}/buy") == (200, {"ticket": 1})
    status, body = await call(http, "POST", f"{other}/setup", {"stock": 5})
    assert (status, body["stock"]) == (409, 100)

    for bad in ({"stock": -1}, {"stock": "10"}, {"stock": True}, {}, [1]):
        status, _ = await call(http, "POST", f"{app.url}/Tickets/bad/setup", bad)
        assert status == 400, bad


async def test_no_ticket_is_sold_twice_across_a_crash(app, http):
    url = f"{app.url}/Tickets/durable"
    for n in (1, 2, 3):
        assert await call(http, "POST", f"{url}/buy") == (200, {"ticket": n})
    app.restart()  # SIGKILL, then start again on the same data dir
    url = f"{app.url}/Tickets/durable"
    assert await call(http, "POST", f"{url}/buy") == (200, {"ticket": 4})
    assert (await call(http, "GET", url))[1]["remaining"] == 96


async def test_http_and_rpc_buyers_share_one_stock(app, http):
    await call(http, "POST", f"{app.url}/Tickets/mixed/setup", {"stock": 40})
    results = await asyncio.gather(
        *(rpc(http, app.url, "Tickets/mixed/buy", f"r{i}") for i in range(30)),
        *(call(http, "POST", f"{app.url}/Tickets/mixed/buy") for _ in range(30)),
    )
    by_rpc = [t for t in results[:30] if t is not None]
    by_http = [body["ticket"] for status, body in results[30:] if status == 200]
    assert sorted(by_rpc + by_http) == list(range(1, 41))
    assert results[:30].count(None) + sum(s == 409 for s, _ in results[30:]) == 20
    assert await rpc(http, app.url, "Tickets/mixed/status") == {
        "stock": 40, "sold": 40, "remaining": 0}
