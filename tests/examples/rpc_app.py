"""Test app: every example, plus an edge function that exposes RPC over HTTP.

``POST /rpc/{namespace}/{name}/{method}`` with a JSON list of arguments calls
``await env.<namespace>.get_by_name(name).<method>(*args)`` and answers
``{"result": ...}``; a raising method answers 500 ``{"error", "type"}``. Everything
else takes the default routing, so the examples' HTTP APIs work as in examples.app.
"""

from __future__ import annotations

from typing import Any

from abode import RemoteError, Request, Response
from examples.app import Cart, Counter, Document, RateLimiter, Tickets

__all__ = ["Cart", "Counter", "Document", "RateLimiter", "Tickets", "edge"]


async def edge(request: Request, env: Any) -> Response:
    parts = request.path.split("/")
    if len(parts) == 5 and parts[1] == "rpc" and request.method == "POST":
        _, _, namespace, name, method = parts
        args = await request.json() if request.body else []
        stub = env.namespace(namespace).get_by_name(name)
        try:
            result = await getattr(stub, method)(*args)
        except RemoteError as exc:
            return Response.json({"error": exc.message, "type": exc.remote_type}, status=500)
        return Response.json({"result": result})
    return await env.route(request)
