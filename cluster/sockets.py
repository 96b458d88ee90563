"""WebSocket frames as they cross between routers and nodes, and the close codes used."""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import IntEnum


class FrameKind(IntEnum):
    MESSAGE = 0
    CLOSE = 1
    ERROR = 2


# RFC 6455 close codes abode sends on its own.
NORMAL = 1000
GOING_AWAY = 1001  # the router is shutting down
ABNORMAL = 1006  # the connection dropped without a close frame
INTERNAL_ERROR = 1011
SERVICE_RESTART = 1012  # the node is restarting

# gRPC metadata naming the router that opened a stream (its sockets' frames go there).
ROUTER_METADATA = "abode-router"
# gRPC metadata naming the node that opened a stream (the sender of replica writes).
NODE_METADATA = "abode-node"


@dataclass(slots=True)
class Frame:
    socket_id: str
    namespace: str
    object_id: bytes
    kind: FrameKind
    data: str | bytes | None = None
    code: int = 0
    reason: str = ""
    was_clean: bool = True
    revision: int = 0


@dataclass(frozen=True, slots=True)
class SocketOwner:
    """Which object accepted a socket: where the router sends the client's frames."""

    namespace: str
    object_id: bytes


def new_socket_id(router: str) -> str:
    """Socket ids name their router, so whichever node hosts the object can reach it."""
    return f"{router}/{os.urandom(12).hex()}"


def router_of(socket_id: str) -> str:
    return socket_id.partition("/")[0]
