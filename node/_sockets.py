"""The node's WebSocket registry: every socket accepted by an object on this node.

Sockets live here, not in the object, so an object can be evicted (hibernate) while
its sockets stay open: a message wakes it. Each socket belongs to the router whose
client connection it is; frames to it go out on that router's stream. Socket
metadata (router, tags, attachment) is also written with the object's storage, so
it travels with the object's data.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from abode.cluster import codec
from abode.cluster.sockets import (
    ABNORMAL,
    INTERNAL_ERROR,
    SERVICE_RESTART,
    Frame,
    FrameKind,
    router_of,
)
from abode.node._store import SOCKET

if TYPE_CHECKING:
    from abode.node._host import ObjectHost
    from abode.node._runtime import Runtime

log = logging.getLogger(__name__)

MAX_TAGS = 10
MAX_TAG_CHARS = 256
MAX_SOCKETS_PER_OBJECT = 32_768
TRY_AGAIN_LATER = 1013
# A frame for a socket of an object this node is about to be home for (its view of
# the membership lags the router's) waits this long for the node to catch up.
HOME_WAIT_SECONDS = 5.0

Push = Callable[[Frame], None]


@dataclass(slots=True, eq=False)
class SocketInfo:
    socket_id: str
    namespace: str
    object_id: bytes
    router: str
    tags: tuple[str, ...] = ()
    attachment: bytes | None = None
    auto_response_at: float | None = None
    closed: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def meta(self) -> bytes:
        return codec.pack({"r": self.router, "t": list(self.tags), "a": self.attachment})


def validate_tags(tags: Any) -> tuple[str, ...]:
    if tags is None:
        return ()
    tags = tuple(tags)
    if len(tags) > MAX_TAGS:
        raise ValueError(f"at most {MAX_TAGS} tags per socket, got {len(tags)}")
    for tag in tags:
        if not isinstance(tag, str) or not tag:
            raise ValueError("tags are non-empty strings")
        if len(tag) > MAX_TAG_CHARS:
            raise ValueError(f"a tag is at most {MAX_TAG_CHARS} characters")
    return tags


class SocketRegistry:
    def __init__(self, runtime: Runtime, *, hand_over: Callable[[], bool]) -> None:
        self._runtime = runtime
        self.sockets: dict[str, SocketInfo] = {}
        self._by_object: dict[bytes, dict[str, SocketInfo]] = {}
        self._streams: dict[str, Push] = {}
        # Object id -> (request, response) answered without waking the object.
        self.auto_responses: dict[bytes, tuple[str, str]] = {}
        self.auto_responses_sent = 0
        # Whether a stopping node leaves its sockets to the objects' next homes.
        self.hand_over = hand_over
        # Objects whose stored sockets this node has taken up as their home (restore
        # reads the store once per stint as home, so it cannot bring back a socket
        # closed meanwhile); and frames waiting for this node to become home.
        self._restored: set[bytes] = set()
        self._deferred: dict[str, list[tuple[str, Frame]]] = {}

    # -- router streams -------------------------------------------------------------
    def attach_stream(self, router: str, push: Push) -> None:
        self._streams[router] = push

    def detach_stream(self, router: str, push: Push) -> None:
        """The router's stream ended: its client connections are gone."""
        if self._streams.get(router) is not push:
            return  # a newer stream of the same router replaced this one
        del self._streams[router]
        for info in [s for s in self.sockets.values() if s.router == router]:
            if self._runtime.owns(info.object_id):
                self._closed_by_peer(info, ABNORMAL, "router connection lost", False)
            else:
                self._forget(info)  # its object lives elsewhere now: not ours to close

    # -- object side ----------------------------------------------------------------
    def accept(self, host: ObjectHost, socket_id: str, tags: Any) -> SocketInfo:
        tags = validate_tags(tags)
        router = router_of(socket_id)
        mine = self._by_object.setdefault(host.id.raw, {})
        if len(mine) >= MAX_SOCKETS_PER_OBJECT:
            raise ValueError(f"an object holds at most {MAX_SOCKETS_PER_OBJECT} sockets")
        if socket_id in self.sockets:
            raise ValueError(f"socket {socket_id} was already accepted")
        info = SocketInfo(socket_id, host.id.namespace, host.id.raw, router, tags)
        self.sockets[socket_id] = info
        mine[socket_id] = info
        self._restored.add(host.id.raw)
        host.storage.put_socket_meta(socket_id, info.meta())
        return info

    def of_object(self, object_id: bytes, tag: str | None = None) -> list[SocketInfo]:
        mine = self._by_object.get(object_id)
        if not mine:
            return []
        return [s for s in mine.values() if tag is None or tag in s.tags]

    def emit(self, info: SocketInfo, frame: Frame) -> None:
        """An object sends: the frame waits at the output gate of its event."""
        host = self._runtime.hosts.get(info.object_id)
        if host is None:
            self.push(info.router, frame)
        else:
            host.emit_frame(info.router, frame)

    def close_from_object(self, info: SocketInfo, code: int, reason: str) -> None:
        self._forget(info)
        host = self._runtime.hosts.get(info.object_id)
        if host is not None:
            host.storage.put_socket_meta(info.socket_id, None)
            host.on_failure(lambda: self._restore(info))  # its close frame is dropped too
        self.emit(info, Frame(info.socket_id, info.namespace, info.object_id,
                              FrameKind.CLOSE, None, code, reason))

    def set_attachment(self, info: SocketInfo, data: bytes) -> None:
        old, info.attachment = info.attachment, data
        host = self._runtime.hosts.get(info.object_id)
        if host is not None and not info.closed:
            host.storage.put_socket_meta(info.socket_id, info.meta())
            host.on_failure(lambda: setattr(info, "attachment", old))

    def discard_accepted(self, infos: list[SocketInfo]) -> None:
        """The accepting event failed: its sockets never existed."""
        for info in infos:
            self._forget(info)

    def push(self, router: str, frame: Frame) -> None:
        push = self._streams.get(router)
        if push is not None:
            push(frame)

    # -- router side ----------------------------------------------------------------
    def restore(self, object_id: bytes, namespace: str) -> int:
        """Take up the sockets stored with an object (after a failover or handoff).

        Only sockets whose router holds a stream to this node are alive; the others
        ended with their router. Once per stint as the object's home: from then on
        this registry is the truth, and a socket it closed is not read back.
        """
        prefix = object_id + SOCKET
        stored = self._runtime.store.scan(prefix, prefix + b"\xff")
        if object_id in self._restored:
            # Known here; once none is open or stored any more, forget the object.
            if object_id not in self._by_object and next(stored, None) is None:
                self._restored.discard(object_id)
            return 0
        restored = 0
        for key, raw in stored:
            restored += self._take_up(object_id, namespace, key[len(prefix):].decode(), raw)
        if object_id in self._by_object:
            self._restored.add(object_id)
        return restored

    def _take_up(self, object_id: bytes, namespace: str, socket_id: str, raw: bytes) -> int:
        if socket_id in self.sockets:
            return 0
        meta = codec.unpack(raw)
        router = str(meta.get("r", ""))
        if router not in self._streams:
            return 0
        info = SocketInfo(socket_id, namespace, object_id, router,
                          tuple(meta.get("t") or ()), meta.get("a"))
        self.sockets[socket_id] = info
        self._by_object.setdefault(object_id, {})[socket_id] = info
        return 1

    def forget_object(self, object_id: bytes) -> None:
        """Another node is the object's home (it wrote to it): drop what this node knew
        of its sockets, without close events; they live on there."""
        self._restored.discard(object_id)
        for info in list(self._by_object.get(object_id, {}).values()):
            self._forget(info)

    def on_frame(self, router: str, frame: Frame, *, waited: bool = False) -> None:
        deferred = self._deferred.get(frame.socket_id)
        if deferred is not None and not waited:
            deferred.append((router, frame))  # behind the frames already waiting
            return
        info = self.sockets.get(frame.socket_id)
        if info is None and frame.namespace:
            oid = frame.object_id
            if self._runtime.owns(oid):
                # This node took over the object: its sockets are in the store.
                self.restore(oid, frame.namespace)
                raw = self._runtime.store.get(oid + SOCKET + frame.socket_id.encode())
                if frame.socket_id not in self.sockets and raw is not None:
                    self._take_up(oid, frame.namespace, frame.socket_id, raw)
                info = self.sockets.get(frame.socket_id)
            elif not waited:
                self._deferred[frame.socket_id] = [(router, frame)]
                self._runtime.spawn(self._await_home(frame.socket_id, oid))
                return
        if info is None:
            if frame.kind != FrameKind.CLOSE:
                self.push(router, Frame(frame.socket_id, frame.namespace, frame.object_id,
                                        FrameKind.CLOSE, None, INTERNAL_ERROR, "unknown socket"))
            return
        if frame.kind == FrameKind.MESSAGE:
            auto = self.auto_responses.get(info.object_id)
            if auto is not None and frame.data == auto[0]:
                info.auto_response_at = time.time()
                self.auto_responses_sent += 1
                self.push(info.router, Frame(info.socket_id, info.namespace, info.object_id,
                                             FrameKind.MESSAGE, auto[1]))
                return
            self._runtime.socket_event(info, "ws_message", data=frame.data)
        elif frame.kind == FrameKind.CLOSE:
            self._closed_by_peer(info, frame.code or ABNORMAL, frame.reason, frame.was_clean)
        else:
            self._runtime.socket_event(info, "ws_error", data=frame.reason)

    async def _await_home(self, socket_id: str, object_id: bytes) -> None:
        """Hold a socket's frames until this node is the object's home (bounded)."""
        deadline = time.monotonic() + HOME_WAIT_SECONDS
        try:
            while not self._runtime.owns(object_id) and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        finally:
            for router, frame in self._deferred.pop(socket_id, []):
                self.on_frame(router, frame, waited=True)

    def overloaded(self, info: SocketInfo) -> None:
        """The object's mailbox is full: close the socket rather than queue without bound."""
        log.warning("closing socket %s: object overloaded", info.socket_id)
        self._forget(info)
        self.push(info.router, Frame(info.socket_id, info.namespace, info.object_id,
                                     FrameKind.CLOSE, None, TRY_AGAIN_LATER, "overloaded"))
        self._runtime.socket_event(info, "ws_close", code=TRY_AGAIN_LATER, reason="overloaded",
                                   was_clean=False)

    def shutdown(self) -> None:
        """The node is stopping: tell routers and objects every socket is closing.

        With replicas the sockets are not closing: the object's next home takes them
        up from the metadata stored with it, and the routers keep the clients.
        """
        hand_over = self.hand_over()
        for info in list(self.sockets.values()):
            if hand_over or not self._runtime.owns(info.object_id):
                self._forget(info)  # its object lives (or will live) elsewhere
                continue
            self.push(info.router, Frame(info.socket_id, info.namespace, info.object_id,
                                         FrameKind.CLOSE, None, SERVICE_RESTART, "node restarting"))
            self._closed_by_peer(info, SERVICE_RESTART, "node restarting", False)

    def _closed_by_peer(self, info: SocketInfo, code: int, reason: str, clean: bool) -> None:
        # Gone from get_websockets() from its close event on.
        self._forget(info)
        self._runtime.socket_event(info, "ws_close", code=code, reason=reason, was_clean=clean)

    def _restore(self, info: SocketInfo) -> None:
        """Undo ``_forget`` (the event that closed the socket raised)."""
        info.closed = False
        self.sockets[info.socket_id] = info
        self._by_object.setdefault(info.object_id, {})[info.socket_id] = info

    def _forget(self, info: SocketInfo) -> None:
        info.closed = True
        self.sockets.pop(info.socket_id, None)
        mine = self._by_object.get(info.object_id)
        if mine is not None:
            mine.pop(info.socket_id, None)
            if not mine:
                del self._by_object[info.object_id]

    @property
    def count(self) -> int:
        return len(self.sockets)
