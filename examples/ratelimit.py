"""A fixed-window rate limiter per client; an alarm closes each window.

One object per client (an API key, a user, an IP address) counts that client's
requests in the current window. The first request of a window opens it and sets
the object's alarm for the window's end; ``alarm()`` deletes the count, so the
next request opens a fresh window. Nothing polls and nothing expires lazily.

    curl -X POST 'localhost:8787/RateLimiter/ada?limit=3&window=10'
        -> 200 {"allowed": true, "remaining": 2}
    ... the fourth request within 10 s:
        -> 429 {"allowed": false, "remaining": 0, "retry_after": 8.2}, Retry-After: 9
    curl localhost:8787/RateLimiter/ada/status  -> {"count": 3, "window_end": ..., "alarm": ...}

``limit`` (requests per window) and ``window`` (seconds) come from the query string,
defaulting to 10 per 1 s. They are the caller's to choose: in a real deployment an
edge function asks the limiter before serving, over RPC —
``await env.RateLimiter.get_by_name(client).hit(100, 60.0)`` — and the limiter is
not reachable from outside (see examples/edge.py).
"""

from __future__ import annotations

import math
import time
from typing import Any

from abode import AlarmInfo, DurableObject, Request, Response

DEFAULT_LIMIT = 10
DEFAULT_WINDOW = 1.0  # seconds
MAX_WINDOW = 24 * 3600.0


class RateLimiter(DurableObject):
    async def fetch(self, request: Request) -> Response:
        path = request.path.rstrip("/") or "/"
        if request.method == "GET" and path == "/status":
            return Response.json(await self.status())
        if path != "/":
            return Response.json({"error": "POST / to count a request, GET /status"}, status=404)
        try:
            limit = int(request.query.get("limit", DEFAULT_LIMIT))
            window = float(request.query.get("window", DEFAULT_WINDOW))
            verdict = await self.hit(limit, window)
        except ValueError as exc:
            return Response.json({"error": str(exc)}, status=400)
        if verdict["allowed"]:
            return Response.json(verdict)
        # Retry-After is whole seconds; round up so a client that obeys it is let in.
        retry_after = str(max(1, math.ceil(verdict["retry_after"])))
        return Response.json(verdict, status=429, headers={"Retry-After": retry_after})

    # -- RPC methods ------------------------------------------------------------------
    async def hit(self, limit: int = DEFAULT_LIMIT, window: float = DEFAULT_WINDOW) -> dict[str, Any]:
        """Count one request if the window has room; say whether it was allowed."""
        if not 1 <= limit <= 1_000_000:
            raise ValueError("limit must be from 1 to 1000000")
        if not 0.001 <= window <= MAX_WINDOW:
            raise ValueError(f"window must be from 0.001 to {MAX_WINDOW:g} seconds")
        storage = self.ctx.storage
        now_ms = time.time() * 1000
        window_end = await storage.get("window_end")
        if window_end is None:
            # The first request of a window opens it and schedules its end.
            window_end = int(now_ms + window * 1000)
            await storage.put({"window_end": window_end, "count": 0})
            await storage.set_alarm(window_end)
        count = await storage.get("count", 0)
        if count >= limit:
            retry_after = max(0.0, (window_end - now_ms) / 1000)
            return {"allowed": False, "remaining": 0, "retry_after": round(retry_after, 3)}
        # Turn-based execution: no other request of this client runs between the
        # read of `count` and this write, so the limit holds under any concurrency.
        await storage.put("count", count + 1)
        return {"allowed": True, "remaining": limit - count - 1}

    async def status(self) -> dict[str, Any]:
        storage = self.ctx.storage
        return {
            "count": await storage.get("count", 0),
            "window_end": await storage.get("window_end"),
            "alarm": await storage.get_alarm(),
        }

    async def alarm(self, info: AlarmInfo) -> None:
        # The window is over: forget it. The alarm is cleared once this returns.
        await self.ctx.storage.delete(["count", "window_end"])
