"""Client WebSockets at the router, multiplexed onto the node streams.

The client's connection ends here. Its frames go to the home node of the object
that accepted it, on the one stream this router keeps to that node; frames the
object sends come back on the same stream and are matched by socket id.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

from aiohttp import WSMsgType, web

from abode.cluster.errors import Overloaded, Unavailable
from abode.cluster.sockets import (
    ABNORMAL,
    GOING_AWAY,
    SERVICE_RESTART,
    Frame,
    FrameKind,
    SocketOwner,
    new_socket_id,
)
from abode.router._transport import RouterTransport

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 1024 * 1024
TRY_AGAIN_LATER = 1013
# A client's frames wait (in order) at most this long for its object's next home
# after the stream to the old one broke, or while no node can serve the object.
HOLD_SECONDS = 15.0


class ClientSocket:
    __slots__ = ("socket_id", "ws", "owner", "node", "queue", "sender", "closed_by_server",
                 "held", "held_since", "lost_at")

    def __init__(self, socket_id: str) -> None:
        self.socket_id = socket_id
        self.ws: web.WebSocketResponse | None = None
        self.owner: SocketOwner | None = None
        self.node = ""  # address of the node whose stream carries this socket's frames
        self.queue: deque[Frame] = deque()  # frames for the client, in order
        self.sender: asyncio.Task[None] | None = None
        self.closed_by_server = False
        self.held: deque[Frame] = deque()  # frames for the node, waiting for a home
        self.held_since = 0.0
        self.lost_at = 0.0  # when the stream to ``node`` broke (0: it did not)


class SocketHub:
    def __init__(
        self, router_id: str, transport: RouterTransport, *, survive_node_loss: Callable[[], bool]
    ) -> None:
        self.router_id = router_id
        self._transport = transport
        self._sockets: dict[str, ClientSocket] = {}
        # Whether clients' sockets outlive their node (replicas: the next home has them).
        self.survive_node_loss = survive_node_loss
        self._holding: dict[str, ClientSocket] = {}
        self._resender: asyncio.Task[None] | None = None

    @property
    def open_sockets(self) -> int:
        return sum(1 for s in self._sockets.values() if s.ws is not None)

    def expect(self) -> str:
        """A new upgrade request: frames for it may arrive before its 101 is handled."""
        sid = new_socket_id(self.router_id)
        self._sockets[sid] = ClientSocket(sid)
        return sid

    def abandon(self, socket_id: str) -> None:
        self._sockets.pop(socket_id, None)

    async def serve(
        self, request: web.Request, socket_id: str, owner: SocketOwner
    ) -> web.WebSocketResponse:
        cs = self._sockets.get(socket_id) or ClientSocket(socket_id)
        self._sockets[socket_id] = cs
        ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE_BYTES, autoping=True)
        cs.owner = owner
        cs.node = self._transport.home_address(owner.object_id)
        code, reason, clean = ABNORMAL, "", False
        try:
            # Inside the try: a client gone before its 101 must still be closed at the node.
            await ws.prepare(request)
            cs.ws = ws
            if cs.queue:
                self._kick(cs)
            while True:
                msg = await ws.receive()
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    self._to_node(cs, FrameKind.MESSAGE, msg.data)
                elif msg.type == WSMsgType.CLOSE:
                    code, reason, clean = msg.data or ABNORMAL, msg.extra or "", True
                    break
                elif msg.type == WSMsgType.ERROR:
                    self._to_node(cs, FrameKind.ERROR, reason=str(ws.exception()))
                    break
                else:  # CLOSING / CLOSED: we closed it, or the transport dropped
                    break
        finally:
            if not cs.closed_by_server:
                self._to_node(cs, FrameKind.CLOSE, code=code, reason=reason, clean=clean)
            self._sockets.pop(socket_id, None)
            if cs.sender is not None and not cs.sender.done():
                cs.sender.cancel()
        return ws

    def _to_node(self, cs: ClientSocket, kind: FrameKind, data: str | bytes | None = None, *,
                 code: int = 0, reason: str = "", clean: bool = True) -> None:
        assert cs.owner is not None
        if cs.closed_by_server:
            return  # the node ended this socket; it takes nothing more from it
        frame = Frame(cs.socket_id, cs.owner.namespace, cs.owner.object_id, kind, data,
                      code, reason, clean)
        if cs.held or not self._send(cs, frame):
            if not cs.held:
                cs.held_since = time.monotonic()
            cs.held.append(frame)
            self._holding[cs.socket_id] = cs
            if self._resender is None or self._resender.done():
                self._resender = asyncio.get_running_loop().create_task(self._resend())

    def _send(self, cs: ClientSocket, frame: Frame) -> bool:
        """Send now unless the object has no home, or its home is still the node whose
        stream broke (its lease has not lapsed yet): then the frame waits."""
        try:
            address = self._transport.home_address(frame.object_id)
        except Unavailable:
            return False
        if cs.lost_at and address == cs.node and time.monotonic() - cs.lost_at < HOLD_SECONDS:
            return False
        cs.lost_at = 0.0
        try:
            cs.node = self._transport.send_frame(frame)
        except Overloaded as exc:
            # The stream to the node is not draining: end this socket rather than hold
            # its frames without bound. The node hears the close (closes always go).
            log.warning("socket %s: %s; closing it", cs.socket_id, exc)
            assert cs.owner is not None
            self._transport.send_frame(Frame(
                cs.socket_id, cs.owner.namespace, cs.owner.object_id, FrameKind.CLOSE, None,
                TRY_AGAIN_LATER, "overloaded", False))
            if cs.ws is not None:
                self._server_close(cs, TRY_AGAIN_LATER, "overloaded")
            cs.closed_by_server = True
        return True

    async def _resend(self) -> None:
        while self._holding:
            await asyncio.sleep(0.05)
            for cs in list(self._holding.values()):
                while cs.held and self._send(cs, cs.held[0]):
                    cs.held.popleft()
                if cs.held and time.monotonic() - cs.held_since > 2 * HOLD_SECONDS:
                    log.warning("socket %s: no node could take its frames; closing it",
                                cs.socket_id)
                    cs.held.clear()
                    if cs.ws is not None and self._sockets.get(cs.socket_id) is cs:
                        self._server_close(cs, SERVICE_RESTART, "object unavailable")
                if not cs.held:
                    del self._holding[cs.socket_id]

    # -- frames from nodes ----------------------------------------------------------
    def on_frames(self, address: str, frames: list[Frame]) -> None:
        for frame in frames:
            cs = self._sockets.get(frame.socket_id)
            if cs is None:
                continue
            cs.queue.append(frame)
            if cs.ws is not None:
                self._kick(cs)

    def _kick(self, cs: ClientSocket) -> None:
        if cs.sender is None or cs.sender.done():
            cs.sender = asyncio.get_running_loop().create_task(self._drain(cs))

    async def _drain(self, cs: ClientSocket) -> None:
        ws = cs.ws
        assert ws is not None
        while cs.queue:
            frame = cs.queue.popleft()
            try:
                if frame.kind == FrameKind.MESSAGE:
                    if isinstance(frame.data, str):
                        await ws.send_str(frame.data)
                    else:
                        await ws.send_bytes(frame.data or b"")
                elif frame.kind == FrameKind.CLOSE:
                    cs.closed_by_server = True
                    cs.queue.clear()
                    await ws.close(code=frame.code or 1000, message=frame.reason.encode())
            except (ConnectionError, RuntimeError) as exc:
                log.debug("socket %s: send failed: %s", cs.socket_id, exc)
                cs.queue.clear()

    def on_lost(self, address: str) -> None:
        """The stream to a node broke: the node has closed these sockets on its side.

        With replicas, the object's next home holds the sockets' metadata, so the
        client connections stay open and their frames go to that node instead.
        """
        if self.survive_node_loss():
            now = time.monotonic()
            for cs in self._sockets.values():
                if cs.node == address and not cs.lost_at:
                    cs.lost_at = now  # its frames wait for the object's next home
            # So do the ones the broken stream did not send, ahead of any held since.
            unsent: dict[str, list[Frame]] = {}
            for frame in self._transport.take_unsent_frames(address):
                unsent.setdefault(frame.socket_id, []).append(frame)
            for socket_id, frames in unsent.items():
                found = self._sockets.get(socket_id) or self._holding.get(socket_id)
                if found is None:  # its client is gone; its close frame must still go
                    found = ClientSocket(socket_id)
                    found.node, found.lost_at = address, now
                if not found.held:
                    found.held_since = now
                found.held.extendleft(reversed(frames))
                self._holding[socket_id] = found
            if unsent and (self._resender is None or self._resender.done()):
                self._resender = asyncio.get_running_loop().create_task(self._resend())
            return
        for cs in list(self._sockets.values()):
            if cs.node == address and cs.ws is not None:
                self._server_close(cs, SERVICE_RESTART, "node connection lost")

    def _server_close(self, cs: ClientSocket, code: int, reason: str) -> None:
        cs.queue.append(Frame(cs.socket_id, "", b"", FrameKind.CLOSE, None, code, reason))
        self._kick(cs)

    async def close_all(self, timeout: float = 5.0, code: int = GOING_AWAY,
                        reason: str = "router shutting down") -> None:
        """Router shutdown: objects hear 1001 going away, and so do clients (``abode
        dev`` reloading its app: 1012, so clients reconnect)."""
        for cs in list(self._sockets.values()):
            if cs.ws is None or cs.owner is None:
                continue
            self._to_node(cs, FrameKind.CLOSE, code=code, reason=reason, clean=False)
            self._server_close(cs, code, reason)
        senders = [cs.sender for cs in self._sockets.values() if cs.sender is not None]
        if senders:
            await asyncio.wait(senders, timeout=timeout)
        if self._resender is not None:
            self._resender.cancel()  # frames still waiting for a home are dropped
