"""Test app for metrics: each route makes one kind of thing happen that a metric counts.

``Meter`` (one per name):
    POST /put?keys=N&size=S   store N keys of S bytes each (keys ``k0000``...)
    GET  /boom                raise (an event error, a 500)
    GET  /abort               ctx.abort(): the instance is reset
    POST /alarm?in_ms=T       set an alarm that succeeds
    POST /alarm?in_ms=T&fail=1  set an alarm whose handler raises (retried)
    GET  /ws                  accept a WebSocket; every message is echoed
    GET  /state               alarm runs recorded in storage
    RPC  ping()               answers "pong"
``Caller``: GET /call?target=NAME calls ``Meter(NAME).ping()`` (an RPC event on Meter).
"""

from __future__ import annotations

import time

from abode import AlarmInfo, DurableObject, Request, Response, WebSocket


class Meter(DurableObject):
    async def fetch(self, request: Request) -> Response:
        storage = self.ctx.storage
        q = request.query
        op = request.path.strip("/")
        if op == "put":
            size = int(q.get("size", 10))
            await storage.put({f"k{i:04d}": "x" * size for i in range(int(q.get("keys", 1)))})
            return Response.json({"ok": True})
        if op == "boom":
            raise RuntimeError("boom")
        if op == "abort":
            self.ctx.abort("metrics test")
        if op == "alarm":
            await storage.put("fail", bool(q.get("fail")))
            await storage.set_alarm(int(time.time() * 1000) + int(q.get("in_ms", 0)))
            return Response.json({"ok": True})
        if op == "ws":
            return self.ctx.accept_websocket(request)
        if op == "state":
            return Response.json({"runs": await storage.get("runs", 0)})
        return Response.json({"error": "no such route"}, status=404)

    async def alarm(self, info: AlarmInfo) -> None:
        # Counted outside the event's writes: a raising alarm discards what it wrote.
        if await self.ctx.storage.get("fail"):
            raise RuntimeError(f"alarm fails (retry {info.retry_count})")
        await self.ctx.storage.put("runs", await self.ctx.storage.get("runs", 0) + 1)

    async def websocket_message(self, ws: WebSocket, message: str | bytes) -> None:
        ws.send(message)

    async def ping(self) -> str:
        return "pong"


class Caller(DurableObject):
    async def fetch(self, request: Request) -> Response:
        answer = await self.env.Meter.get_by_name(request.query["target"]).ping()
        return Response.json({"answer": answer})

