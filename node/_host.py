"""One active object: its instance, its mailbox, and the output gate.

Events run one at a time in arrival order, each to completion (awaits included);
a call from the running event's own chain (A -> B -> A) is admitted at once so
call cycles cannot deadlock. Each event's writes form one batch; its outputs are
released only when the object's latest commit is durable, while the next event may
already run.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from abode.cluster import codec
from abode.cluster.errors import (
    AbodeError,
    CallTimeout,
    CommitFailed,
    Overloaded,
    Refused,
    RemoteError,
    Unavailable,
    UnknownMethod,
)
from abode.cluster.http import Request, Response
from abode.cluster.ids import ObjectId
from abode.cluster.invocation import Effects, current_chain, current_deadline, current_effects
from abode.cluster.sockets import Frame
from abode.cluster.user_code import format_user_traceback
from abode.node._object import (
    RESERVED_METHODS,
    AbortSignal,
    AlarmInfo,
    DurableObject,
    ObjectContext,
)
from abode.node._sockets import SocketInfo
from abode.node._storage import Frame as StorageFrame
from abode.node._storage import Storage
from abode.node._store import CommitFenced, DiskFull
from abode.node._websocket import WebSocket

if TYPE_CHECKING:
    from abode.node._runtime import Runtime

log = logging.getLogger(__name__)

Reply = Callable[[Any], None]  # receives an Outcome or an exception
_UNBOUNDED = frozenset({"task", "ws_close", "alarm"})
_CALLS = frozenset({"fetch", "rpc"})  # events with a caller that can retry a refusal


@dataclass(slots=True)
class Event:
    kind: str  # "fetch" | "rpc" | "alarm" | "task" | "ws_message" | "ws_close" | "ws_error"
    chain: bytes
    reply: Reply | None
    deadline: float
    request: Request | None = None
    method: str = ""
    args: bytes = b""
    coro: Coroutine[Any, Any, Any] | None = None
    alarm: AlarmInfo | None = None
    alarm_when: int = 0
    socket: SocketInfo | None = None
    data: Any = None  # ws_message: str | bytes; ws_close: (code, reason, was_clean)
    # Outputs held at the gate with the reply: socket frames, sockets accepted.
    frames: list[tuple[str, Frame]] | None = None  # (router, frame)
    frame: StorageFrame | None = None  # the event's storage layers
    accepted: list[SocketInfo] | None = None
    undo: list[Callable[[], None]] | None = None  # in-memory socket changes, undone on raise
    effects: Effects = field(default_factory=Effects)  # whether it called other objects
    queued: float = field(default_factory=time.monotonic)  # arrival (metrics: wait time)


class ObjectHost:
    def __init__(self, runtime: Runtime, object_id: ObjectId, cls: type[DurableObject]) -> None:
        self.runtime = runtime
        self.id = object_id
        self.cls = cls
        self.storage = Storage(object_id.raw, object_id.namespace, runtime.store)
        self.ctx = ObjectContext(object_id, self.storage, self)
        self.instance: DurableObject | None = None
        self.queue: deque[Event] = deque()
        self.pump: asyncio.Task[None] | None = None
        self.running: Event | None = None
        self.tasks = 0  # wait_until events not yet finished
        self.nested = 0  # re-entrant events running now
        self.broken = False
        self.last_used = time.monotonic()
        self.active_since = self.last_used
        self._blockers: list[asyncio.Task[Any]] = []
        # The last commit of the instance this one replaces (after a reset): activation
        # waits for it, so the fresh instance reads what earlier events wrote.
        self.after: asyncio.Future[None] | None = None
        # The lease this instance's cache was built under (node._ownership, fencing
        # tickets): its events commit and answer only while that lease is fresh.
        self.ticket: object = None

    # -- admission ------------------------------------------------------------------
    def submit(self, ev: Event) -> None:
        running = self.running
        if running is not None and ev.chain == running.chain:
            self.nested += 1
            self.runtime.spawn(self._run_nested(ev))
            return
        # Tasks, close events and alarms are bounded by what created them (events,
        # sockets, one alarm per object); a full mailbox must not cost an alarm a try.
        if len(self.queue) >= self.runtime.config.max_queue and ev.kind not in _UNBOUNDED:
            if ev.socket is not None:
                self.runtime.sockets.overloaded(ev.socket)
            else:
                _reply(ev, Overloaded("overloaded", retry_after=1.0))
            return
        self.queue.append(ev)
        if self.pump is None:
            self.pump = self.runtime.spawn(self._pump())

    def wait_until(self, coro: Coroutine[Any, Any, Any]) -> None:
        self.tasks += 1
        self.submit(Event("task", os.urandom(8), None, float("inf"), coro=coro))

    def block_while(self, fn: Callable[[], Awaitable[Any]]) -> asyncio.Task[Any]:
        # A task, not a coroutine: a constructor (which cannot await) just calls it,
        # and activation waits for every such task before the first event.
        task = asyncio.ensure_future(fn())
        self._blockers.append(task)
        return task

    def on_failure(self, undo: Callable[[], None]) -> None:
        """Undo an in-memory effect (socket close, attachment) if the running event raises."""
        ev = self.running
        if ev is not None:
            if ev.undo is None:
                ev.undo = []
            ev.undo.append(undo)

    def emit_frame(self, router: str, frame: Frame) -> None:
        """A frame the object sends leaves with its event's outputs."""
        ev = self.running
        if ev is not None:
            if ev.frames is None:
                ev.frames = []
            ev.frames.append((router, frame))
        else:
            self._gate(Event("task", b"", None, 0.0, frames=[(router, frame)]), None)

    def accept_websocket(self, request: Request, tags: Any) -> Response:
        ev = self.running
        if ev is None or ev.kind != "fetch" or ev.request is None:
            raise RuntimeError("accept_websocket is called from fetch with the upgrade request")
        if not request.socket_id:
            raise ValueError("the request is not a WebSocket upgrade")
        info = self.runtime.sockets.accept(self, request.socket_id, tags)
        if ev.accepted is None:
            ev.accepted = []
        ev.accepted.append(info)
        resp = Response(status=101)
        resp.websocket = WebSocket(info, self.runtime.sockets)
        return resp

    def websockets(self, tag: str | None = None) -> list[WebSocket]:
        registry = self.runtime.sockets
        return [WebSocket(info, registry) for info in registry.of_object(self.id.raw, tag)]

    @property
    def idle(self) -> bool:
        last = self.storage.last_commit
        return (
            self.pump is None
            and not self.queue
            and self.tasks == 0
            and self.nested == 0
            and (last is None or last.done())
            and (self.after is None or self.after.done())
        )

    # -- the mailbox ----------------------------------------------------------------
    async def _pump(self) -> None:
        try:
            if self.instance is None and not await self._activate():
                return
            while self.queue and not self.broken:
                ev = self.queue.popleft()
                if ev.deadline < time.monotonic():
                    _reply(ev, CallTimeout("the call timed out before the object could run it"))
                    continue
                if ev.kind in _CALLS and (refusal := self.runtime.refusal(self.id.raw)):
                    _reply(ev, Unavailable(refusal, retry_after=1.0))  # never ran: retryable
                    continue
                if self._outlived_lease():
                    self.queue.appendleft(ev)  # for the fresh instance that takes over
                    self.broken = True
                    break
                await self._run(ev)
        finally:
            self.pump = None
            self.last_used = time.monotonic()
            if self.broken:
                self.runtime.reset(self)

    def _outlived_lease(self) -> bool:
        """Whether the node lost the lease this instance began under and holds a new
        one: another node may have been home meanwhile, so a fresh instance (reading
        storage again) must take over."""
        fence = self.runtime.fence
        return fence.lapsed(self.ticket) is not None and fence.lapsed(fence.ticket()) is None

    async def _activate(self) -> bool:
        if self.after is not None and not self.after.done():
            await asyncio.wait([self.after])
        t0 = time.perf_counter()
        self.ticket = self.runtime.fence.ticket()
        # Sockets stored with the object whose routers still reach this node are its
        # own again (after a failover the registry of the old home is gone).
        self.runtime.sockets.restore(self.id.raw, self.id.namespace)
        self.storage.begin()
        try:
            self.instance = self.cls(self.ctx, self.runtime.env)
            while self._blockers:
                await self._blockers.pop(0)
            touched = self.storage.alarm_touched()
            alarm = (await self.storage.get_alarm(),) if touched else None
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self.storage.discard()
            log.exception("constructor of %s failed", self.id.namespace)
            self.broken = True
            err = exc.to_error() if isinstance(exc, AbortSignal) else exc
            while self.queue:
                _reply(self.queue.popleft(), err)
            return False
        self._commit(self.storage.end(), alarm)
        self.runtime.activated(self, time.perf_counter() - t0)
        return True

    async def _run_nested(self, ev: Event) -> None:
        try:
            await self._run(ev)
        finally:
            self.nested -= 1

    async def _run(self, ev: Event) -> None:
        self.runtime.observer.event_started(self, ev)
        storage = self.storage
        outer, self.running = self.running, ev
        # A re-entrant event sees its parent event's writes and adds its own on top.
        nested = outer is not None and outer.chain == ev.chain
        ev.frame = storage.begin(outer.frame if nested and outer is not None else None)
        token = current_chain.set(ev.chain)
        deadline_token = current_deadline.set(ev.deadline)
        effects_token = current_effects.set(ev.effects)
        outcome: Any
        alarm: tuple[int | None] | None = None
        try:
            outcome = await self._dispatch(ev)
            while self._blockers:
                await self._blockers.pop(0)
            if storage.depth == 1 and storage.alarm_touched():
                alarm = (await storage.get_alarm(),)
        except asyncio.CancelledError as exc:
            storage.discard()
            task = asyncio.current_task()
            if task is None or task.cancelling():
                raise  # the runtime is stopping this event
            outcome = exc  # the handler's own await was cancelled: its event failed
            self._failed(ev)
        except AbortSignal as sig:
            storage.discard()
            outcome = sig.to_error()
            self.broken = True
            self._failed(ev)
        except BaseException as exc:  # not only Exception: a pump must never die mid-event
            storage.discard()
            outcome = exc
            self._failed(ev)
            if ev.kind != "rpc" or not isinstance(exc, AbodeError):
                # The author's bug: its traceback from their own frame on, at any level.
                log.error("%s handler of %s/%s raised\n%s", ev.kind, self.id.namespace,
                          self.id.name or self.id.hex[:16], format_user_traceback(exc))
        else:
            if (lapsed := self.runtime.fence.lapsed(self.ticket)) is not None:
                # What it read may be stale by now: it neither commits nor answers.
                storage.discard()
                outcome = _refused(ev, lapsed)
                self.broken = True
                self._failed(ev)
            else:
                self._commit(storage.end(), alarm)
        finally:
            current_chain.reset(token)
            current_deadline.reset(deadline_token)
            current_effects.reset(effects_token)
            self.running = outer
            self.last_used = time.monotonic()
            if ev.kind == "task":
                self.tasks -= 1
        self.runtime.observer.event_finished(self, ev, outcome)
        self._gate(ev, outcome)

    async def _dispatch(self, ev: Event) -> Any:
        inst = self.instance
        assert inst is not None
        if ev.kind == "fetch":
            assert ev.request is not None
            resp = await inst.fetch(ev.request)
            if not isinstance(resp, Response):
                raise TypeError(f"fetch must return a Response, not {type(resp).__name__}")
            return resp
        if ev.kind == "rpc":
            return await self._call_method(inst, ev.method, ev.args)
        if ev.kind == "alarm":
            return await self._alarm(inst, ev)
        if ev.kind == "ws_message":
            assert ev.socket is not None
            return await inst.websocket_message(WebSocket(ev.socket, self.runtime.sockets), ev.data)
        if ev.kind == "ws_close":
            assert ev.socket is not None
            self.storage.put_socket_meta(ev.socket.socket_id, None)
            code, reason, clean = ev.data
            ws = WebSocket(ev.socket, self.runtime.sockets)
            return await inst.websocket_close(ws, code, reason, clean)
        if ev.kind == "ws_error":
            assert ev.socket is not None
            ws = WebSocket(ev.socket, self.runtime.sockets)
            return await inst.websocket_error(ws, ConnectionError(ev.data or "socket error"))
        assert ev.coro is not None
        return await ev.coro

    def _failed(self, ev: Event) -> None:
        # An event that raised has no outputs: its frames are dropped and the sockets
        # it accepted never existed (its 101 is replaced by the error).
        ev.frames = None
        for undo in reversed(ev.undo or ()):
            undo()
        if ev.accepted:
            self.runtime.sockets.discard_accepted(ev.accepted)

    async def _call_method(self, inst: DurableObject, name: str, payload: bytes) -> bytes:
        fn = None
        if not name.startswith("_") and name not in RESERVED_METHODS:
            fn = getattr(inst, name, None)
        if fn is None or not callable(fn):
            raise UnknownMethod(f"{type(inst).__name__} has no public method {name!r}")
        args, kwargs = codec.unpack(payload)
        result = fn(*args, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        return codec.pack(result)

    async def _alarm(self, inst: DurableObject, ev: Event) -> None:
        # A deleted or moved alarm does not fire (it may have changed after scheduling).
        if await self.storage.get_alarm() != ev.alarm_when:
            return
        assert ev.alarm is not None
        await inst.alarm(ev.alarm)
        if not self.storage.alarm_touched():
            await self.storage.delete_alarm()

    # -- durability and the output gate ---------------------------------------------
    def _commit(self, batch: Any, alarm: tuple[int | None] | None = None) -> None:
        if not batch:
            return
        batch.ticket = self.ticket
        fut = self.runtime.committer.submit(batch)
        self.storage.last_commit = fut
        ns, oid = self.id.namespace, self.id.raw

        def done(f: asyncio.Future[None]) -> None:
            if f.cancelled() or f.exception() is not None:
                self.broken = True
                if self.pump is None:
                    self.runtime.reset(self)
            elif alarm is not None:
                self.runtime.alarms.set(oid, ns, alarm[0])

        fut.add_done_callback(done)

    def _gate(self, ev: Event, outcome: Any) -> None:
        fut = self.storage.last_commit
        if fut is None or fut.done():
            self._release(ev, _after_commit(fut, outcome, ev))
        else:
            fut.add_done_callback(lambda f: self._release(ev, _after_commit(f, outcome, ev)))

    def _release(self, ev: Event, outcome: Any) -> None:
        _reply(ev, outcome)
        # A refused or failed commit: the event's writes are gone, so are its outputs.
        if ev.frames and not isinstance(outcome, CommitFailed | Refused):
            push = self.runtime.sockets.push
            for router, frame in ev.frames:
                push(router, frame)


def _refused(ev: Event, why: str) -> AbodeError:
    """The outcome of an event whose writes were refused before they reached the disk
    (the object moved or the lease it ran under lapsed): its writes and outputs are
    dropped, so unless it called another object it had no effect, and the caller may
    run it again at the object's home (a 503 the router retries), as with a call
    refused before it ran."""
    if ev.effects.called_out:
        return CommitFailed(f"the object's writes were refused: {why}")
    return Unavailable(f"the object's writes were refused, nothing of the event took "
                       f"effect: {why}", retry_after=0.1)


def _after_commit(fut: asyncio.Future[None] | None, outcome: Any, ev: Event) -> Any:
    if fut is not None and (fut.cancelled() or fut.exception() is not None):
        if isinstance(exc := None if fut.cancelled() else fut.exception(), CommitFailed):
            return exc  # e.g. CommitUncertain: a replica did not take the writes
        if isinstance(exc, DiskFull):
            return exc  # 503 with a reason: nothing was written, nothing left the node
        if isinstance(exc, CommitFenced):
            return _refused(ev, str(exc))
        return CommitFailed("the object's writes could not be made durable; it was reset")
    return outcome


def _reply(ev: Event, outcome: Any) -> None:
    if ev.reply is not None:
        if isinstance(outcome, BaseException) and not isinstance(outcome, AbodeError):
            # A handler's own exception reaches every caller (local or across the wire)
            # as a RemoteError carrying its type and message.
            outcome = RemoteError(str(outcome), type(outcome).__name__)
        ev.reply(outcome)
    elif isinstance(outcome, BaseException) and ev.kind == "task":
        log.warning("wait_until task failed: %s: %s", type(outcome).__name__, outcome)
