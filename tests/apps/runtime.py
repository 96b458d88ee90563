"""Objects (and an edge function) that exercise the runtime's guarantees in tests/node.

Module globals are per process: they record what happened inside ``abode dev``
(activations, live instances, alarm calls) and are read back through fetch.
Objects are keyed by their id's hex (tests compute it with ``cluster.ids``).
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
import weakref
from typing import Any

from abode import (
    AlarmInfo,
    CallTimeout,
    DurableObject,
    RemoteError,
    Request,
    Response,
    UnknownMethod,
)

ACTIVATIONS: dict[str, int] = {}
LIVE: weakref.WeakValueDictionary[str, DurableObject] = weakref.WeakValueDictionary()
ALARM_CALLS: dict[str, list[dict[str, Any]]] = {}


def now_ms() -> int:
    return int(time.time() * 1000)


class Fatal(BaseException):
    """Not an Exception: user code's ``except Exception`` would not catch it."""


class Box(DurableObject):
    """A general-purpose object: storage, errors, calls, wait_until, alarms."""

    def __init__(self, ctx: Any, env: Any) -> None:
        super().__init__(ctx, env)
        key = ctx.id.hex
        ACTIVATIONS[key] = ACTIVATIONS.get(key, 0) + 1
        LIVE[key] = self
        self.instance = os.urandom(6).hex()

    async def fetch(self, request: Request) -> Response:
        storage = self.ctx.storage
        q = request.query
        parts = request.path.strip("/").split("/")
        op = parts[0]
        if op == "info":
            return Response.json({
                "instance": self.instance,
                "activations": ACTIVATIONS[self.ctx.id.hex],
                "id": self.ctx.id.hex,
            })
        if op == "put":
            await storage.put(q["key"], q["value"])
            return Response.json({"ok": True})
        if op == "get":
            return Response.json({"value": await storage.get(q["key"])})
        if op == "put-then-raise":
            await storage.put(q["key"], q["value"])
            await storage.set_alarm(now_ms() + int(q.get("alarm_in_ms", "60000")))
            raise ValueError("boom after put")
        if op == "abort":
            self.ctx.abort("asked to")
        if op == "cancelled":
            # The handler's own awaitable was cancelled: CancelledError escapes it.
            await storage.put(q["key"], "from the cancelled event")
            task = asyncio.ensure_future(asyncio.sleep(10))
            task.cancel()
            await task
        if op == "base-exception":
            await storage.put(q["key"], "from the failed event")
            raise Fatal("not an Exception")
        if op == "slow":
            await asyncio.sleep(int(q.get("ms", "100")) / 1000)
            ran = await storage.get("ran", 0) + 1
            await storage.put("ran", ran)
            return Response.json({"ran": ran})
        if op == "ran":
            return Response.json({"ran": await storage.get("ran", 0)})
        if op == "wait-until":
            await storage.put("order", ["event"])
            self.ctx.wait_until(self._after_event(float(q.get("sleep", "0"))))
            return Response.json({"ok": True})
        if op == "order":
            return Response.json({"order": await storage.get("order", [])})
        if op == "call":
            # /call/{method}/{target name}: RPC to another Box; report a remote error.
            stub = self.env.Box.get_by_name(parts[2])
            try:
                value = await getattr(stub, parts[1])(*request.query.values())
            except RemoteError as exc:
                return Response.json({"remote_type": exc.remote_type, "message": exc.message,
                                      "type": type(exc).__name__})
            except UnknownMethod as exc:
                return Response.json({"type": type(exc).__name__, "message": str(exc)})
            return Response.json({"value": value})
        if op == "fan-in":
            # This object calls another, which calls back into this one twice at once.
            other = self.env.Box.get_by_name(parts[1])
            return Response.json({"results": await other.fan_in(self.ctx.id.hex)})
        if op == "chain":
            # A -> B -> A: B calls back into this object within the same call chain.
            other = self.env.Box.get_by_name(parts[1])
            return Response.json({"value": await other.call_back(self.ctx.id.hex)})
        if op == "deadlock":
            # Hold this object, then call one that is held the same way by another chain.
            await asyncio.sleep(float(q.get("hold", "0.6")))
            other = self.env.Box.get_by_name(parts[1])
            if q.get("catch"):
                try:
                    await other.pong()
                except CallTimeout as exc:
                    # Recorded: the edge's own (equal) timeout may have answered already.
                    await storage.put("caught", type(exc).__name__)
                    return Response.json({"caught": type(exc).__name__})
            return Response.json({"value": await other.pong()})
        if op == "alarm":
            return await self._alarm_op(parts[1] if len(parts) > 1 else "", q)
        return Response.json({"error": f"no route {request.path}"}, status=404)

    async def _after_event(self, sleep: float) -> None:
        if sleep:
            await asyncio.sleep(sleep)
        order = await self.ctx.storage.get("order", [])
        await self.ctx.storage.put("order", [*order, "task"])

    async def _alarm_op(self, op: str, q: dict[str, str]) -> Response:
        storage = self.ctx.storage
        if op == "set":
            when = now_ms() + int(q["in_ms"])
            await storage.put("alarm_fail", int(q.get("fail", "0")))
            await storage.set_alarm(when)
            return Response.json({"when": when})
        if op == "set-then-sleep":
            # Move the alarm, then stay busy while the old one's event waits in the mailbox
            # (behind a wait_until task too, when task_ms is given).
            if "task_ms" in q:
                self.ctx.wait_until(asyncio.sleep(int(q["task_ms"]) / 1000))
            await storage.set_alarm(now_ms() + int(q["in_ms"]))
            await asyncio.sleep(int(q["sleep_ms"]) / 1000)
            return Response.json({"ok": True})
        if op == "delete":
            await storage.delete_alarm()
            return Response.json({"ok": True})
        if op == "state":
            return Response.json({
                "alarm": await storage.get_alarm(),
                "fired": await storage.get("alarm_fired", 0),
                "fired_at": await storage.get("alarm_fired_at"),
                "calls": ALARM_CALLS.get(self.ctx.id.hex, []),
            })
        return Response.json({"error": f"no alarm op {op}"}, status=404)

    async def alarm(self, info: AlarmInfo) -> None:
        storage = self.ctx.storage
        ALARM_CALLS.setdefault(self.ctx.id.hex, []).append(
            {"retry_count": info.retry_count, "is_retry": info.is_retry, "at": now_ms()}
        )
        if info.retry_count < await storage.get("alarm_fail", 0):
            await storage.put("alarm_fired", -1000)  # discarded: the event raises
            raise RuntimeError(f"alarm fails on try {info.retry_count}")
        await storage.put("alarm_fired", await storage.get("alarm_fired", 0) + 1)
        await storage.put("alarm_fired_at", now_ms())

    # -- RPC methods ----------------------------------------------------------------
    async def echo(self, *args: Any) -> list[Any]:
        return list(args)

    async def boom(self, message: str = "boom") -> None:
        raise ValueError(message)

    async def pong(self) -> str:
        return "pong"

    async def call_back(self, caller_hex: str) -> str:
        caller = self.env.Box.get(self.env.Box.id_from_string(caller_hex))
        return "back:" + await caller.pong()

    async def fan_in(self, target_hex: str) -> list[str]:
        """Call back into ``target`` twice at once (both calls are in its call chain)."""
        target = self.env.Box.get(self.env.Box.id_from_string(target_hex))
        results = await asyncio.gather(
            target.put_later("x", 0.05, 0.2), target.put_later("y", 0.1, 0, True),
            return_exceptions=True,
        )
        return [str(r) for r in results]

    async def put_later(self, key: str, before: float, after: float, fail: bool = False) -> str:
        await asyncio.sleep(before)
        await self.ctx.storage.put(key, "written")
        await asyncio.sleep(after)
        if fail:
            raise ValueError(f"{key} fails")
        return f"{key} ok"

    async def put_abort_get(self, target: str) -> list[Any]:
        """Queue put, abort and get on ``target`` together, in that order."""
        stub = self.env.Box.get_by_name(target)
        put, abort, get = await asyncio.gather(
            stub.fetch("/put?key=k&value=v", method="POST"),
            stub.fetch("/abort", method="POST"),
            stub.fetch("/get?key=k"),
            return_exceptions=True,
        )
        return [
            (await put.json())["ok"] and "ok",
            type(abort).__name__,
            (await get.json())["value"],
        ]

    async def _private(self) -> str:
        return "secret"


class Boot(DurableObject):
    """Loads its state in the constructor under block_concurrency_while."""

    def __init__(self, ctx: Any, env: Any) -> None:
        super().__init__(ctx, env)
        self.loaded = False
        self.ctx.block_concurrency_while(self._load)

    async def _load(self) -> None:
        await asyncio.sleep(0.2)
        self.boots = await self.ctx.storage.get("boots", 0) + 1
        await self.ctx.storage.put("boots", self.boots)
        self.loaded = True

    async def fetch(self, request: Request) -> Response:
        return Response.json({"loaded": self.loaded, "boots": self.boots})


class Early(DurableObject):
    """Sets its alarm while it activates (in the constructor's blocking load)."""

    def __init__(self, ctx: Any, env: Any) -> None:
        super().__init__(ctx, env)
        self.ctx.block_concurrency_while(self._load)

    async def _load(self) -> None:
        storage = self.ctx.storage
        if await storage.get_alarm() is None and not await storage.get("fired", 0):
            await storage.set_alarm(now_ms() + 200)

    async def fetch(self, request: Request) -> Response:
        storage = self.ctx.storage
        return Response.json({"alarm": await storage.get_alarm(),
                              "fired": await storage.get("fired", 0)})

    async def alarm(self, info: AlarmInfo) -> None:
        await self.ctx.storage.put("fired", await self.ctx.storage.get("fired", 0) + 1)


class Probe(DurableObject):
    """Reports on other objects of this process without touching them."""

    async def fetch(self, request: Request) -> Response:
        gc.collect()
        key = request.query["hex"]
        return Response.json({"live": key in LIVE, "activations": ACTIVATIONS.get(key, 0)})


async def edge(request: Request, env: Any) -> Response:
    """``/edge/{method}/{name}`` calls Box RPC methods from the edge; the rest routes."""
    parts = request.path.strip("/").split("/")
    if parts[0] == "edge" and len(parts) == 3:
        stub = env.Box.get_by_name(parts[2])
        try:
            value = await getattr(stub, parts[1])(*request.query.values())
        except RemoteError as exc:
            return Response.json({"type": type(exc).__name__, "remote_type": exc.remote_type,
                                  "message": exc.message})
        return Response.json({"value": value})
    return await env.route(request)
