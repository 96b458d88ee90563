"""A ticket sale for tests: 100 tickets, one object owns the count (no edge function)."""

from abode import DurableObject, Request, Response

TOTAL = 100


class Tickets(DurableObject):
    async def fetch(self, request: Request) -> Response:
        left = await self.ctx.storage.get("left", TOTAL)
        if request.method == "GET":
            return Response.json({"left": left})
        if left == 0:
            return Response.json({"sold_out": True}, status=409)
        await self.ctx.storage.put("left", left - 1)
        return Response.json({"ticket": TOTAL - left + 1})
