"""Objects for the replication tests (tests/replication) and bench/replication.py.

Every answer carries ``pid``, the node process that ran the event, so a test can
tell which node was the object's home.

- ``Ledger``: ``POST /Ledger/{name}?op=ID`` applies operation ID: the counter goes up
  by one and ``op:ID`` records the value it got. The answer is the new value. ``GET``
  returns the counter and every applied operation (``{"value", "ops": {id: value}}``),
  so a test can compare the final state with what the clients were told.
  ``&hold_ms=N`` makes the POST wait N ms between reading the counter and writing it,
  and a ``GET ?op=ID&hold_ms=N`` wait between reading it and answering (events that
  span a pause of their node); each first creates the file
  ``$ABODE_TEST_RECORD_DIR/hold-{op}``, so a test knows the event is running.
- ``Alarmist``: ``POST /Alarmist/{name}?in_ms=N`` sets the alarm N ms from now;
  ``alarm()`` records which process fired it and when. ``GET`` reports both.
- ``Chat``: a room of hibernatable WebSockets (``/Chat/{name}/ws?user=U``). Each text
  message is stored and sent to every socket of the room as
  ``{"seq", "user", "text", "pid"}``. The sender's name rides in the attachment, so
  the room keeps nothing in memory and may be evicted between messages.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

from abode import DurableObject, Request, Response, WebSocket

OP = "op:"


class Ledger(DurableObject):
    async def fetch(self, request: Request) -> Response:
        storage = self.ctx.storage
        if request.method == "POST":
            op = request.query.get("op", "")
            value = await storage.get("value", 0) + 1
            await _hold(request)
            puts: dict[str, Any] = {"value": value}
            if op:
                # An operation applied twice would show as a second value for its id;
                # the counter would then exceed the number of recorded operations.
                puts[OP + op] = value
            await storage.put(puts)
            return Response.json({"value": value, "pid": os.getpid()})
        if request.path.rstrip("/") == "/ops":
            ops = await storage.list(prefix=OP)
            return Response.json({
                "value": await storage.get("value", 0),
                "ops": {k[len(OP):]: v for k, v in ops.items()},
                "pid": os.getpid(),
            })
        value = await storage.get("value", 0)
        await _hold(request)
        return Response.json({"value": value, "pid": os.getpid()})


async def _hold(request: Request) -> None:
    if hold := int(request.query.get("hold_ms", "0")):
        directory = os.environ.get("ABODE_TEST_RECORD_DIR")
        if directory:
            Path(directory, f"hold-{request.query.get('op', '')}").write_text(str(os.getpid()))
        await asyncio.sleep(hold / 1000)


class Alarmist(DurableObject):
    async def fetch(self, request: Request) -> Response:
        storage = self.ctx.storage
        if request.method == "POST":
            at = int(time.time() * 1000) + int(request.query.get("in_ms", "1000"))
            await storage.set_alarm(at)
            await storage.put({"due": at, "set_by": os.getpid()})
        return Response.json({
            "due": await storage.get("due"),
            "set_by": await storage.get("set_by"),
            "fired": await storage.get("fired", []),
            "alarm": await storage.get_alarm(),
            "pid": os.getpid(),
        })

    async def alarm(self, info: Any) -> None:
        fired = await self.ctx.storage.get("fired", [])
        fired.append({"pid": os.getpid(), "at": int(time.time() * 1000),
                      "retry": info.retry_count})
        await self.ctx.storage.put("fired", fired)


class Chat(DurableObject):
    async def fetch(self, request: Request) -> Response:
        if request.is_websocket_upgrade:
            user = request.query.get("user", "anon")
            resp = self.ctx.accept_websocket(request, tags=["room"])
            resp.websocket.serialize_attachment({"user": user})
            return resp
        return Response.json({
            "seq": await self.ctx.storage.get("seq", 0),
            "sockets": len(self.ctx.get_websockets()),
            "pid": os.getpid(),
        })

    async def websocket_message(self, ws: WebSocket, message: str | bytes) -> None:
        if not isinstance(message, str):
            return
        seq = await self.ctx.storage.get("seq", 0) + 1
        await self.ctx.storage.put("seq", seq)
        user = (ws.deserialize_attachment() or {}).get("user", "anon")
        text = json.dumps({"seq": seq, "user": user, "text": message, "pid": os.getpid()})
        for peer in self.ctx.get_websockets("room"):
            peer.send(text)
