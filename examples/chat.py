"""A chat room per name, over hibernatable WebSockets, with a browser page.

    abode dev examples.app           then open http://localhost:8787/ in two browsers

Each room is one ``ChatRoom`` object, so everyone in a room reaches the same process
and sees the messages in the same order. A client joins by opening a WebSocket:

    ws://localhost:8787/ChatRoom/{room}/ws?user=ada

and then sends plain text frames; each one is a chat message. The room sends JSON:

    {"type": "history", "messages": [...], "users": [...]}   once, to the joiner
    {"type": "join",  "user": "ada", "users": [...]}          to everyone
    {"type": "message", "seq": 7, "user": "ada", "text": "hi", "at": 1700000000000}
    {"type": "leave", "user": "ada", "users": [...]}

The last 100 messages are stored (``msg:<seq>``) and sent to every joiner. The user's
name rides in the socket's attachment, so the room keeps no table of its own: the
object may be evicted between messages (hibernation) while every socket stays open,
and it learns who is who again from ``ctx.get_websockets()``. The frame
``{"type":"ping"}`` is answered ``{"type":"pong"}`` by the node without waking the
room (an auto-response), so clients keep connections alive at no cost to the room.

``GET /ChatRoom/{room}/messages`` returns the stored history as JSON. The page itself
is served by ``edge`` below, which passes every other request on to default routing.
"""

from __future__ import annotations

import json
import time
from typing import Any

from abode import DurableObject, Request, Response, WebSocket

HISTORY = 100  # messages kept and replayed to a joiner
MAX_TEXT = 2000  # characters per message
MAX_USER = 32  # characters per user name
MSG = "msg:"  # msg:<12-digit seq> -> one stored message
PING, PONG = '{"type":"ping"}', '{"type":"pong"}'  # answered by the node, room left asleep


class ChatRoom(DurableObject):
    def __init__(self, ctx: Any, env: Any) -> None:
        super().__init__(ctx, env)
        ctx.set_websocket_auto_response(PING, PONG)

    async def fetch(self, request: Request) -> Response:
        path = request.path.rstrip("/") or "/"
        if path == "/ws":
            if not request.is_websocket_upgrade:
                return Response.json({"error": "connect with a WebSocket"}, status=426)
            return await self._join(request)
        if path == "/messages" and request.method == "GET":
            return Response.json({"messages": await self._history()})
        return Response.json({"error": "GET /ws (WebSocket) or GET /messages"}, status=404)

    async def _join(self, request: Request) -> Response:
        user = request.query.get("user", "").strip()[:MAX_USER] or "anonymous"
        resp = self.ctx.accept_websocket(request)
        ws: WebSocket = resp.websocket
        ws.serialize_attachment({"user": user})
        users = self._users()
        ws.send(_dumps({"type": "history", "messages": await self._history(), "users": users}))
        self._broadcast({"type": "join", "user": user, "users": users})
        return resp

    async def websocket_message(self, ws: WebSocket, message: str | bytes) -> None:
        if not isinstance(message, str) or not message.strip():
            return
        seq = await self.ctx.storage.get("seq", 0) + 1
        entry = {
            "type": "message",
            "seq": seq,
            "user": _user(ws),
            "text": message[:MAX_TEXT],
            "at": int(time.time() * 1000),
        }
        await self.ctx.storage.put({"seq": seq, _key(seq): entry})
        if seq > HISTORY:
            await self.ctx.storage.delete(_key(seq - HISTORY))
        self._broadcast(entry)

    async def websocket_close(self, ws: WebSocket, code: int, reason: str, was_clean: bool) -> None:
        # The closed socket is no longer in get_websockets(), so ``users`` leaves it out.
        self._broadcast({"type": "leave", "user": _user(ws), "users": self._users()})

    async def websocket_error(self, ws: WebSocket, error: Exception) -> None:
        self._broadcast({"type": "leave", "user": _user(ws), "users": self._users()})

    async def _history(self) -> list[Any]:
        stored = await self.ctx.storage.list(prefix=MSG, reverse=True, limit=HISTORY)
        return list(reversed(stored.values()))

    def _users(self) -> list[str]:
        return sorted({_user(ws) for ws in self.ctx.get_websockets()})

    def _broadcast(self, event: dict[str, Any]) -> None:
        text = _dumps(event)
        for ws in self.ctx.get_websockets():
            ws.send(text)


def _user(ws: WebSocket) -> str:
    attachment = ws.deserialize_attachment() or {}
    return str(attachment.get("user", "anonymous"))


def _key(seq: int) -> str:
    return f"{MSG}{seq:012d}"


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


async def edge(request: Request, env: Any) -> Response:
    """Serve the page at ``/``; everything else takes the default routing."""
    if request.method == "GET" and request.path in ("/", "/chat"):
        return Response(PAGE, headers={"Content-Type": "text/html; charset=utf-8"})
    return await env.route(request)


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>abode chat</title>
<style>
  body { font: 15px/1.4 system-ui, sans-serif; max-width: 42rem; margin: 2rem auto; padding: 0 1rem; }
  form { display: flex; gap: .5rem; margin: .5rem 0; }
  input { flex: 1; padding: .4rem; font: inherit; }
  #log { border: 1px solid #ccc; border-radius: 4px; height: 24rem; overflow-y: auto; padding: .5rem; }
  #log div { margin: .1rem 0; }
  .note { color: #777; font-style: italic; }
  .user { font-weight: 600; }
  #status { color: #777; font-size: 90%; }
</style>
</head>
<body>
<h1>abode chat</h1>
<form id="join">
  <input id="room" placeholder="room" value="lobby" required>
  <input id="user" placeholder="your name" required>
  <button>Join</button>
</form>
<div id="status">not connected</div>
<div id="log"></div>
<form id="send">
  <input id="text" placeholder="message" autocomplete="off" disabled>
  <button id="sendbtn" disabled>Send</button>
</form>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
let ws = null;

function line(text, cls) {
  const div = document.createElement("div");
  if (cls) div.className = cls;
  div.textContent = text;
  return div;
}

function show(node) {
  const log = $("log");
  log.appendChild(node);
  log.scrollTop = log.scrollHeight;
}

function message(m) {
  const div = line("");
  const who = document.createElement("span");
  who.className = "user";
  who.textContent = m.user + ": ";
  div.appendChild(who);
  div.appendChild(document.createTextNode(m.text));
  div.title = new Date(m.at).toLocaleString();
  return div;
}

function status(users) {
  $("status").textContent = "in " + $("room").value + " with " + users.join(", ");
}

$("user").value = localStorage.getItem("abode-chat-user") || "";

$("join").onsubmit = (e) => {
  e.preventDefault();
  if (ws) ws.close(1000, "switching rooms");
  const room = $("room").value.trim(), user = $("user").value.trim();
  localStorage.setItem("abode-chat-user", user);
  $("log").replaceChildren();
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const url = scheme + "://" + location.host + "/ChatRoom/" + encodeURIComponent(room) +
    "/ws?user=" + encodeURIComponent(user);
  const sock = new WebSocket(url);
  ws = sock;
  sock.onopen = () => { $("text").disabled = false; $("sendbtn").disabled = false; $("text").focus(); };
  sock.onmessage = (ev) => {
    const m = JSON.parse(ev.data);
    if (m.type === "pong") return;
    if (m.type === "history") { m.messages.forEach((x) => show(message(x))); status(m.users); }
    else if (m.type === "message") show(message(m));
    else if (m.type === "join") { show(line(m.user + " joined", "note")); status(m.users); }
    else if (m.type === "leave") { show(line(m.user + " left", "note")); status(m.users); }
  };
  sock.onclose = (ev) => {
    if (ws !== sock) return;
    $("status").textContent = "disconnected (" + ev.code + (ev.reason ? ": " + ev.reason : "") + ")";
    $("text").disabled = true; $("sendbtn").disabled = true;
  };
};

$("send").onsubmit = (e) => {
  e.preventDefault();
  const text = $("text").value;
  if (ws && ws.readyState === WebSocket.OPEN && text.trim()) { ws.send(text); $("text").value = ""; }
};

setInterval(() => { if (ws && ws.readyState === WebSocket.OPEN) ws.send('{"type":"ping"}'); }, 30000);
</script>
</body>
</html>
"""
