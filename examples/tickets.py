"""A ticket sale that cannot oversell: one object per event owns its stock.

Two stateless servers that both read "1 left" both sell it. Here every sale for an
event goes to the same object, and the object runs one request at a time (awaits
included), so "read sold, check, write sold + 1" needs no lock and no conditional
write.

    curl -X POST localhost:8787/Tickets/gig/setup -d '{"stock": 3}'  -> {"stock": 3, ...}
    curl -X POST localhost:8787/Tickets/gig/buy -d '{"buyer": "ada"}' -> {"ticket": 1}
    curl localhost:8787/Tickets/gig                    -> {"stock": 3, "sold": 1, "remaining": 2}
    curl localhost:8787/Tickets/gig/tickets/1          -> {"ticket": 1, "buyer": "ada"}

When the stock is gone, ``buy`` answers 409 ``{"sold_out": true}``. An event that was
never set up has ``DEFAULT_STOCK`` tickets; ``setup`` works once, before the first sale.
Other objects and edge functions use the RPC methods:
``await env.Tickets.get_by_name("gig").buy("ada")`` (the ticket number, or None when
sold out) and ``.remaining()``.
"""

from __future__ import annotations

from abode import DurableObject, Request, Response

DEFAULT_STOCK = 100
MAX_STOCK = 1_000_000


class Tickets(DurableObject):
    async def fetch(self, request: Request) -> Response:
        route = (request.method, request.path.rstrip("/") or "/")
        if route == ("POST", "/buy"):
            return await self._buy(request)
        if route == ("POST", "/setup"):
            return await self._setup(request)
        if route == ("GET", "/"):
            return Response.json(await self.status())
        if request.method == "GET" and request.path.startswith("/tickets/"):
            return await self._ticket(request.path.removeprefix("/tickets/"))
        return Response.json(
            {"error": "POST /buy, POST /setup {\"stock\": n}, GET /, GET /tickets/{n}"},
            status=404,
        )

    # -- RPC methods: any public async method is callable through a stub ---------------
    async def buy(self, buyer: str = "") -> int | None:
        """Sell the next ticket to ``buyer``; its number, or None when sold out."""
        stock = await self._stock()
        sold = await self.ctx.storage.get("sold", 0)
        if sold >= stock:
            return None
        # Nothing else runs in this object between the read above and these writes,
        # so two buyers can never both get ticket number `sold + 1`.
        ticket = sold + 1
        await self.ctx.storage.put({
            "sold": ticket,
            # Fix the stock at the first sale: a later /setup cannot change it.
            "stock": stock,
            # Zero-padded so storage.list(prefix="ticket:") returns tickets in order.
            f"ticket:{ticket:08d}": str(buyer),
        })
        return ticket

    async def remaining(self) -> int:
        return await self._stock() - await self.ctx.storage.get("sold", 0)

    async def status(self) -> dict[str, int]:
        stock = await self._stock()
        sold = await self.ctx.storage.get("sold", 0)
        return {"stock": stock, "sold": sold, "remaining": stock - sold}

    # -- handlers -------------------------------------------------------------------------
    async def _buy(self, request: Request) -> Response:
        body = await _json_body(request)
        if body is None:
            return Response.json({"error": "body must be a JSON object"}, status=400)
        ticket = await self.buy(str(body.get("buyer", "")))
        if ticket is None:
            return Response.json({"sold_out": True}, status=409)
        return Response.json({"ticket": ticket})

    async def _setup(self, request: Request) -> Response:
        body = await _json_body(request)
        stock = body.get("stock") if body is not None else None
        if isinstance(stock, bool) or not isinstance(stock, int) or not 0 <= stock <= MAX_STOCK:
            return Response.json(
                {"error": f"body must be {{\"stock\": n}} with 0 <= n <= {MAX_STOCK}"}, status=400
            )
        existing = await self.ctx.storage.get("stock")
        if existing is not None:
            return Response.json({"error": "already set up", "stock": existing}, status=409)
        await self.ctx.storage.put("stock", stock)
        return Response.json(await self.status())

    async def _ticket(self, number: str) -> Response:
        if not number.isdigit():
            return Response.json({"error": "ticket numbers are integers"}, status=400)
        buyer = await self.ctx.storage.get(f"ticket:{int(number):08d}")
        if buyer is None:
            return Response.json({"error": f"no ticket {int(number)}"}, status=404)
        return Response.json({"ticket": int(number), "buyer": buyer})

    async def _stock(self) -> int:
        return await self.ctx.storage.get("stock", DEFAULT_STOCK)


async def _json_body(request: Request) -> dict | None:
    """The request's JSON object; ``{}`` for an empty body, None when malformed."""
    if not request.body:
        return {}
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None
