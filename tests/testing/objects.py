"""Object classes the abode.testing tests run in a testbed."""

from __future__ import annotations

import time
from typing import Any

from abode import AlarmInfo, DurableObject, Request, Response, WebSocket


class Reminder(DurableObject):
    """POST /in/{seconds} sets the alarm; the alarm counts its rings."""

    async def fetch(self, request: Request) -> Response:
        if request.method == "POST" and request.path.startswith("/in/"):
            at = int(time.time() * 1000 + float(request.path[4:]) * 1000)
            await self.ctx.storage.set_alarm(at)
            return Response.json({"alarm": at})
        return Response.json({"rang": await self.ctx.storage.get("rang", 0)})

    async def set_failing(self, failing: bool) -> None:
        await self.ctx.storage.put("failing", failing)

    async def alarm(self, info: AlarmInfo) -> None:
        await self.ctx.storage.put("rang", await self.ctx.storage.get("rang", 0) + 1)
        await self.ctx.storage.put("last_retry_count", info.retry_count)
        if await self.ctx.storage.get("again"):
            await self.ctx.storage.put("again", False)
            # Two hours: never the hour the first alarm was set to, however fast this runs.
            await self.ctx.storage.set_alarm(time.time() * 1000 + 7_200_000)
        if await self.ctx.storage.get("failing"):
            raise RuntimeError("alarm failed")

    async def ring_again(self) -> None:
        await self.ctx.storage.put("again", True)


class Account(DurableObject):
    async def deposit(self, amount: int) -> int:
        balance = await self.ctx.storage.get("balance", 0) + amount
        await self.ctx.storage.put("balance", balance)
        return balance

    async def balance(self) -> int:
        return await self.ctx.storage.get("balance", 0)

    async def audit(self, bank: str) -> int:
        # Calls back into the Bank that is calling us: the call chain admits it.
        return await self.env.Bank.get_by_name(bank).count()


class Bank(DurableObject):
    async def pay(self, account: str, amount: int) -> int:
        balance = await self.env.Account.get_by_name(account).deposit(amount)
        await self.ctx.storage.put("payments", await self.ctx.storage.get("payments", 0) + 1)
        return balance

    async def count(self) -> int:
        return await self.ctx.storage.get("payments", 0)

    async def audit_via(self, account: str, me: str) -> int:
        # Bank -> Account -> Bank: the inner call belongs to this event's chain.
        return await self.env.Account.get_by_name(account).audit(me)


class Booted(DurableObject):
    """Counts its constructor runs durably and loads state before any event."""

    def __init__(self, ctx: Any, env: Any) -> None:
        super().__init__(ctx, env)
        self.loaded: Any = None
        ctx.block_concurrency_while(self._load)

    async def _load(self) -> None:
        boots = await self.ctx.storage.get("boots", 0) + 1
        await self.ctx.storage.put("boots", boots)
        self.loaded = boots

    async def boots(self) -> Any:
        return self.loaded


class Faulty(DurableObject):
    async def fetch(self, request: Request) -> Response:
        await self.ctx.storage.put("touched", True)
        raise ValueError("boom")

    async def explode(self) -> None:
        await self.ctx.storage.put("touched", True)
        raise KeyError("missing")

    async def fine(self) -> str:
        return "ok"

    async def later(self) -> None:
        async def task() -> None:
            await self.ctx.storage.put("later", True)

        self.ctx.wait_until(task())


class Echo(DurableObject):
    """Accepts sockets tagged by query; echoes messages with the socket's attachment."""

    async def fetch(self, request: Request) -> Response:
        if not request.is_websocket_upgrade:
            return Response.json({"error": "upgrade required"}, status=426)
        resp = self.ctx.accept_websocket(request, tags=[request.query.get("tag", "none")])
        resp.websocket.serialize_attachment({"user": request.query.get("user", "?")})
        return resp

    async def websocket_message(self, ws: WebSocket, message: str | bytes) -> None:
        user = ws.deserialize_attachment()["user"]
        for other in self.ctx.get_websockets():
            other.send(f"{user}: {message!s}")
        if message == "bye":
            ws.close(4000, "asked to")

    async def websocket_close(self, ws: WebSocket, code: int, reason: str, was_clean: bool) -> None:
        await self.ctx.storage.put("closed", [code, reason, len(self.ctx.get_websockets())])
