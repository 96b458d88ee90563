"""``env``: how edge functions and objects reach objects (namespaces and stubs).

The same classes serve the router (transport: the gRPC streams to nodes) and the
node (transport: the local runtime when it is home, else a stream to the home).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from abode.cluster import codec, ids
from abode.cluster.errors import AbodeError, UnknownNamespace
from abode.cluster.http import HeadersLike, Request, Response
from abode.cluster.invocation import Invocation, Transport, chain_for_call, timeout_for_call
from abode.cluster.routing import route_request


class Stub:
    """A client for one object: ``await stub.fetch(req)``, ``await stub.method(*args)``."""

    __slots__ = ("id", "_ns")

    def __init__(self, namespace: Namespace, object_id: ids.ObjectId) -> None:
        self.id = object_id
        self._ns = namespace

    async def fetch(
        self,
        request: Request | str,
        *,
        method: str = "GET",
        headers: HeadersLike = None,
        body: str | bytes | None = None,
    ) -> Response:
        if isinstance(request, str):
            url = request if "://" in request else "http://object" + (
                request if request.startswith("/") else "/" + request
            )
            request = Request(url, method=method, headers=headers, body=body)
        result = await self._ns._invoke(self.id, request=request)
        assert isinstance(result, Response)
        return result

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_"):
            raise AttributeError(f"{name}: methods whose names start with _ are private, "
                                 "not callable over RPC")

        async def call(*args: Any, **kwargs: Any) -> Any:
            payload = codec.pack([list(args), kwargs])
            result = await self._ns._invoke(self.id, method=name, args=payload)
            assert isinstance(result, bytes)
            return codec.unpack(result)

        call.__name__ = name
        return call

    def __repr__(self) -> str:
        return f"<Stub {self.id.namespace}:{self.id.hex[:12]}>"


class Namespace:
    """``env.NAME``: mints ids of one namespace and stubs for them."""

    def __init__(self, name: str, env: Env) -> None:
        self.name = name
        self._env = env

    def id_from_name(self, name: str) -> ids.ObjectId:
        return ids.id_from_name(self.name, name)

    def new_unique_id(self) -> ids.ObjectId:
        return ids.new_unique_id(self.name)

    def id_from_string(self, text: str) -> ids.ObjectId:
        return ids.id_from_string(self.name, text)

    def get(self, object_id: ids.ObjectId) -> Stub:
        if object_id.namespace != self.name:
            # Re-validate: the check bytes tie an id to its namespace.
            object_id = ids.id_from_bytes(self.name, object_id.raw)
        return Stub(self, object_id)

    def get_by_name(self, name: str) -> Stub:
        return Stub(self, self.id_from_name(name))

    async def _invoke(self, object_id: ids.ObjectId, **kind: Any) -> Any:
        inv = Invocation(
            namespace=self.name,
            object_id=object_id.raw,
            chain=chain_for_call(),
            timeout=timeout_for_call(self._env.call_timeout),
            object_name=object_id.name or "",
            **kind,
        )
        return await self._env.transport.invoke(inv)


class Env:
    """The ``env`` of edge functions and objects: one attribute per namespace."""

    def __init__(
        self, namespaces: Iterable[str], transport: Transport, *, call_timeout: float = 30.0
    ) -> None:
        self.transport = transport
        self.call_timeout = call_timeout
        self._namespaces = {name: Namespace(name, self) for name in namespaces}

    @property
    def namespaces(self) -> list[str]:
        return list(self._namespaces)

    def namespace(self, name: str) -> Namespace:
        try:
            return self._namespaces[name]
        except KeyError:
            raise UnknownNamespace(f"unknown namespace {name!r}") from None

    def __getattr__(self, name: str) -> Namespace:
        try:
            return self.__dict__["_namespaces"][name]
        except KeyError:
            raise AttributeError(f"env has no namespace {name!r}") from None

    async def route(self, request: Request) -> Response:
        """Default routing: ``/{namespace}/{name}/{rest}`` or ``/{namespace}/id/{hex}/{rest}``.

        Errors come back as JSON responses; ``AbodeError`` from the call propagates
        so the ingress maps it to a status in one place.
        """
        namespace, object_id, path = route_request(request.path, self._namespaces)
        forwarded = Request(
            request.url, method=request.method, headers=request.headers,
            body=request.body, path=path,
        )
        forwarded.socket_id = request.socket_id
        return await self._namespaces[namespace].get(object_id).fetch(forwarded)


__all__ = ["Env", "Namespace", "Stub", "AbodeError"]
