"""The node's gRPC service: the server end of the batched data path."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc

from cluster import wire
from cluster.rpc.v1 import node_pb2 as pb
from cluster.rpc.v1 import node_pb2_grpc as pb_grpc
from node._runtime import Runtime

log = logging.getLogger(__name__)


class NodeService(pb_grpc.NodeServicer):
    def __init__(self, runtime: Runtime, node_id: str, *, max_batch: int = 512) -> None:
        self._runtime = runtime
        self._node_id = node_id
        self._max_batch = max_batch

    async def Exchange(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> None:  # noqa: N802
        # No task per call: each call's reply callback appends to this stream's
        # outbox, and one writer sends whatever is ready as one Envelope.
        outbox: list[pb.Result] = []
        wake = asyncio.Event()
        submit = self._runtime.submit

        def replier(call_id: int) -> Any:
            def reply(outcome: Any) -> None:
                outbox.append(wire.outcome_to_pb(call_id, outcome))
                wake.set()

            return reply

        async def read() -> None:
            while True:
                env = await context.read()
                if env is grpc.aio.EOF:
                    return
                for call in env.calls:
                    submit(wire.call_from_pb(call), replier(call.id))

        reader = asyncio.get_running_loop().create_task(read())
        try:
            while not reader.done() or outbox:
                waiter = asyncio.ensure_future(wake.wait())
                await asyncio.wait({waiter, reader}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                wake.clear()
                while outbox:
                    batch = outbox[: self._max_batch]
                    del outbox[: self._max_batch]
                    await context.write(pb.Envelope(results=batch))
            reader.result()
        finally:
            reader.cancel()

    async def Info(self, request: pb.InfoRequest, context: grpc.aio.ServicerContext) -> pb.InfoReply:  # noqa: N802
        return pb.InfoReply(
            node_id=self._node_id,
            active_objects=self._runtime.active_objects,
            namespaces=self._runtime.app.namespaces,
        )
