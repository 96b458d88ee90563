"""examples/cart.py: a cart per user with per-item keys and an atomic checkout."""

from __future__ import annotations

import asyncio

from tests.examples.helpers import call, rpc


async def test_add_update_remove_list_and_checkout(app, http):
    url = f"{app.url}/Cart/ada"
    assert await call(http, "GET", url) == (200, {"items": {}, "count": 0})
    assert await call(http, "POST", f"{url}/items", {"sku": "pear", "qty": 2}) == (
        200, {"sku": "pear", "qty": 2})
    assert await call(http, "POST", f"{url}/items", {"sku": "apple"}) == (
        200, {"sku": "apple", "qty": 1})
    assert await call(http, "POST", f"{url}/items", {"sku": "pear", "qty": 3}) == (
        200, {"sku": "pear", "qty": 5})
    assert await call(http, "PUT", f"{url}/items/fig%20jam", {"qty": 4}) == (
        200, {"sku": "fig jam", "qty": 4})
    # Listed by prefix, in key order.
    status, body = await call(http, "GET", url)
    assert status == 200
    assert list(body["items"].items()) == [("apple", 1), ("fig jam", 4), ("pear", 5)]
    assert body["count"] == 10

    assert await call(http, "DELETE", f"{url}/items/apple") == (200, {"removed": "apple"})
    assert (await call(http, "DELETE", f"{url}/items/apple"))[0] == 404
    assert await call(http, "PUT", f"{url}/items/pear", {"qty": 0}) == (
        200, {"sku": "pear", "qty": 0})
    assert await call(http, "GET", url) == (200, {"items": {"fig jam": 4}, "count": 4})

    order = {"order": 1, "items": {"fig jam": 4}, "count": 4}
    assert await call(http, "POST", f"{url}/checkout") == (200, order)
    assert await call(http, "GET", url) == (200, {"items": {}, "count": 0})
    assert await call(http, "POST", f"{url}/checkout") == (409, {"error": "cart is empty"})

    await call(http, "POST", f"{url}/items", {"sku": "kiwi", "qty": 7})
    assert (await call(http, "POST", f"{url}/checkout"))[1]["order"] == 2
    status, body = await call(http, "GET", f"{url}/orders")
    assert status == 200
    assert body["orders"] == [order, {"order": 2, "items": {"kiwi": 7}, "count": 7}]

    # Carts are per user: bob's is untouched by all of the above.
    assert await call(http, "GET", f"{app.url}/Cart/bob") == (200, {"items": {}, "count": 0})


async def test_concurrent_adds_lose_no_update_and_checkout_takes_all_of_them(app, http):
    url = f"{app.url}/Cart/busy"
    results = await asyncio.gather(
        *(call(http, "POST", f"{url}/items", {"sku": f"sku{i % 5}", "qty": 1}) for i in range(100))
    )
    assert all(status == 200 for status, _ in results)
    expected = {f"sku{i}": 20 for i in range(5)}
    assert await rpc(http, app.url, "Cart/busy/items") == expected
    # Adds racing a checkout land either in the order or in the cart afterwards,
    # never in both and never nowhere.
    racing = [call(http, "POST", f"{url}/items", {"sku": "late", "qty": 1}) for _ in range(20)]
    racing.insert(10, call(http, "POST", f"{url}/checkout"))
    results = await asyncio.gather(*racing)
    order = results[10][1]
    assert order["items"].items() >= expected.items()
    left = await rpc(http, app.url, "Cart/busy/items")
    assert order["items"].get("late", 0) + left.get("late", 0) == 20
    assert set(left) <= {"late"}


async def test_invalid_requests_are_refused_without_changing_the_cart(app, http):
    url = f"{app.url}/Cart/strict"
    await call(http, "POST", f"{url}/items", {"sku": "tea", "qty": 2})
    for bad in ({"qty": 1}, {"sku": "", "qty": 1}, {"sku": "tea", "qty": 0},
                {"sku": "tea", "qty": "3"}, {"sku": "tea", "qty": 10_000}, ["tea"]):
        status, body = await call(http, "POST", f"{url}/items", bad)
        assert status == 400 and "error" in body, bad
    assert (await call(http, "POST", f"{url}/items", {"sku": "tea", "qty": 998}))[0] == 409
    assert (await call(http, "PUT", f"{url}/items/tea", {"qty": -1}))[0] == 400
    assert await call(http, "GET", url) == (200, {"items": {"tea": 2}, "count": 2})
    # The RPC methods validate the same way; the caller sees the remote error type.
    status, body = await call(http, "POST", f"{app.url}/rpc/Cart/strict/add", ["tea", 0])
    assert (status, body["type"]) == (500, "CartError")
