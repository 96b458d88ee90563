"""Test app for WebSockets: one ``Room`` object per name that says what it sees.

Upgrade at ``/Room/{name}/ws?user=U[&tags=a,b][&ntags=N]``; the socket is tagged
``user:U`` (plus ``room`` and the given tags) and its attachment holds ``{"user": U}``.
``?accept=no`` answers a plain 200 instead; ``?fake101=1`` returns a 101 without
accepting. Messages are commands (see ``websocket_message``); every reply is JSON.
``GET /Room/{name}/state`` reports activations, open sockets and recorded closes.
"""

from __future__ import annotations

import json
from typing import Any

from abode import DurableObject, Request, Response, WebSocket


class Room(DurableObject):
    def __init__(self, ctx: Any, env: Any) -> None:
        super().__init__(ctx, env)
        self.activations = 0
        ctx.block_concurrency_while(self._count_activation)

    async def _count_activation(self) -> None:
        self.activations = await self.ctx.storage.get("activations", 0) + 1
        await self.ctx.storage.put("activations", self.activations)

    async def fetch(self, request: Request) -> Response:
        q = request.query
        if request.path == "/state":
            return Response.json({
                "activations": self.activations,
                "sockets": sorted(_user(ws) for ws in self.ctx.get_websockets()),
                "closes": await self.ctx.storage.get("closes", []),
                "boom": await self.ctx.storage.get("boom"),
            })
        if not request.is_websocket_upgrade or q.get("accept") == "no":
            return Response.json({"plain": True, "path": request.path})
        if q.get("fake101"):
            return Response(status=101)
        user = q.get("user", "anon")
        tags = [f"user:{user}", "room"]
        tags += [t for t in q.get("tags", "").split(",") if t]
        tags += [f"t{i}" for i in range(int(q.get("ntags", 0)))]
        resp = self.ctx.accept_websocket(request, tags=tags)
        resp.websocket.serialize_attachment({"user": user})
        return resp

    async def websocket_message(self, ws: WebSocket, message: str | bytes) -> None:
        if isinstance(message, bytes):
            ws.send(message[::-1])
            return
        cmd, _, arg = message.partition(":")
        if cmd == "who":
            at = self.ctx.get_websocket_auto_response_timestamp(ws)
            ws.send(_reply(
                "who", arg,
                user=_user(ws),
                tags=self.ctx.get_tags(ws),
                tagged=len(self.ctx.get_websockets(f"user:{_user(ws)}")),
                peers=len(self.ctx.get_websockets("room")),
                activations=self.activations,
                auto_at=None if at is None else at.timestamp(),
            ))
        elif cmd == "say":  # to every socket of the room, in one order
            n = await self.ctx.storage.get("said", 0) + 1
            await self.ctx.storage.put("said", n)
            text = _reply("said", arg, n=n, user=_user(ws))
            for peer in self.ctx.get_websockets("room"):
                peer.send(text)
        elif cmd == "boom":  # outputs and writes of a raising event are dropped
            ws.send(_reply("leaked", arg))
            await self.ctx.storage.put("boom", arg)
            raise RuntimeError("boom")
        elif cmd == "rename-boom":  # an attachment set by a raising event is undone
            ws.serialize_attachment({"user": arg})
            raise RuntimeError("boom")
        elif cmd == "close-boom":  # so is a close: the socket stays open
            ws.close(4002, "y")
            raise RuntimeError("boom")
        elif cmd == "big":
            try:
                ws.serialize_attachment({"user": _user(ws), "pad": "x" * 17_000})
            except ValueError as exc:
                ws.send(_reply("big", arg, error=f"ValueError: {exc}", user=_user(ws)))
        elif cmd == "close":
            ws.close(4001, "x")
        elif cmd == "auto":
            self.ctx.set_websocket_auto_response("ping", "pong")
            ws.send(_reply("auto", arg))
        else:
            ws.send(_reply("echo", message))

    async def websocket_close(self, ws: WebSocket, code: int, reason: str, was_clean: bool) -> None:
        closes = await self.ctx.storage.get("closes", [])
        closes.append({
            "user": _user(ws), "code": code, "reason": reason,
            "listed": ws in self.ctx.get_websockets(),
        })
        await self.ctx.storage.put("closes", closes)


def _user(ws: WebSocket) -> str:
    return str((ws.deserialize_attachment() or {}).get("user", "?"))


def _reply(kind: str, arg: str, **fields: Any) -> str:
    return json.dumps({"kind": kind, "arg": arg, **fields})
