"""An edge function: stateless code in front of the objects, on every router.

With ``async def edge(request, env)`` in the app, every request (except
``/_abode/*``) reaches this function with its original path. Here it serves a small
API of its own and hands everything else to the default routing:

    abode dev examples.edge
    curl -X POST localhost:8787/api/visits/home      -> {"page": "home", "visits": 1}
    curl localhost:8787/api/visits/home              -> {"page": "home", "visits": 1}
    curl -X POST localhost:8787/Counter/x/increment  -> default routing, as without an edge

``/api/*`` is rate limited per client (the ``X-Client-Id`` header) by asking a
RateLimiter object over RPC, and page visits are Counter objects reached over RPC:
``env.Counter.get_by_name(...)`` returns a stub, and ``await stub.add(1)`` runs
``Counter.add`` in that object, wherever in the cluster it lives. A stub call is one
hop to the object; the edge function keeps no state of its own.
"""

from __future__ import annotations

import math
from typing import Any

from abode import Request, Response
from examples.counter import Counter
from examples.ratelimit import RateLimiter

API_LIMIT = 100  # requests per client per window on /api/*
API_WINDOW = 1.0  # seconds

__all__ = ["Counter", "RateLimiter", "edge"]


async def edge(request: Request, env: Any) -> Response:
    parts = request.path.strip("/").split("/")
    if parts[0] != "api":
        # Everything else: /{namespace}/{name}/... exactly as without an edge function.
        return await env.route(request)

    client = request.headers.get("X-Client-Id", "anonymous")
    verdict = await env.RateLimiter.get_by_name(client).hit(API_LIMIT, API_WINDOW)
    if not verdict["allowed"]:
        return Response.json(
            {"error": "too many requests", "retry_after": verdict["retry_after"]},
            status=429,
            headers={"Retry-After": str(max(1, math.ceil(verdict["retry_after"])))},
        )

    if len(parts) == 3 and parts[1] == "visits" and parts[2]:
        page = parts[2]
        counter = env.Counter.get_by_name(f"visits:{page}")
        if request.method == "POST":
            return Response.json({"page": page, "visits": await counter.add(1)})
        if request.method == "GET":
            return Response.json({"page": page, "visits": await counter.value()})
        return Response.json({"error": "GET or POST"}, status=405)
    return Response.json({"error": f"no API route {request.path}"}, status=404)
