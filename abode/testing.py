"""``abode.testing``: run your object classes in-process, for your own unit tests.

``ObjectTestbed`` composes the node's real runtime (mailboxes, turns, storage cache,
group commit on a temporary RocksDB, output gate, alarms, WebSocket registry) with
no etcd, no router and no network. Calls take the same path as calls between
objects on one node, so what passes here behaves the same under ``abode dev``.

    import pytest
    from abode.testing import ObjectTestbed
    from examples.counter import Counter

    async def test_counter() -> None:
        async with ObjectTestbed(Counter) as tb:
            stub = tb.get("clicks")
            resp = await stub.fetch("/increment", method="POST")
            assert resp.status == 200 and await resp.json() == {"value": 1}
            assert await stub.add(2) == 3            # RPC, as through env
            assert tb.storage("clicks") == {"value": 3}
            await tb.evict_all()                     # the next call is a cold start
            assert await stub.value() == 3

``tb.get(name).fetch(...)`` answers as a client of the router would: a handler that
raises gives a 500 response ``{"error": "<Type>: <message>"}``. RPC methods raise as
they do for callers in the cluster (``RemoteError`` with ``remote_type``).
``tb.env`` is the ``env`` objects see, for calls with exactly a stub's semantics.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from typing import Any

from abode.cluster import codec
from abode.cluster.app import App
from abode.cluster.env import Env, Stub
from abode.cluster.errors import (
    AbodeError,
    RemoteError,
    UnknownNamespace,
)
from abode.cluster.http import HeadersLike, Request, Response
from abode.cluster.http_status import error_to_response
from abode.cluster.ids import ObjectId
from abode.cluster.sockets import NORMAL, Frame, FrameKind, new_socket_id
from abode.node._dispatch import Dispatcher, PeerPool
from abode.node._object import AlarmInfo, DurableObject
from abode.node._ownership import Ownership
from abode.node._runtime import Runtime, RuntimeConfig
from abode.node._server import _DispatchTransport
from abode.node._store import ALARM, DATA, Store, alarm_record_time

__all__ = ["ObjectTestbed", "SocketClosed", "TestSocket", "TestStub", "UpgradeRefused"]

_ROUTER = "testbed"  # the router id that the testbed's WebSocket clients belong to
_SOCKET_QUEUE = 10_000

ClassOrName = type[DurableObject] | str | None


class TestStub:
    """A stub whose ``fetch`` answers like the router: errors become HTTP responses.

    Every other attribute is an RPC method, exactly as on ``Stub``.
    """

    __test__ = False  # not a pytest test class
    __slots__ = ("stub",)

    def __init__(self, stub: Stub) -> None:
        self.stub = stub

    @property
    def id(self) -> ObjectId:
        return self.stub.id

    async def fetch(
        self,
        request: Request | str,
        *,
        method: str = "GET",
        headers: HeadersLike = None,
        body: str | bytes | None = None,
    ) -> Response:
        try:
            return await self.stub.fetch(request, method=method, headers=headers, body=body)
        except AbodeError as exc:
            return error_to_response(exc)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stub, name)

    def __repr__(self) -> str:
        return f"<TestStub {self.stub.id.namespace}:{self.stub.id.hex[:12]}>"


class UpgradeRefused(Exception):
    """``tb.websocket`` got an answer other than an accepted socket; see ``response``."""

    def __init__(self, response: Response) -> None:
        super().__init__(f"the object answered {response.status} instead of accepting the socket")
        self.response = response


class SocketClosed(Exception):
    """The socket is closed; ``code`` and ``reason`` are those of the close."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"socket closed: {code} {reason}".rstrip())
        self.code = code
        self.reason = reason


class TestSocket:
    """The client end of a WebSocket an object accepted (``await tb.websocket(...)``)."""

    __test__ = False

    def __init__(self, tb: ObjectTestbed, socket_id: str, object_id: ObjectId) -> None:
        self._tb = tb
        self.socket_id = socket_id
        self.object_id = object_id
        self.response: Response | None = None  # the object's 101, once accepted
        self._inbox: asyncio.Queue[str | bytes | None] = asyncio.Queue(_SOCKET_QUEUE)
        self.close_code: int | None = None
        self.close_reason = ""

    @property
    def closed(self) -> bool:
        return self.close_code is not None

    def send(self, message: str | bytes) -> None:
        """Deliver a message to the object (its ``websocket_message`` runs next)."""
        if self.closed:
            raise SocketClosed(self.close_code or 0, self.close_reason)
        self._tb._client_frame(self, FrameKind.MESSAGE, message)

    async def receive(self, timeout: float = 5.0) -> str | bytes:
        """The next message the object sent; ``SocketClosed`` once it closed."""
        if self._inbox.empty() and self.closed:
            raise SocketClosed(self.close_code or 0, self.close_reason)
        async with asyncio.timeout(timeout):
            message = await self._inbox.get()
        if message is None:
            raise SocketClosed(self.close_code or 0, self.close_reason)
        return message

    def close(self, code: int = NORMAL, reason: str = "") -> None:
        """Close from the client side (the object's ``websocket_close`` runs next)."""
        if self.closed:
            return
        self._closed_with(code, reason)
        self._tb._client_frame(self, FrameKind.CLOSE, None, code, reason)

    def _deliver(self, frame: Frame) -> None:
        if frame.kind == FrameKind.MESSAGE and frame.data is not None and not self.closed:
            try:
                self._inbox.put_nowait(frame.data)
            except asyncio.QueueFull:
                self._closed_with(1009, "test client inbox full: receive() more often")
        elif frame.kind == FrameKind.CLOSE:
            self._closed_with(frame.code or NORMAL, frame.reason)

    def _closed_with(self, code: int, reason: str) -> None:
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
            if not self._inbox.full():
                self._inbox.put_nowait(None)

    def __repr__(self) -> str:
        return f"<TestSocket {self.socket_id} closed={self.closed}>"


class ObjectTestbed:
    """One in-process node running ``cls`` (and ``others``) on a temporary RocksDB.

    ``tb.get(name)`` addresses ``cls``; pass ``cls=Other`` (or its namespace name)
    to address another class. Objects stay in memory until ``evict``/``evict_all``
    (``idle_timeout`` defaults to an hour so no test sees a cold start it did not
    ask for). Alarms also fire on their own at their time, as on a node.
    """

    __test__ = False

    def __init__(
        self,
        cls: type[DurableObject],
        *others: type[DurableObject],
        data_dir: str | os.PathLike[str] | None = None,
        idle_timeout: float = 3600.0,
        max_queue: int = 1000,
        call_timeout: float = 30.0,
        max_active_objects: int = 10_000,
        alarm_retry_base: float = 2.0,
        sync: bool = False,
    ) -> None:
        objects: dict[str, type[DurableObject]] = {}
        for c in (cls, *others):
            ns = getattr(c, "_abode_namespace", None)
            if not isinstance(c, type) or not issubclass(c, DurableObject) or not ns:
                raise TypeError(f"{c!r} is not a DurableObject subclass")
            if objects.get(ns, c) is not c:
                raise ValueError(f"namespace {ns!r} is defined twice")
            objects[ns] = c
        self._primary: str = cls._abode_namespace or ""
        self._app = App(sys.modules[cls.__module__], objects)
        self._config = RuntimeConfig(
            idle_timeout=idle_timeout,
            max_active_objects=max_active_objects,
            max_queue=max_queue,
            call_timeout=call_timeout,
            alarm_first_retry=alarm_retry_base,
        )
        self._sync = sync
        self._own_dir = data_dir is None
        self._dir = str(data_dir) if data_dir is not None else ""
        self._store: Store | None = None
        self._runtime: Runtime | None = None
        self._peers: PeerPool | None = None
        self._env: Env | None = None
        self._sockets: dict[str, TestSocket] = {}

    # -- lifecycle ------------------------------------------------------------------
    async def __aenter__(self) -> ObjectTestbed:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Open the store and start the runtime (``async with`` does this for you)."""
        if self._runtime is not None:
            return
        if not self._dir:
            self._dir = tempfile.mkdtemp(prefix="abode-testbed-")
        self._store = Store(os.path.join(self._dir, "db"), sync=self._sync)
        transport = _DispatchTransport()
        self._env = Env(self._app.namespaces, transport, call_timeout=self._config.call_timeout)
        ownership = Ownership()  # one node: every object is local, nothing to fence
        self._runtime = Runtime(self._app, self._store, self._env, self._config, ownership)
        self._peers = PeerPool()
        transport.dispatcher = Dispatcher(self._runtime, ownership, self._peers)
        await self._runtime.start()
        self._runtime.sockets.attach_stream(_ROUTER, self._push)

    async def _stop(self, grace: float) -> None:
        runtime, store, peers = self._runtime, self._store, self._peers
        self._runtime = self._store = self._peers = None
        if runtime is not None:
            await runtime.drain(timeout=grace)
            await runtime.stop()
        if peers is not None:
            await peers.close()
        if store is not None:
            store.close()

    async def close(self, grace: float = 10.0) -> None:
        """Drain (as a node's SIGTERM does), close the store, delete a temporary dir."""
        await self._stop(grace)
        if self._own_dir and self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = ""

    async def restart(self, grace: float = 10.0) -> None:
        """Stop and start again on the same data, as a node restart does: every
        object is cold, pending alarms are reloaded, open sockets are closed (1012)."""
        await self._stop(grace)
        await self.start()

    # -- addressing -----------------------------------------------------------------
    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            raise RuntimeError("the testbed is not started: use `async with ObjectTestbed(...)`")
        return self._runtime

    @property
    def env(self) -> Env:
        """The ``env`` objects see: ``tb.env.Counter.get_by_name("x")`` is a real ``Stub``."""
        self.runtime  # noqa: B018 - raises when not started
        assert self._env is not None
        return self._env

    def _namespace(self, cls: ClassOrName) -> str:
        if cls is None:
            return self._primary
        ns = cls if isinstance(cls, str) else getattr(cls, "_abode_namespace", None)
        if not isinstance(ns, str) or ns not in self._app.objects:
            raise UnknownNamespace(f"{cls!r} is not one of this testbed's classes")
        return ns

    def id(self, name: str | ObjectId, cls: ClassOrName = None) -> ObjectId:
        """The id of ``name`` (``id_from_name``), or ``name`` itself if it is an id."""
        ns = self._namespace(cls)
        if isinstance(name, ObjectId):
            return self.env.namespace(ns).get(name).id
        return self.env.namespace(ns).id_from_name(name)

    def get(self, name: str | ObjectId, cls: ClassOrName = None) -> TestStub:
        """A stub for the object: ``await stub.fetch(...)``, ``await stub.method(...)``."""
        ns = self._namespace(cls)
        return TestStub(self.env.namespace(ns).get(self.id(name, ns)))

    # -- inspecting durable state ---------------------------------------------------
    def storage(self, name: str | ObjectId, cls: ClassOrName = None) -> dict[str, Any]:
        """Every key the object has made durable, in key order, decoded."""
        oid = self.id(name, cls).raw
        store = self.runtime.store
        prefix = oid + DATA
        upper = oid + bytes([DATA[0] + 1])
        return {k[len(prefix):].decode(): codec.unpack(v) for k, v in store.scan(prefix, upper)}

    def alarm(self, name: str | ObjectId, cls: ClassOrName = None) -> int | None:
        """The object's durable alarm time in epoch milliseconds, or None."""
        raw = self.runtime.store.get(self.id(name, cls).raw + ALARM)
        return None if raw is None else alarm_record_time(raw)

    def is_active(self, name: str | ObjectId, cls: ClassOrName = None) -> bool:
        """Whether the object is in memory now (its next event is not a cold start)."""
        host = self.runtime.hosts.get(self.id(name, cls).raw)
        return host is not None and host.instance is not None

    @property
    def activations(self) -> int:
        """Cold starts so far (constructor runs), over every object."""
        return self.runtime.activations

    # -- driving the runtime --------------------------------------------------------
    async def run_alarm(
        self, name: str | ObjectId, cls: ClassOrName = None, *, retry_count: int = 0
    ) -> bool:
        """Fire the object's pending alarm now, as an event; False if none is set.

        If ``alarm()`` raises, so does this, as ``RemoteError`` (like every caller
        sees a handler's exception); its writes are discarded and the alarm stays set. ``retry_count`` is what the handler sees in ``info.retry_count``.
        """
        oid = self.id(name, cls)
        when = self.alarm(oid, oid.namespace)
        if when is None:
            return False
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def reply(outcome: Any) -> None:
            if not fut.done():
                fut.set_result(outcome)

        self.runtime.fire_alarm(oid.raw, oid.namespace, when, AlarmInfo(retry_count), reply)
        outcome = await fut
        if isinstance(outcome, Exception) and not isinstance(outcome, AbodeError):
            outcome = RemoteError(str(outcome), type(outcome).__name__)
        if isinstance(outcome, BaseException):
            raise outcome
        return True

    async def settle(self, timeout: float = 10.0) -> None:
        """Wait until no object has an event queued or running, a ``wait_until``
        pending, or a commit in flight."""
        deadline = time.monotonic() + timeout
        while any(not h.idle for h in self.runtime.hosts.values()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"objects still busy after {timeout:g} s")
            await asyncio.sleep(0.005)

    async def evict(self, name: str | ObjectId, cls: ClassOrName = None,
                    timeout: float = 10.0) -> bool:
        """Drop the object from memory once it is idle; False if it was not active."""
        key = self.id(name, cls).raw
        deadline = time.monotonic() + timeout
        while (host := self.runtime.hosts.get(key)) is not None and not host.idle:
            if time.monotonic() > deadline:
                raise TimeoutError(f"object still busy after {timeout:g} s")
            await asyncio.sleep(0.005)
        if host is None:
            return False
        self.runtime.evict(key)
        return True

    async def evict_all(self, timeout: float = 10.0) -> int:
        """Let every object finish, then drop them all from memory (sockets stay open:
        that is hibernation). Returns how many were evicted."""
        await self.settle(timeout)
        keys = list(self.runtime.hosts)
        for key in keys:
            self.runtime.evict(key)
        return len(keys)

    # -- WebSockets -----------------------------------------------------------------
    async def websocket(
        self,
        name: str | ObjectId,
        path: str = "/",
        cls: ClassOrName = None,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> TestSocket:
        """Open a WebSocket to the object: its ``fetch`` gets an upgrade request and
        must answer with ``ctx.accept_websocket(request)``; else ``UpgradeRefused``."""
        oid = self.id(name, cls)
        url = "http://object" + (path if path.startswith("/") else "/" + path)
        request = Request(url, headers={"Upgrade": "websocket", "Connection": "Upgrade",
                                        **(headers or {})})
        request.socket_id = new_socket_id(_ROUTER)
        # Registered before the call: frames the object sends while accepting are
        # released with its 101 and must find the socket (as at a router).
        sock = self._sockets[request.socket_id] = TestSocket(self, request.socket_id, oid)
        try:
            response = await self.get(oid, oid.namespace).fetch(request)
        except BaseException:
            self._sockets.pop(request.socket_id, None)
            raise
        if response.status != 101 or response.websocket is None:
            self._sockets.pop(request.socket_id, None)
            raise UpgradeRefused(response)
        sock.response = response
        return sock

    def _push(self, frame: Frame) -> None:
        sock = self._sockets.get(frame.socket_id)
        if sock is not None:
            sock._deliver(frame)
            if sock.closed:
                self._sockets.pop(frame.socket_id, None)

    def _client_frame(self, sock: TestSocket, kind: FrameKind, data: str | bytes | None,
                      code: int = 0, reason: str = "") -> None:
        if kind == FrameKind.CLOSE:
            self._sockets.pop(sock.socket_id, None)
        self.runtime.sockets.on_frame(_ROUTER, Frame(
            sock.socket_id, sock.object_id.namespace, sock.object_id.raw, kind, data, code, reason,
        ))
