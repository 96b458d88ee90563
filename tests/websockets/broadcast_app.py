"""Test app for broadcasts to large rooms: ``/Hall/{name}/ws?user=U``.

``say:TEXT`` sends ``{"n", "text"}`` to every socket of the hall (n counts the
broadcasts, stored); ``count`` answers ``{"sockets": N}`` to the sender. Closes are
not recorded, so thousands of sockets leave cheaply. ``GET /Hall/{name}?bytes=N``
answers a body of N bytes; ``POST /Hall/{name}?size=S&times=N`` sends a text of S
characters to every socket N times.
"""

from __future__ import annotations

import json

from abode import DurableObject, Request, Response, WebSocket


class Hall(DurableObject):
    async def fetch(self, request: Request) -> Response:
        if request.method == "POST":
            sockets = self.ctx.get_websockets("hall")
            text = "m" * int(request.query.get("size", "1"))
            for _ in range(int(request.query.get("times", "1"))):
                for peer in sockets:
                    peer.send(text)
            return Response.json({"sockets": len(sockets)})
        if "bytes" in request.query:
            return Response(b"x" * int(request.query["bytes"]))
        if not request.is_websocket_upgrade:
            return Response.json({"sockets": len(self.ctx.get_websockets())})
        return self.ctx.accept_websocket(request, tags=["hall"])

    async def websocket_message(self, ws: WebSocket, message: str | bytes) -> None:
        if not isinstance(message, str):
            return
        cmd, _, arg = message.partition(":")
        if cmd == "say":
            n = await self.ctx.storage.get("n", 0) + 1
            await self.ctx.storage.put("n", n)
            text = json.dumps({"n": n, "text": arg})
            for peer in self.ctx.get_websockets("hall"):
                peer.send(text)
        elif cmd == "count":
            ws.send(json.dumps({"sockets": len(self.ctx.get_websockets())}))
