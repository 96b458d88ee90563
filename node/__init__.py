"""The public API for writing durable objects.

    from node import DurableObject, Request, Response

    class Counter(DurableObject):
        async def fetch(self, request: Request) -> Response:
            n = await self.ctx.storage.get("n", 0) + 1
            await self.ctx.storage.put("n", n)
            return Response.json({"n": n})
"""

from cluster.env import Env, Namespace, Stub
from cluster.errors import (
    AbodeError,
    Aborted,
    CallTimeout,
    CommitFailed,
    InvalidId,
    Overloaded,
    RemoteError,
    Unavailable,
    UnknownMethod,
    UnknownNamespace,
)
from cluster.http import Request, Response
from cluster.ids import ObjectId
from node._object import AlarmInfo, DurableObject, ObjectContext
from node._storage import Storage, Transaction
from node._websocket import WebSocket

__all__ = [
    "AbodeError",
    "Aborted",
    "AlarmInfo",
    "CallTimeout",
    "CommitFailed",
    "DurableObject",
    "Env",
    "InvalidId",
    "Namespace",
    "ObjectContext",
    "ObjectId",
    "Overloaded",
    "RemoteError",
    "Request",
    "Response",
    "Storage",
    "Stub",
    "Transaction",
    "Unavailable",
    "UnknownMethod",
    "UnknownNamespace",
    "WebSocket",
]
