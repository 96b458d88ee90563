"""One storage node's lifecycle: open storage -> start runtime -> listen; stop in reverse.

``abode dev`` uses it as is (every object local). A cluster member (``node._member``)
swaps in ring ownership and handoff once it has registered in etcd.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from abode.cluster.app import App
from abode.cluster.env import Env
from abode.cluster.invocation import Invocation, Outcome
from abode.cluster.peer import CHANNEL_OPTIONS
from abode.cluster.rpc.v1 import node_pb2_grpc as pb_grpc
from abode.node._dispatch import Dispatcher, PeerPool
from abode.node._ownership import Ownership
from abode.node._runtime import Runtime, RuntimeConfig
from abode.node._service import NodeService
from abode.node._store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NodeConfig:
    node_id: str
    data_dir: str
    listen: str = "127.0.0.1:0"
    runtime: RuntimeConfig = RuntimeConfig()
    sync: bool = True


class _DispatchTransport:
    """``env`` inside objects: calls go through the dispatcher (local or forwarded)."""

    def __init__(self) -> None:
        self.dispatcher: Dispatcher | None = None

    async def invoke(self, inv: Invocation) -> Outcome:
        assert self.dispatcher is not None
        return await self.dispatcher.invoke(inv)


class NodeServer:
    def __init__(
        self, app: App, config: NodeConfig, ownership: Ownership | None = None, *,
        on_peer_lost: Callable[[str], None] | None = None,
    ) -> None:
        self.app = app
        self.config = config
        self._ownership = ownership or Ownership()
        self.store: Store | None = None
        self.runtime: Runtime | None = None
        self.dispatcher: Dispatcher | None = None
        self.service: NodeService | None = None
        self.peers = PeerPool(config.node_id, on_peer_lost)
        self._server: grpc.aio.Server | None = None
        self.port = 0
        self._stopped = False

    @property
    def address(self) -> str:
        host = self.config.listen.rsplit(":", 1)[0]
        return f"{host}:{self.port}"

    async def start(self) -> None:
        os.makedirs(self.config.data_dir, exist_ok=True)
        self.store = Store(os.path.join(self.config.data_dir, "db"), sync=self.config.sync)
        transport = _DispatchTransport()
        env = Env(self.app.namespaces, transport, call_timeout=self.config.runtime.call_timeout)
        self.runtime = Runtime(self.app, self.store, env, self.config.runtime, self._ownership)
        self.dispatcher = Dispatcher(self.runtime, self._ownership, self.peers)
        transport.dispatcher = self.dispatcher
        await self.runtime.start()
        self._server = grpc.aio.server(options=CHANNEL_OPTIONS)
        self.service = NodeService(self.runtime, self.dispatcher, self.config.node_id)
        pb_grpc.add_NodeServicer_to_server(self.service, self._server)
        self.port = self._server.add_insecure_port(self.config.listen)
        if self.port == 0:
            raise OSError(f"cannot listen on {self.config.listen} (port taken?)")
        await self._server.start()
        log.info("node %s listening on %s", self.config.node_id, self.address)

    async def stop(self, grace: float = 5.0) -> None:
        """Drain, flush and close. Safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        if self.runtime is not None:
            await self.runtime.drain(timeout=grace)
        if self._server is not None:
            await self._server.stop(grace=1.0)
        await self.peers.close()
        if self.runtime is not None:
            await self.runtime.stop()
        if self.store is not None:
            self.store.close()
        log.info("node %s stopped", self.config.node_id)
