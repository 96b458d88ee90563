"""A shopping cart per user: one object per cart, one storage key per item.

    curl -X POST localhost:8787/Cart/ada/items -d '{"sku": "apple", "qty": 2}'  -> {"sku": "apple", "qty": 2}
    curl -X PUT localhost:8787/Cart/ada/items/apple -d '{"qty": 5}'             -> {"sku": "apple", "qty": 5}
    curl -X DELETE localhost:8787/Cart/ada/items/apple                          -> {"removed": "apple"}
    curl localhost:8787/Cart/ada                                -> {"items": {"pear": 1}, "count": 1}
    curl -X POST localhost:8787/Cart/ada/checkout               -> {"order": 1, "items": {...}, "count": 1}
    curl localhost:8787/Cart/ada/orders                         -> {"orders": [{"order": 1, ...}]}

Each item is its own key, ``item:<sku>`` -> quantity, so adding one item writes one
small value however big the cart is, and ``storage.list(prefix="item:")`` reads the
cart back in sku order. Checkout records the order and empties the cart inside
``storage.transaction``: either the order exists and the cart is empty, or neither
happened. The same operations are RPC methods (``add``, ``set_quantity``, ``remove``,
``items``, ``checkout``) for edge functions and other objects.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from abode import DurableObject, Request, Response, Transaction

ITEM = "item:"  # item:<sku> -> quantity (int > 0)
ORDER = "order:"  # order:<8-digit number> -> {"order", "items", "count"}
MAX_ITEMS = 100  # distinct skus per cart; below storage's 128 keys per delete() call
MAX_QTY = 999
MAX_SKU = 200


class CartError(ValueError):
    """A request the cart refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class Cart(DurableObject):
    async def fetch(self, request: Request) -> Response:
        method, path = request.method, request.path.rstrip("/") or "/"
        try:
            if (method, path) == ("GET", "/"):
                items = await self.items()
                return Response.json({"items": items, "count": sum(items.values())})
            if (method, path) == ("POST", "/items"):
                body = await _json_body(request)
                sku = body.get("sku")
                qty = await self.add(sku, body.get("qty", 1))
                return Response.json({"sku": sku, "qty": qty})
            if path.startswith("/items/") and method in ("PUT", "DELETE"):
                sku = unquote(path.removeprefix("/items/"))
                if method == "DELETE":
                    if not await self.remove(sku):
                        return Response.json({"error": f"{sku!r} is not in the cart"}, status=404)
                    return Response.json({"removed": sku})
                qty = (await _json_body(request)).get("qty")
                return Response.json({"sku": sku, "qty": await self.set_quantity(sku, qty)})
            if (method, path) == ("POST", "/checkout"):
                order = await self.checkout()
                if order is None:
                    return Response.json({"error": "cart is empty"}, status=409)
                return Response.json(order)
            if (method, path) == ("GET", "/orders"):
                orders = await self.ctx.storage.list(prefix=ORDER)
                return Response.json({"orders": list(orders.values())})
        except CartError as exc:
            return Response.json({"error": str(exc)}, status=exc.status)
        return Response.json({"error": f"no route {method} {path}"}, status=404)

    # -- RPC methods ------------------------------------------------------------------
    async def items(self) -> dict[str, int]:
        """The cart as {sku: quantity}, in sku order."""
        listed = await self.ctx.storage.list(prefix=ITEM)
        return {key.removeprefix(ITEM): qty for key, qty in listed.items()}

    async def add(self, sku: Any, qty: Any = 1) -> int:
        """Add ``qty`` of ``sku``; returns the new quantity."""
        key = _item_key(sku)
        _check_qty(qty, minimum=1)
        current = await self.ctx.storage.get(key, 0)
        if current == 0 and len(await self.ctx.storage.list(prefix=ITEM)) >= MAX_ITEMS:
            raise CartError(f"a cart holds at most {MAX_ITEMS} distinct items", 409)
        if current + qty > MAX_QTY:
            raise CartError(f"at most {MAX_QTY} of one item", 409)
        return await self.set_quantity(sku, current + qty)

    async def set_quantity(self, sku: Any, qty: Any) -> int:
        """Set the quantity of ``sku``; 0 removes it."""
        key = _item_key(sku)
        _check_qty(qty, minimum=0)
        if qty == 0:
            await self.ctx.storage.delete(key)
        else:
            await self.ctx.storage.put(key, qty)
        return qty

    async def remove(self, sku: Any) -> bool:
        """Remove ``sku``; False when it was not in the cart."""
        return await self.ctx.storage.delete(_item_key(sku))

    async def checkout(self) -> dict[str, Any] | None:
        """Turn the cart into an order and empty it, atomically. None if it was empty."""

        async def place_order(txn: Transaction) -> dict[str, Any] | None:
            listed = await txn.list(prefix=ITEM)
            if not listed:
                return None
            number = await txn.get("orders", 0) + 1
            items = {key.removeprefix(ITEM): qty for key, qty in listed.items()}
            order = {"order": number, "items": items, "count": sum(items.values())}
            await txn.put({"orders": number, f"{ORDER}{number:08d}": order})
            await txn.delete(list(listed))
            # Had anything above raised, none of these writes would remain.
            return order

        return await self.ctx.storage.transaction(place_order)


def _item_key(sku: Any) -> str:
    if not isinstance(sku, str) or not 0 < len(sku) <= MAX_SKU:
        raise CartError(f"sku must be a non-empty string of at most {MAX_SKU} characters")
    return ITEM + sku


def _check_qty(qty: Any, *, minimum: int) -> None:
    if isinstance(qty, bool) or not isinstance(qty, int) or not minimum <= qty <= MAX_QTY:
        raise CartError(f"qty must be an integer from {minimum} to {MAX_QTY}")


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = await request.json() if request.body else {}
    except (ValueError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        raise CartError("body must be a JSON object")
    return body
