"""One storage node: storage, runtime and dispatcher, then the gRPC server.

Built by a process's composition root with everything it needs: the fence and ring
ownership (a cluster member's, or the static ones of ``abode dev``), the peer pool,
replication and the process's supervisor. Start: runtime (commit, alarms, sweeper)
-> listen. Stop in reverse: drain -> stop listening -> close storage.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc

from abode.cluster.app import App
from abode.cluster.env import Env
from abode.cluster.invocation import Invocation, Outcome
from abode.cluster.peer import CHANNEL_OPTIONS
from abode.cluster.rpc.v1 import node_pb2_grpc as pb_grpc
from abode.cluster.supervisor import Tasks
from abode.node._dispatch import Dispatcher, PeerPool
from abode.node._fence import Fence
from abode.node._ownership import Ownership
from abode.node._runtime import Runtime, RuntimeConfig
from abode.node._service import NodeService
from abode.node._store import Replicate, Store

if TYPE_CHECKING:
    from abode.node._handoff import Handoff
    from abode.node._replication import ReplicaSink

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NodeConfig:
    node_id: str
    data_dir: str
    listen: str = "127.0.0.1:0"
    runtime: RuntimeConfig = RuntimeConfig()
    sync: bool = True


class _DispatchTransport:
    """``env`` inside objects: calls go through the dispatcher (local or forwarded).

    The one cycle of the composition (objects call through the dispatcher, which runs
    them on the runtime that holds their ``env``) is closed by ``bind``, once.
    """

    def __init__(self) -> None:
        self._dispatcher: Dispatcher | None = None

    def bind(self, dispatcher: Dispatcher) -> None:
        if self._dispatcher is not None:
            raise RuntimeError("the dispatch transport is bound already")
        self._dispatcher = dispatcher

    async def invoke(self, inv: Invocation) -> Outcome:
        if self._dispatcher is None:
            raise RuntimeError("call before the node's dispatcher was built")
        return await self._dispatcher.invoke(inv)


class NodeServer:
    def __init__(
        self,
        app: App,
        config: NodeConfig,
        *,
        fence: Fence,
        ownership: Ownership,
        peers: PeerPool,
        replicate: Replicate | None,
        tasks: Tasks,
        storage_state: Callable[[str | None], None] = lambda full: None,
    ) -> None:
        self.app = app
        self.config = config
        self.peers = peers
        self._tasks = tasks
        os.makedirs(config.data_dir, exist_ok=True)
        self.store = Store(os.path.join(config.data_dir, "db"), sync=config.sync, term=fence.term)
        transport = _DispatchTransport()
        env = Env(app.namespaces, transport, call_timeout=config.runtime.call_timeout)
        self.runtime = Runtime(app, self.store, env, config.runtime, fence=fence,
                               replicate=replicate, tasks=tasks, storage_state=storage_state)
        self.dispatcher = Dispatcher(self.runtime, ownership, peers)
        transport.bind(self.dispatcher)
        self.service: NodeService | None = None
        self._server: grpc.aio.Server | None = None
        self._serving: asyncio.Task[None] | None = None
        self.port = 0
        self._stopped = False

    @property
    def address(self) -> str:
        host = self.config.listen.rsplit(":", 1)[0]
        return f"{host}:{self.port}"

    async def start(
        self,
        *,
        handoff: Handoff | None = None,
        replicas: ReplicaSink | None = None,
        waiting: Callable[[], Iterable[str]] = lambda: (),
        metrics_url: str = "",
    ) -> None:
        """Start the runtime, then serve. A cluster member passes its handoff, replica
        sink and catch-up progress; ``abode dev`` has none of them."""
        await self.runtime.start()
        self._server = grpc.aio.server(options=CHANNEL_OPTIONS)
        self.service = NodeService(self.runtime, self.dispatcher, self.config.node_id,
                                   handoff=handoff, replicas=replicas, waiting=waiting,
                                   metrics_url=metrics_url)
        pb_grpc.add_NodeServicer_to_server(self.service, self._server)
        self.port = self._server.add_insecure_port(self.config.listen)
        if self.port == 0:
            raise OSError(f"cannot listen on {self.config.listen} (port taken?)")
        await self._server.start()
        self._serving = self._tasks.start("grpc-server", self._until_terminated(self._server))
        log.info("node %s listening on %s", self.config.node_id, self.address)

    @staticmethod
    async def _until_terminated(server: grpc.aio.Server) -> None:
        # Shielded: cancelling grpc's own wait would cancel its shutdown future too.
        await asyncio.shield(server.wait_for_termination())

    async def stop(self, grace: float = 5.0) -> None:
        """Drain, flush and close. Safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        await self.runtime.drain(timeout=grace)
        if self._serving is not None:
            self._serving.cancel()  # the server ending from here on is our doing
            await asyncio.wait([self._serving])
        if self._server is not None:
            await self._server.stop(grace=1.0)
        await self.peers.close()
        await self.runtime.stop()
        self.store.close()
        log.info("node %s stopped", self.config.node_id)
