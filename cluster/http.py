"""Request and Response: the HTTP values objects and edge functions see.

They are plain values (method, url, headers, body) so they cross the wire whole;
the object's ``path`` is kept apart from ``url`` because default routing strips
``/{namespace}/{name}`` while the original URL stays visible.
"""

from __future__ import annotations

import json as _json
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any, Generic, Protocol, TypeVar, overload
from urllib.parse import parse_qsl, urlsplit

from multidict import CIMultiDict  # ships with aiohttp

HeadersLike = Mapping[str, str] | Iterable[tuple[str, str]] | None


def _headers(value: HeadersLike) -> CIMultiDict[str]:
    if value is None:
        return CIMultiDict()
    if isinstance(value, Mapping):
        return CIMultiDict(value)
    return CIMultiDict(list(value))


def _body(value: str | bytes | bytearray | None) -> bytes:
    if value is None:
        return b""
    if isinstance(value, str):
        return value.encode()
    return bytes(value)


_OnClass = TypeVar("_OnClass")
_OnInstance = TypeVar("_OnInstance")


class _ClassOrInstance(Generic[_OnClass, _OnInstance]):
    """A method that is one function on the class and another on instances; typed as
    each (a user's ``mypy --strict`` sees ``Response.json(...)`` return a Response)."""

    def __init__(self, on_class: Any, on_instance: Any) -> None:
        self._on_class = on_class
        self._on_instance = on_instance

    @overload
    def __get__(self, obj: None, owner: type) -> _OnClass: ...
    @overload
    def __get__(self, obj: object, owner: type) -> _OnInstance: ...

    def __get__(self, obj: Any, owner: type) -> Any:
        if obj is None:
            return self._on_class.__get__(owner, owner)
        return self._on_instance.__get__(obj, owner)


class _JsonBuilder(Protocol):
    def __call__(self, data: Any, *, status: int = 200,
                 headers: HeadersLike = None) -> Response: ...


class Request:
    """An HTTP request as an object's ``fetch`` (or the edge function) receives it."""

    __slots__ = ("method", "url", "path", "headers", "body", "socket_id")

    def __init__(
        self,
        url: str,
        *,
        method: str = "GET",
        headers: HeadersLike = None,
        body: str | bytes | None = None,
        path: str | None = None,
    ) -> None:
        self.method = method.upper()
        self.url = url
        self.path = path if path is not None else (urlsplit(url).path or "/")
        self.headers = _headers(headers)
        self.body = _body(body)
        # Set by the router on a WebSocket upgrade; ``ctx.accept_websocket`` needs it.
        self.socket_id = ""

    @property
    def is_websocket_upgrade(self) -> bool:
        return bool(self.socket_id)

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(urlsplit(self.url).query))

    async def bytes(self) -> bytes:
        return self.body

    async def text(self) -> str:
        return self.body.decode()

    async def json(self) -> Any:
        return _json.loads(self.body)

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.url}>"


class Response:
    """An HTTP response. ``Response.json(data)`` for JSON bodies."""

    __slots__ = ("status", "headers", "body", "websocket")

    def __init__(
        self,
        body: str | bytes | None = None,
        *,
        status: int = 200,
        headers: HeadersLike = None,
    ) -> None:
        if not 100 <= int(status) <= 599:
            raise ValueError(f"HTTP status must be 100..599, got {status}")
        self.status = int(status)
        self.headers = _headers(headers)
        if isinstance(body, str) and "Content-Type" not in self.headers:
            self.headers["Content-Type"] = "text/plain; charset=utf-8"
        self.body = _body(body)
        # On a 101: the object-side socket at the node, its owner at the router.
        self.websocket: Any = None

    def _make_json(  # type: ignore[misc]  # bound to the class by _ClassOrInstance
        cls: type[Response], data: Any, *, status: int = 200, headers: HeadersLike = None
    ) -> Response:
        resp = cls(_json.dumps(data, separators=(",", ":")), status=status, headers=headers)
        resp.headers["Content-Type"] = "application/json"
        return resp

    async def _read_json(self) -> Any:
        return _json.loads(self.body)

    # As in the Fetch API: ``Response.json(data)`` builds, ``await resp.json()`` reads.
    json: _ClassOrInstance[_JsonBuilder, Callable[[], Coroutine[Any, Any, Any]]] = (
        _ClassOrInstance(_make_json, _read_json)
    )

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    async def bytes(self) -> bytes:
        return self.body

    async def text(self) -> str:
        return self.body.decode()

    def __repr__(self) -> str:
        return f"<Response {self.status}>"


def error_response(status: int, message: str, *, retry_after: float | None = None) -> Response:
    """Every error abode answers itself is JSON: ``{"error": message}``."""
    headers = {"Retry-After": str(max(1, round(retry_after)))} if retry_after else None
    return Response.json({"error": message}, status=status, headers=headers)
