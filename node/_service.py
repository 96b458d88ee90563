"""The node's gRPC service: the server end of the batched data path."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import grpc

from abode.cluster import wire
from abode.cluster.errors import AbodeError, Overloaded
from abode.cluster.outbox import MessageTooLarge, Outbox, messages
from abode.cluster.peer import MAX_QUEUED_BYTES, MAX_QUEUED_FRAMES
from abode.cluster.replica import AckStatus, ReplicaAck
from abode.cluster.rpc.v1 import node_pb2 as pb
from abode.cluster.rpc.v1 import node_pb2_grpc as pb_grpc
from abode.cluster.sockets import NODE_METADATA, ROUTER_METADATA, Frame, FrameKind
from abode.node._dispatch import Dispatcher
from abode.node._runtime import Runtime

if TYPE_CHECKING:
    from abode.node._handoff import Handoff
    from abode.node._replication import ReplicaSink

log = logging.getLogger(__name__)

# Calls of one stream running or queued on this node. Mailboxes already bound each
# object (--max-queue, 1,000); this bounds a stream's sum, far above what a router
# has in flight at its measured peak (68,000 requests/s at a few ms each).
MAX_CALLS_IN_FLIGHT = 20_000
# Envelopes of replica writes waiting to be applied, per sending home. Applying
# keeps up with a home's group commits (one disk write per envelope); a backlog
# means this replica's disk is stuck, and the home retries refused writes.
MAX_REPLICA_BACKLOG = 32


class NodeService(pb_grpc.NodeServicer):
    def __init__(
        self, runtime: Runtime, dispatcher: Dispatcher, node_id: str, *, max_batch: int = 512,
        handoff: Handoff | None = None, replicas: ReplicaSink | None = None,
        waiting: Callable[[], Iterable[str]] = lambda: (), metrics_url: str = "",
    ) -> None:
        self._runtime = runtime
        self._dispatcher = dispatcher
        self._node_id = node_id
        self._max_batch = max_batch
        # A cluster member's (None in abode dev).
        self.handoff = handoff
        self.replicas = replicas
        self.waiting = waiting
        self.metrics_url = metrics_url  # of the process that serves this node's /metrics

    async def Exchange(  # type: ignore[override]  # noqa: N802
        self, request_iterator: Any, context: grpc.aio.ServicerContext
    ) -> None:
        metadata = dict(context.invocation_metadata() or ())
        await _Exchange(self, context, str(metadata.get(ROUTER_METADATA, "")),
                        str(metadata.get(NODE_METADATA, ""))).run()

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


class _Exchange:
    """One peer's stream: calls in, results out; frames both ways; replica writes in,
    acks out.

    No task per call: each call's reply callback queues its result, and one writer
    sends whatever is ready, in Envelopes of at most ENVELOPE_BYTES. Every queue has
    a bound: calls past MAX_CALLS_IN_FLIGHT are answered Overloaded at once (they
    never ran), replica envelopes past MAX_REPLICA_BACKLOG are refused (the home
    asks again), a socket whose frames find the queue full is closed with 1013; and
    while answers owed outgrow their queue, the reader stops reading (gRPC's flow
    control then holds the peer back).
    """

    def __init__(self, service: NodeService, context: grpc.aio.ServicerContext,
                 router: str, sender: str) -> None:
        self._service = service
        self._context = context
        self._router = router
        self._sender = sender
        self._results: Outbox[pb.Result] = Outbox(
            "results", max_items=MAX_CALLS_IN_FLIGHT, max_bytes=MAX_QUEUED_BYTES)
        self._frames: Outbox[pb.SocketFrame] = Outbox(
            f"socket frames to router {router}", max_items=MAX_QUEUED_FRAMES,
            max_bytes=MAX_QUEUED_BYTES)
        self._acks: Outbox[pb.ReplicaAck] = Outbox(
            "replica acks", max_items=MAX_CALLS_IN_FLIGHT, max_bytes=MAX_QUEUED_BYTES)
        self._in_flight = 0  # calls submitted and not answered yet
        # Sockets closed because the router's frame queue was full (see _shed_socket):
        # one id each, for the life of this stream.
        self._shed: set[str] = set()
        # Replica writes from one sender apply in order, one envelope after another.
        self._replica_in: asyncio.Queue[list[pb.ReplicaWrite]] = asyncio.Queue(
            MAX_REPLICA_BACKLOG)
        self._replica_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()

    async def run(self) -> None:
        sockets = self._service._runtime.sockets
        # One bound method for both: detach_stream tells streams apart by identity.
        push = self._push
        if self._router:
            sockets.attach_stream(self._router, push)
        reader = asyncio.get_running_loop().create_task(self._read())
        try:
            await self._write(reader)
            reader.result()
        finally:
            reader.cancel()
            if self._replica_task is not None:
                self._replica_task.cancel()
            if self._router:
                sockets.detach_stream(self._router, push)

    # -- in ---------------------------------------------------------------------------
    async def _read(self) -> None:
        submit = self._service._dispatcher.submit
        sockets = self._service._runtime.sockets
        context = self._context
        while True:
            # Answers owed are not refused (the work is done): hold the peer back
            # instead, until the writer has sent them.
            while self._results.full() or self._acks.full():
                self._drained.clear()
                await self._drained.wait()
            env = await context.read()
            if env is grpc.aio.EOF:
                return
            for call in env.calls:
                if self._in_flight >= MAX_CALLS_IN_FLIGHT:
                    self._answer(call.id, Overloaded(
                        f"{MAX_CALLS_IN_FLIGHT} calls in flight on this stream"))
                    continue
                self._in_flight += 1
                submit(wire.call_from_pb(call), self._replier(call.id))
            for frame in env.frames:
                sockets.on_frame(self._router, wire.frame_from_pb(frame))
            if env.replicate:
                self._take_replicas(list(env.replicate))

    def _take_replicas(self, writes: list[pb.ReplicaWrite]) -> None:
        if self._replica_task is None:
            self._replica_task = asyncio.get_running_loop().create_task(self._apply_replicas())
        try:
            self._replica_in.put_nowait(writes)
        except asyncio.QueueFull:
            busy = ReplicaAck(AckStatus.REFUSED,
                              f"{MAX_REPLICA_BACKLOG} envelopes of writes are waiting")
            self._ack(writes, [busy] * len(writes))

    async def _apply_replicas(self) -> None:
        replicas = self._service.replicas
        while True:
            writes = await self._replica_in.get()
            if replicas is None:
                replicas = self._service.replicas
            if replicas is None:
                result = [ReplicaAck(AckStatus.REFUSED, "not a cluster member yet")
                          ] * len(writes)
            else:
                try:
                    result = await replicas.apply(self._sender, writes)
                except (Exception, asyncio.CancelledError) as exc:
                    task = asyncio.current_task()
                    if isinstance(exc, asyncio.CancelledError) and (
                            task is None or task.cancelling()):
                        raise  # the stream ends: ours to pass on
                    # Answer every write: a home waits for each ack, and this loop
                    # must go on serving the stream's later writes.
                    log.exception("applying %d replica writes from %s failed",
                                  len(writes), self._sender)
                    result = [ReplicaAck(AckStatus.FAILED, f"replica failed: {exc!r}")
                              ] * len(writes)
            self._ack(writes, result)

    # -- out --------------------------------------------------------------------------
    def _replier(self, call_id: int) -> Callable[[Any], None]:
        done = False

        def reply(outcome: Any) -> None:
            nonlocal done
            if not done:  # a second answer must not free a second slot
                done = True
                self._in_flight -= 1
            self._answer(call_id, outcome)

        return reply

    def _answer(self, call_id: int, outcome: Any) -> None:
        try:
            self._results.put(wire.outcome_to_pb(call_id, outcome), force=True)
        except MessageTooLarge as exc:
            # Refused to the caller, not sent: over the limit it would break the stream.
            log.warning("result of call %d not sent: %s", call_id, exc)
            self._results.put(wire.outcome_to_pb(call_id, AbodeError(
                f"the result is too large to send: {exc}")), force=True)
        self._wake.set()

    def _ack(self, writes: list[pb.ReplicaWrite], acks: list[ReplicaAck]) -> None:
        for w, a in zip(writes, acks, strict=True):
            self._acks.put(wire.ack_to_pb(w.seq, a), force=True)
        self._wake.set()

    def _push(self, frame: Frame) -> None:
        close = frame.kind == FrameKind.CLOSE
        if not close:
            # Cheap drops first: a burst can bring thousands of frames for a full queue.
            if frame.socket_id in self._shed:
                return
            if self._frames.full():
                self._shed_socket(frame.socket_id, "socket frames queue is full")
                return
        try:
            # A close always goes (one per socket, and it ends that socket's traffic).
            self._frames.put(wire.frame_to_pb(frame), force=close)
        except MessageTooLarge as exc:
            log.error("socket %s: frame dropped: %s", frame.socket_id, exc)
            return
        except Overloaded as exc:
            self._shed_socket(frame.socket_id, str(exc))
            return
        self._wake.set()

    def _shed_socket(self, socket_id: str, why: str) -> None:
        """The router does not read as fast as objects send: close this socket (1013)
        rather than hold its frames without bound. Its close goes out (forced) through
        ``_push``; its later frames are dropped."""
        self._shed.add(socket_id)
        sockets = self._service._runtime.sockets
        info = sockets.sockets.get(socket_id)
        if info is not None:
            log.warning("socket %s: %s (%d frames, %d bytes queued)", socket_id, why,
                        len(self._frames), self._frames.bytes)
            sockets.overloaded(info)

    async def _write(self, reader: asyncio.Task[None]) -> None:
        results, frames, acks = self._results, self._frames, self._acks
        while not reader.done() or results or frames or acks:
            waiter = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({waiter, reader}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
            self._wake.clear()
            while results or frames or acks:
                taken_acks, used = acks.take(0)
                batch, used = results.take(used, self._service._max_batch)
                # A 101 must reach the router before its socket's frames: frames go
                # only once every result queued before them is on its way.
                out_frames, used = frames.take(used) if not results else ([], used)
                await self._context.write(pb.Envelope(
                    results=messages(batch), frames=messages(out_frames),
                    acks=messages(taken_acks)))
                self._drained.set()
