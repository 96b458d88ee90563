"""The router's metrics: HTTP requests as the client sees them, plus routing state.

Requests are counted when their response starts (aiohttp's ``on_response_prepare``),
so a WebSocket upgrade counts once, as ``101``, with the latency to its 101 rather
than the socket's lifetime; a middleware stamps each request's arrival. The
``namespace`` label is the first path segment when it names a namespace of the app
(default routing), ``_abode`` for router endpoints, and ``_other`` for anything else
(e.g. paths an edge function interprets); nodes count exact per-namespace events.
Families and alerts: docs/metrics.md.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric

from abode.cluster.metrics import Histogram, counter, gauge, histogram

if TYPE_CHECKING:
    from abode.cluster.membership import MembershipView
    from abode.router._server import RouterServer

__all__ = ["RouterMetrics"]

_ARRIVED = "abode.arrived"
OTHER = "_other"
ROUTER = "_abode"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class RouterMetrics:
    """Every ``abode_router_*`` family of one router, on an injected registry."""

    def __init__(self, registry: CollectorRegistry, view: MembershipView | None = None) -> None:
        # Without a view (``abode dev``) the router has one static node.
        self.view = view
        self.server: RouterServer | None = None
        self.started = time.time()
        self.requests: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.latency: dict[str, Histogram] = {}
        self._namespaces: frozenset[str] = frozenset()
        registry.register(self)

    def attach(self, server: RouterServer, web_app: web.Application) -> None:
        """Instrument the router's aiohttp app (before it starts)."""
        self.server = server
        self._namespaces = frozenset(server.app.namespaces)
        for ns in self._namespaces:
            self.latency.setdefault(ns, Histogram())
        web_app.middlewares.append(self._stamp)
        web_app.on_response_prepare.append(self._prepared)

    @web.middleware
    async def _stamp(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        request[_ARRIVED] = time.perf_counter()
        return await handler(request)

    async def _prepared(self, request: web.Request, response: web.StreamResponse) -> None:
        arrived = request.get(_ARRIVED)
        if arrived is None:
            return
        seconds = time.perf_counter() - arrived
        ns = self._label(request.path)
        self.requests[ns, str(response.status)] += 1
        hist = self.latency.get(ns)
        if hist is None:
            hist = self.latency[ns] = Histogram()
        hist.observe(seconds)

    def _label(self, path: str) -> str:
        first = path.split("/", 2)[1] if path.startswith("/") else ""
        if first in self._namespaces:
            return first
        return ROUTER if first == ROUTER else OTHER

    # -- the collector ------------------------------------------------------------------
    def collect(self) -> Iterator[Metric]:
        server = self.server
        router_id = server.router_id if server is not None else ""
        yield gauge("abode_router_info", "Always 1; labels identify the router.", ["router_id"],
                    {(router_id,): 1})
        yield gauge("abode_router_start_time_seconds", "Unix time this router started.",
                    values={(): self.started})
        yield counter("abode_router_requests", "HTTP requests answered, by namespace (first "
                      "path segment) and status; a WebSocket upgrade counts as 101.",
                      ["namespace", "status"], {k: float(v) for k, v in self.requests.items()})
        yield histogram("abode_router_request_duration_seconds", "Time from a request's "
                        "arrival to its response starting (to the 101 for WebSockets).",
                        ["namespace"], {(ns,): h for ns, h in self.latency.items()})
        if server is None:
            return
        transport = server.transport
        yield counter("abode_router_retries", "Calls retried after a node refused them "
                      "(never ran: no home yet, fenced, moving).",
                      values={(): transport.retries})
        peers = dict(getattr(transport, "_peers", {}))
        yield counter("abode_router_node_calls", "Calls forwarded to each node over its "
                      "stream.", ["node"], {(a,): p.calls_sent for a, p in peers.items()})
        yield counter("abode_router_node_envelopes", "Stream messages sent to each node "
                      "(calls per envelope = batching).", ["node"],
                      {(a,): p.envelopes_sent for a, p in peers.items()})
        yield gauge("abode_router_websockets_open", "Client WebSockets open at this router.",
                    values={(): server.hub.open_sockets})
        view = self.view
        if view is not None:
            members, live, revision = len(view.members), len(view.live), view.revision
        else:
            members, live, revision = 1, 1, 0
        yield gauge("abode_router_ring_members", "Nodes in the ring this router routes by.",
                    values={(): members})
        yield gauge("abode_router_live_nodes", "Ring members with a live lease.",
                    values={(): live})
        yield gauge("abode_router_ring_revision", "Membership revision this router routes with.",
                    values={(): revision})
