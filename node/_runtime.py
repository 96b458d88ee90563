"""The object runtime of one node: which objects are active, and their lifecycles.

Activates an object on its first event, evicts idle ones (after ``idle_timeout``,
and least-recently-used past ``max_active_objects``), fires alarms, and drains on
shutdown. Each active object is an ``ObjectHost``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from abode.cluster import ids
from abode.cluster.app import App
from abode.cluster.env import Env
from abode.cluster.errors import Unavailable, UnknownNamespace
from abode.cluster.invocation import Invocation
from abode.cluster.supervisor import Tasks
from abode.node._alarms import AlarmScheduler
from abode.node._fence import Fence
from abode.node._host import Event, ObjectHost, Reply
from abode.node._metrics import Observer
from abode.node._object import AlarmInfo
from abode.node._sockets import SocketInfo, SocketRegistry
from abode.node._store import DISK_RETRY_AFTER, DiskFull, GroupCommitter, Replicate, Store

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    idle_timeout: float = 30.0
    max_active_objects: int = 10_000
    max_queue: int = 1000
    call_timeout: float = 30.0
    alarm_first_retry: float = 2.0


class Runtime:
    def __init__(
        self,
        app: App,
        store: Store,
        env: Env,
        config: RuntimeConfig,
        *,
        fence: Fence,
        replicate: Replicate | None,
        tasks: Tasks,
        storage_state: Callable[[str | None], None] = lambda full: None,
    ) -> None:
        self.app = app
        self.store = store
        self.env = env
        self.config = config
        self.fence = fence
        self._supervisor = tasks
        self.committer = GroupCommitter(
            store, fence=fence.commit_refusal, replicate=replicate, tasks=tasks,
            storage_state=storage_state,
        )
        self.alarms = AlarmScheduler(self, first_retry=config.alarm_first_retry)
        self.sockets = SocketRegistry(self, hand_over=fence.hand_over_sockets)
        self.hosts: OrderedDict[bytes, ObjectHost] = OrderedDict()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._long_lived: list[asyncio.Task[Any]] = []
        self._accepting = False
        self.activations = 0
        self.evictions = 0
        self.activation_seconds = 0.0
        self.observer = Observer()  # metrics hooks (node._metrics); no-ops by default

    # -- lifecycle ------------------------------------------------------------------
    def owns(self, object_id: bytes) -> bool:
        """Whether this node may run the object now."""
        return self.fence.owns(object_id)

    def refusal(self, object_id: bytes) -> str | None:
        """Why a call to the object must not start now (node fenced, object moved)."""
        return self.fence.refusal(object_id)

    async def start(self) -> None:
        self.committer.start()
        loaded = await self.alarms.load()
        if loaded:
            log.info("loaded %d pending alarms", loaded)
        self._long_lived = [
            self._supervisor.start("alarms", self.alarms.run()),
            self._supervisor.start("sweeper", self._sweep()),
        ]
        self._accepting = True

    async def drain(self, timeout: float = 10.0) -> None:
        """Stop admitting, let queued and running events finish, flush commits."""
        self._accepting = False
        self.sockets.shutdown()
        deadline = time.monotonic() + timeout
        while any(not h.idle for h in self.hosts.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        # One budget for the whole drain: the flush gets what the events left of it.
        await self.committer.close(timeout=max(0.5, deadline - time.monotonic()))

    async def stop(self) -> None:
        self._accepting = False
        for task in reversed(self._long_lived):  # newest first, as the supervisor would
            task.cancel()
            await asyncio.wait([task])
        self._long_lived = []
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.committer.close()
        self.hosts.clear()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Start a task this runtime owns (cancelled on stop)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- admission ------------------------------------------------------------------
    def submit(self, inv: Invocation, reply: Reply) -> None:
        """Deliver one call to its object; ``reply`` gets the outcome or an exception."""
        try:
            cls = self.app.objects.get(inv.namespace)
            if cls is None:
                raise UnknownNamespace(f"unknown namespace {inv.namespace!r}")
            oid = ids.id_from_bytes(inv.namespace, inv.object_id, inv.object_name or None)
            if not self._accepting:
                raise Unavailable("node is shutting down", retry_after=1.0)
            if self.store.full is not None:
                # Refused before it runs: it could not commit anything.
                raise DiskFull(f"node's disk is full: {self.store.full}",
                               retry_after=DISK_RETRY_AFTER)
        except Exception as exc:
            reply(exc)
            return
        ev = Event(
            "fetch" if inv.request is not None else "rpc",
            inv.chain,
            reply,
            time.monotonic() + inv.timeout,
            request=inv.request,
            method=inv.method,
            args=inv.args,
        )
        self._host(oid).submit(ev)

    def _host(self, oid: ids.ObjectId) -> ObjectHost:
        host = self.hosts.get(oid.raw)
        if host is None:
            host = ObjectHost(self, oid, self.app.objects[oid.namespace])
            self.hosts[oid.raw] = host
            if len(self.hosts) > self.config.max_active_objects:
                self._evict_lru(keep=oid.raw)
        else:
            self.hosts.move_to_end(oid.raw)
        return host

    def reset(self, host: ObjectHost) -> None:
        """Drop a broken instance; events that never ran go to a fresh one."""
        if self.hosts.get(host.id.raw) is host:
            del self.hosts[host.id.raw]
            self.observer.released(host, evicted=False)
        pending, host.queue = list(host.queue), type(host.queue)()
        log.warning("object %s:%s reset", host.id.namespace, host.id.hex[:16])
        last = host.storage.last_commit
        if last is not None and not last.done():
            self._host(host.id).after = last
        for ev in pending:
            self._host(host.id).submit(ev)

    def activated(self, host: ObjectHost, seconds: float) -> None:
        self.activations += 1
        self.activation_seconds += seconds
        self.observer.activated(host, seconds)

    def socket_event(
        self, info: SocketInfo, kind: str, *, data: Any = None, code: int = 0, reason: str = "",
        was_clean: bool = True,
    ) -> None:
        """Deliver a client's WebSocket event to the socket's object (waking it)."""
        if info.namespace not in self.app.objects:
            return
        if kind == "ws_close":
            data = (code, reason, was_clean)
        ev = Event(kind, os.urandom(8), None, float("inf"), socket=info, data=data)
        self._host(ids.ObjectId(info.namespace, info.object_id)).submit(ev)

    # -- alarms ---------------------------------------------------------------------
    def fire_alarm(self, oid: bytes, ns: str, when: int, info: AlarmInfo, reply: Reply) -> None:
        if ns not in self.app.objects or not self._accepting:
            reply(UnknownNamespace(ns))
            return
        if not self.owns(oid):
            # The object moved away (handoff): its new home fires the alarm.
            self.alarms.set(oid, ns, None)
            reply(None)
            return
        ev = Event("alarm", os.urandom(8), reply, float("inf"), alarm=info, alarm_when=when)
        self._host(ids.id_from_bytes(ns, oid)).submit(ev)

    def drop_alarm(self, oid: bytes, ns: str, when: int) -> None:
        """Delete an alarm that failed past its retries (if it is still the same one)."""

        async def drop() -> None:
            host = self._host(ids.id_from_bytes(ns, oid))
            if await host.storage.get_alarm() == when:
                await host.storage.delete_alarm()

        if ns in self.app.objects:
            self._host(ids.id_from_bytes(ns, oid)).wait_until(drop())

    # -- eviction -------------------------------------------------------------------
    async def _sweep(self) -> None:
        interval = max(0.05, min(1.0, self.config.idle_timeout / 4))
        while True:
            await asyncio.sleep(interval)
            cutoff = time.monotonic() - self.config.idle_timeout
            stale = [
                key for key, h in self.hosts.items() if h.last_used < cutoff and h.idle
            ]
            for key in stale:
                self.evict(key)

    def _evict_lru(self, keep: bytes) -> None:
        # Never ``keep``, the host being created: its caller is about to submit to it,
        # and evicting it would let a second instance of the object start.
        excess = len(self.hosts) - self.config.max_active_objects
        # Oldest first, and stop at the excess: a full scan per activation would make
        # every miss cost O(active objects).
        idle = (k for k, h in self.hosts.items() if h.idle and k != keep)
        for key in list(itertools.islice(idle, excess)):
            self.evict(key)

    def evict(self, key: bytes) -> None:
        host = self.hosts.pop(key, None)
        if host is not None:
            self.evictions += 1
            self.observer.released(host, evicted=True)
            host.instance = None

    @property
    def active_objects(self) -> int:
        return len(self.hosts)
