"""What object authors subclass and receive: DurableObject, ctx, AlarmInfo."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from abode.cluster.env import Env
from abode.cluster.errors import Aborted
from abode.cluster.http import Request, Response
from abode.cluster.ids import ObjectId
from abode.node._storage import Storage
from abode.node._websocket import WebSocket

if TYPE_CHECKING:
    from abode.node._host import ObjectHost

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class AlarmInfo:
    retry_count: int = 0

    @property
    def is_retry(self) -> bool:
        return self.retry_count > 0


class AbortSignal(BaseException):
    """Raised by ``ctx.abort``; a BaseException so ``except Exception`` cannot swallow it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def to_error(self) -> Aborted:
        return Aborted(f"object aborted: {self.reason}")


class ObjectContext:
    """``self.ctx``: the object's id, storage and its handles on the runtime."""

    def __init__(self, object_id: ObjectId, storage: Storage, host: ObjectHost) -> None:
        self.id = object_id
        self.storage = storage
        self._host = host

    def block_concurrency_while(self, fn: Callable[[], Awaitable[T]]) -> asyncio.Future[T]:
        """Run ``fn`` with no other event delivered until it finishes.

        Await the result in a handler; a constructor (which cannot await) just calls it,
        and no event is delivered before ``fn`` finishes.
        """
        return self._host.block_while(fn)

    def wait_until(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` as an event of its own after the current one."""
        if not asyncio.iscoroutine(coro):
            raise TypeError("wait_until takes a coroutine")
        self._host.wait_until(coro)

    # -- hibernatable WebSockets ----------------------------------------------------
    def accept_websocket(self, request: Request, tags: list[str] | None = None) -> Response:
        """Accept the upgrade in ``request``; return the 101 response from ``fetch``.

        Its ``.websocket`` is the object-side socket. The socket outlives the
        object's eviction: a message wakes the object again.
        """
        return self._host.accept_websocket(request, tags)

    def get_websockets(self, tag: str | None = None) -> list[WebSocket]:
        return self._host.websockets(tag)

    def get_tags(self, ws: WebSocket) -> list[str]:
        return ws.tags

    def set_websocket_auto_response(
        self, request: str | None = None, response: str | None = None
    ) -> None:
        """Answer ``request`` with ``response`` without waking the object (``None`` clears)."""
        autos = self._host.runtime.sockets.auto_responses
        if request is None:
            autos.pop(self.id.raw, None)
            return
        if response is None or len(request) > 2048 or len(response) > 2048:
            raise ValueError("auto-response needs a request and a response of at most 2048 chars")
        autos[self.id.raw] = (request, response)

    def get_websocket_auto_response(self) -> tuple[str, str] | None:
        return self._host.runtime.sockets.auto_responses.get(self.id.raw)

    def get_websocket_auto_response_timestamp(self, ws: WebSocket) -> datetime | None:
        at = ws._info.auto_response_at
        return None if at is None else datetime.fromtimestamp(at, tz=UTC)

    def abort(self, reason: str = "aborted") -> None:
        """Reset the object: the current event fails and the next one meets a new instance."""
        raise AbortSignal(reason)


class DurableObject:
    """Base class of durable objects. Each subclass is a namespace.

    Override ``fetch`` for HTTP, add public async methods for RPC, ``alarm`` for
    alarms. The namespace is the class name unless the class sets ``namespace``.
    """

    namespace: ClassVar[str] = ""
    _abode_namespace: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("namespace") or cls.__name__
        if not name.isidentifier() or name == "id":
            raise ValueError(f"namespace {name!r} must be an identifier other than 'id'")
        cls._abode_namespace = name

    def __init__(self, ctx: ObjectContext, env: Env) -> None:
        self.ctx = ctx
        self.env = env

    async def fetch(self, request: Request) -> Response:
        return Response.json(
            {"error": f"{type(self).__name__} does not handle HTTP requests (no fetch method)"},
            status=501,
        )

    async def alarm(self, info: AlarmInfo) -> None:
        """Called when the object's alarm fires."""

    async def websocket_message(self, ws: WebSocket, message: str | bytes) -> None:
        """A client sent a message on a socket this object accepted."""

    async def websocket_close(self, ws: WebSocket, code: int, reason: str, was_clean: bool) -> None:
        """A socket closed (client, router or node). It is no longer in get_websockets()."""

    async def websocket_error(self, ws: WebSocket, error: Exception) -> None:
        """A socket failed."""


# Methods of the base class are event handlers, never RPC targets.
RESERVED_METHODS = frozenset(
    name for name in dir(DurableObject) if not name.startswith("_")
) | {"ctx", "env"}
