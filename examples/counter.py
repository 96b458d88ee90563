"""A counter per name: the smallest durable object.

    curl -X POST localhost:8787/Counter/clicks/increment   -> {"value": 1}
    curl localhost:8787/Counter/clicks                     -> {"value": 1}
"""

from abode import DurableObject, Request, Response


class Counter(DurableObject):
    async def fetch(self, request: Request) -> Response:
        if request.method == "POST" and request.path in ("/", "/increment"):
            return Response.json({"value": await self.add(1)})
        if request.method == "GET":
            return Response.json({"value": await self.ctx.storage.get("value", 0)})
        return Response.json({"error": "POST /increment or GET /"}, status=405)

    async def add(self, n: int = 1) -> int:
        value = await self.ctx.storage.get("value", 0) + n
        await self.ctx.storage.put("value", value)
        return value

    async def value(self) -> int:
        return await self.ctx.storage.get("value", 0)
