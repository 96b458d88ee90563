"""abode: durable objects on machines you own. The public API for writing them.

    from abode import DurableObject, Request, Response

    class Counter(DurableObject):
        async def fetch(self, request: Request) -> Response:
            n = await self.ctx.storage.get("n", 0) + 1
            await self.ctx.storage.put("n", n)
            return Response.json({"n": n})

The distribution installs one import package, ``abode``: the repository's folders
``cluster/``, ``node/`` and ``router/`` are its subpackages ``abode.cluster``,
``abode.node`` and ``abode.router`` (internals, no stable API). ``abode.testing``
runs objects in-process for unit tests.
"""

from abode.cluster.env import Env, Namespace, Stub
from abode.cluster.errors import (
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
from abode.cluster.http import Request, Response
from abode.cluster.ids import ObjectId
from abode.node._object import AlarmInfo, DurableObject, ObjectContext
from abode.node._storage import Storage, Transaction
from abode.node._websocket import WebSocket

__version__ = "0.1.0"

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

# Users meet these classes as abode.X (reprs, tracebacks, docs), not by the
# internal module that defines them.
for _name in __all__:
    globals()[_name].__module__ = "abode"
del _name
