"""The object-side WebSocket: what ``accept_websocket`` returns and handlers receive.

The client connection ends at a router; this handle names the socket and sends its
frames through the node's registry. Outputs pass the output gate like responses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from abode.cluster import codec
from abode.cluster.outbox import MAX_ITEM_BYTES
from abode.cluster.sockets import NORMAL, Frame, FrameKind

if TYPE_CHECKING:
    from abode.node._sockets import SocketInfo, SocketRegistry

MAX_ATTACHMENT_BYTES = 16 * 1024
MAX_SEND_BYTES = MAX_ITEM_BYTES - 64 * 1024  # the frame's own fields ride along


class WebSocket:
    """A hibernatable WebSocket accepted by an object."""

    __slots__ = ("_info", "_registry")

    def __init__(self, info: SocketInfo, registry: SocketRegistry) -> None:
        self._info = info
        self._registry = registry

    @property
    def id(self) -> str:
        return self._info.socket_id

    @property
    def namespace(self) -> str:
        return self._info.namespace

    @property
    def object_id(self) -> bytes:
        return self._info.object_id

    @property
    def tags(self) -> list[str]:
        return list(self._info.tags)

    @property
    def closed(self) -> bool:
        return self._info.closed

    def send(self, message: str | bytes) -> None:
        if not isinstance(message, str | bytes | bytearray):
            raise TypeError(f"ws.send takes str or bytes, not {type(message).__name__}")
        if self._info.closed:
            return
        data = message if isinstance(message, str) else bytes(message)
        size = len(data) if isinstance(data, bytes) or len(data) <= MAX_SEND_BYTES // 4 \
            else len(data.encode())
        if size > MAX_SEND_BYTES:
            raise ValueError(f"a WebSocket message is at most {MAX_SEND_BYTES} bytes")
        self._registry.emit(self._info, Frame(
            self._info.socket_id, self._info.namespace, self._info.object_id,
            FrameKind.MESSAGE, data,
        ))

    def close(self, code: int = NORMAL, reason: str = "") -> None:
        if self._info.closed:
            return
        if not (code == NORMAL or 3000 <= code <= 4999):
            raise ValueError("close code must be 1000 or 3000-4999")
        if len(reason.encode()) > 123:
            raise ValueError("close reason is at most 123 bytes of UTF-8")
        self._registry.close_from_object(self._info, code, reason)

    def serialize_attachment(self, value: Any) -> None:
        """Keep a value with the socket; it survives hibernation."""
        data = codec.pack(value)
        if len(data) > MAX_ATTACHMENT_BYTES:
            raise ValueError(
                f"attachment is {len(data)} bytes encoded; the limit is {MAX_ATTACHMENT_BYTES}"
            )
        self._registry.set_attachment(self._info, data)

    def deserialize_attachment(self) -> Any:
        data = self._info.attachment
        return None if data is None else codec.unpack(data)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WebSocket) and other._info.socket_id == self._info.socket_id

    def __hash__(self) -> int:
        return hash(self._info.socket_id)

    def __repr__(self) -> str:
        return f"<WebSocket {self._info.socket_id} tags={self._info.tags}>"
