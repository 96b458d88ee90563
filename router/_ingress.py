"""HTTP ingress: aiohttp request -> edge function or default routing -> aiohttp response."""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import web

from abode.cluster.app import App
from abode.cluster.env import Env
from abode.cluster.errors import AbodeError, RequestTooLarge
from abode.cluster.http import Request, Response, error_response
from abode.cluster.http_status import error_to_response
from abode.cluster.sockets import SocketOwner
from abode.router._websockets import SocketHub

log = logging.getLogger(__name__)

# Set by aiohttp from the body it sends; copying them from the object would lie.
_HOP_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})


def make_app(
    app: App,
    env: Env,
    hub: SocketHub,
    *,
    max_body: int,
    healthy: Callable[[], dict[str, object] | None],
) -> web.Application:
    edge = app.edge

    async def handle(request: web.Request) -> web.StreamResponse:
        socket_id = ""
        try:
            if request.content_length is not None and request.content_length > max_body:
                raise RequestTooLarge(f"request body is over the {max_body}-byte limit")
            try:
                body = await request.read()
            except web.HTTPRequestEntityTooLarge:
                raise RequestTooLarge(f"request body is over the {max_body}-byte limit") from None
            req = Request(
                str(request.url), method=request.method, headers=request.headers.items(), body=body
            )
            if _is_upgrade(request):
                req.socket_id = socket_id = hub.expect()
            resp = await (edge(req, env) if edge is not None else env.route(req))
            if not isinstance(resp, Response):
                raise TypeError(f"edge must return a Response, not {type(resp).__name__}")
        except AbodeError as exc:
            resp = error_to_response(exc)
        except Exception as exc:
            log.exception("edge function raised")
            resp = error_response(500, f"{type(exc).__name__}: {exc}")
        if socket_id:
            if resp.status == 101 and isinstance(resp.websocket, SocketOwner):
                return await hub.serve(request, socket_id, resp.websocket)
            hub.abandon(socket_id)
            if resp.status == 101:
                resp = error_response(500, "101 without an accepted WebSocket: use ctx.accept_websocket")
        return to_aiohttp(resp)

    async def health(request: web.Request) -> web.Response:
        state = healthy()
        if state is None:
            return to_aiohttp(error_response(503, "no live node yet", retry_after=1))
        return web.json_response({"status": "ok", **state})

    web_app = web.Application(client_max_size=max_body)
    web_app.router.add_route("GET", "/_abode/health", health)
    web_app.router.add_route("*", "/{tail:.*}", handle)
    return web_app


def _is_upgrade(request: web.Request) -> bool:
    return request.method == "GET" and request.headers.get("Upgrade", "").lower() == "websocket"


def to_aiohttp(resp: Response) -> web.Response:
    out = web.Response(body=resp.body, status=resp.status)
    for name, value in resp.headers.items():
        if name.lower() not in _HOP_HEADERS:
            out.headers.add(name, value)
    return out
