"""The node's gRPC service: the server end of the batched data path."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import grpc

from abode.cluster import wire
from abode.cluster.replica import AckStatus, ReplicaAck
from abode.cluster.rpc.v1 import node_pb2 as pb
from abode.cluster.rpc.v1 import node_pb2_grpc as pb_grpc
from abode.cluster.sockets import NODE_METADATA, ROUTER_METADATA, Frame
from abode.node._dispatch import Dispatcher
from abode.node._runtime import Runtime

if TYPE_CHECKING:
    from abode.node._handoff import Handoff
    from abode.node._replication import ReplicaSink

log = logging.getLogger(__name__)


class NodeService(pb_grpc.NodeServicer):
    def __init__(
        self, runtime: Runtime, dispatcher: Dispatcher, node_id: str, *, max_batch: int = 512
    ) -> None:
        self._runtime = runtime
        self._dispatcher = dispatcher
        self._node_id = node_id
        self._max_batch = max_batch
        # Set once the node is a cluster member.
        self.handoff: Handoff | None = None
        self.replicas: ReplicaSink | None = None
        self.waiting: Callable[[], Iterable[str]] = lambda: ()
        self.metrics_url = ""  # set by the process that serves this node's /metrics

    async def Exchange(  # type: ignore[override]  # noqa: N802
        self, request_iterator: Any, context: grpc.aio.ServicerContext
    ) -> None:
        # No task per call: each call's reply callback appends to this stream's
        # outbox, and one writer sends whatever is ready as one Envelope.
        outbox: list[pb.Result] = []
        frames: list[pb.SocketFrame] = []
        acks: list[pb.ReplicaAck] = []
        # Replica writes from one sender apply in order, one envelope after another.
        replica_in: asyncio.Queue[list[pb.ReplicaWrite]] = asyncio.Queue()
        replica_task: asyncio.Task[None] | None = None
        wake = asyncio.Event()
        submit = self._dispatcher.submit
        sockets = self._runtime.sockets
        metadata = dict(context.invocation_metadata() or ())
        router = str(metadata.get(ROUTER_METADATA, ""))
        sender = str(metadata.get(NODE_METADATA, ""))

        async def apply_replicas() -> None:
            while True:
                writes = await replica_in.get()
                if self.replicas is None:
                    result = [ReplicaAck(AckStatus.REFUSED, "not a cluster member yet")
                              ] * len(writes)
                else:
                    try:
                        result = await self.replicas.apply(sender, writes)
                    except Exception as exc:
                        # Answer every write: a home waits for each ack, and this loop
                        # must go on serving the stream's later writes.
                        log.exception("applying %d replica writes from %s failed",
                                      len(writes), sender)
                        result = [ReplicaAck(AckStatus.FAILED, f"replica failed: {exc!r}")
                                  ] * len(writes)
                acks.extend(wire.ack_to_pb(w.seq, a)
                            for w, a in zip(writes, result, strict=True))
                wake.set()

        def push(frame: Frame) -> None:
            frames.append(wire.frame_to_pb(frame))
            wake.set()

        if router:
            sockets.attach_stream(router, push)

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
                for frame in env.frames:
                    sockets.on_frame(router, wire.frame_from_pb(frame))
                if env.replicate:
                    nonlocal replica_task
                    if replica_task is None:
                        replica_task = asyncio.get_running_loop().create_task(apply_replicas())
                    replica_in.put_nowait(list(env.replicate))

        reader = asyncio.get_running_loop().create_task(read())
        try:
            while not reader.done() or outbox or frames or acks:
                waiter = asyncio.ensure_future(wake.wait())
                try:
                    await asyncio.wait({waiter, reader}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
                wake.clear()
                while outbox or frames or acks:
                    # Results first: a 101 must reach the router before the socket's frames.
                    batch = outbox[: self._max_batch]
                    del outbox[: self._max_batch]
                    out_frames = frames[:]
                    frames.clear()
                    out_acks = acks[:]
                    acks.clear()
                    await context.write(
                        pb.Envelope(results=batch, frames=out_frames, acks=out_acks)
                    )
            reader.result()
        finally:
            reader.cancel()
            if replica_task is not None:
                replica_task.cancel()
            if router:
                sockets.detach_stream(router, push)

    async def Info(self, request: pb.InfoRequest, context: grpc.aio.ServicerContext) -> pb.InfoReply:  # noqa: N802
        return pb.InfoReply(
            node_id=self._node_id,
            revision=self._dispatcher.ownership.revision,
            active_objects=self._runtime.active_objects,
            open_sockets=self._runtime.sockets.count,
            pending_alarms=self._runtime.alarms.pending,
            pending_ranges=len(self.handoff.ownership.pending) if self.handoff else 0,
            waiting=sorted(self.waiting()),
            namespaces=self._runtime.app.namespaces,
            metrics_url=self.metrics_url,
        )

    async def Pull(self, request: pb.PullRequest, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        if self.handoff is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "not a cluster member yet")
        assert self.handoff is not None
        async for chunk in self.handoff.serve_pull(request):
            yield chunk

    async def Release(  # noqa: N802
        self, request: pb.PullRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReleaseReply:
        if self.handoff is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "not a cluster member yet")
        assert self.handoff is not None
        return pb.ReleaseReply(keys_dropped=await self.handoff.release(request))

    async def FetchObject(  # noqa: N802
        self, request: pb.FetchObjectRequest, context: grpc.aio.ServicerContext
    ) -> pb.PullChunk:
        items = await self._runtime.committer.run_exclusive(
            self._runtime.store.scan_object, request.object_id
        )
        return pb.PullChunk(items=[pb.KeyValue(key=k, value=v) for k, v in items])
