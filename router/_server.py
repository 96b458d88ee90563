"""One router's lifecycle: transport to nodes, then the HTTP listener; stop in reverse."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from abode.cluster.app import App
from abode.cluster.env import Env
from abode.cluster.placement import Placement
from abode.cluster.supervisor import Tasks
from abode.router._access import ACCESS_LOG, AccessLogger, RecordingTransport, record_objects
from abode.router._ingress import make_app
from abode.router._transport import RouterTransport
from abode.router._websockets import SocketHub

if TYPE_CHECKING:
    from abode.router._metrics import RouterMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RouterConfig:
    host: str = "127.0.0.1"
    port: int = 8787
    max_body: int = 32 * 1024 * 1024
    call_timeout: float = 30.0


class RouterServer:
    def __init__(
        self,
        app: App,
        placement: Placement,
        config: RouterConfig,
        *,
        tasks: Tasks,
        router_id: str = "",
        healthy: Callable[[], dict[str, object] | None] | None = None,
        survive_node_loss: Callable[[], bool] = lambda: False,
        metrics: RouterMetrics | None = None,
        on_node_lost: Callable[[str], None] | None = None,
    ) -> None:
        self.metrics = metrics
        # What /_abode/health reports, or None while the router cannot route.
        self._health = healthy or (lambda: {})
        self.app = app
        self.config = config
        self.router_id = router_id or os.urandom(6).hex()
        self._tasks = tasks
        self.transport = RouterTransport(placement, router_id=self.router_id)
        self.hub = SocketHub(self.router_id, self.transport, survive_node_loss=survive_node_loss)
        self.transport.on_frames = self.hub.on_frames
        self._on_node_lost = on_node_lost
        self.transport.on_lost = self._node_lost
        self.env = Env(app.namespaces, RecordingTransport(self.transport),
                       call_timeout=config.call_timeout)
        self._runner: web.AppRunner | None = None
        self._serving: asyncio.Task[None] | None = None
        self.port = 0

    def _node_lost(self, address: str) -> None:
        self.hub.on_lost(address)
        if self._on_node_lost is not None:
            self._on_node_lost(address)  # e.g. crash detection (cluster.crashes)

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    def _healthy(self) -> dict[str, object] | None:
        state = self._health()
        return None if state is None else {"namespaces": self.app.namespaces, **state}

    async def start(self) -> None:
        web_app = make_app(
            self.app, self.env, self.hub, max_body=self.config.max_body, healthy=self._healthy
        )
        if self.metrics is not None:
            self.metrics.attach(self, web_app)
        web_app.middlewares.append(record_objects)
        self._runner = web.AppRunner(web_app, access_log=ACCESS_LOG,
                                     access_log_class=AccessLogger, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port, reuse_address=True)
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[attr-defined]
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        # The listener closing while the router runs is a fatal end, like a task's.
        self._serving = self._tasks.start("http-server", server.wait_closed())
        log.info("router listening on %s", self.url)

    async def stop(self) -> None:
        """Stop accepting, finish in-flight requests, close node streams. Safe twice."""
        if self._serving is not None:
            self._serving.cancel()  # the listener closing from here on is our doing
            await asyncio.wait([self._serving])
            self._serving = None
        await self.hub.close_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.transport.close()
