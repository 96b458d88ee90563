"""The client end of the batched data path: one bidirectional stream per peer node.

Calls are not sent one RPC each: every call goes into an outbox, and a writer task
sends everything that is ready as one Envelope. Results come back batched the same
way and are matched to their callers by call id. While one write is in flight,
new calls gather, so batching grows with load on its own.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc

from abode.cluster import wire
from abode.cluster.errors import (
    CallTimeout,
    ConnectionLost,
    Overloaded,
    RequestTooLarge,
    Unavailable,
)
from abode.cluster.invocation import Invocation, Outcome
from abode.cluster.outbox import MAX_MESSAGE_BYTES, MessageTooLarge, Outbox, messages
from abode.cluster.replica import AckStatus, Batch, ReplicaAck
from abode.cluster.retry import describe
from abode.cluster.rpc.v1 import node_pb2 as pb
from abode.cluster.rpc.v1 import node_pb2_grpc as pb_grpc
from abode.cluster.sockets import NODE_METADATA, ROUTER_METADATA, Frame, FrameKind

log = logging.getLogger(__name__)

# What may wait for this stream's writer, per peer. The writer empties them every
# few milliseconds while the peer reads; they fill only when it stops reading (paused,
# partitioned, overloaded) or the stream is reconnecting, and then callers are told
# at once (Overloaded: it never ran) instead of memory growing. Normal load is far
# below: a router measured at 68,000 requests/s has a few thousand calls in flight in
# all, mailboxes hold at most --max-queue (1,000) events per object, and client
# WebSocket messages are at most 1 MiB each. Frames come in bursts: a node releases
# an event's outputs at once, so one broadcast to a room of 32,768 sockets (the most
# an object holds) queues that many frames in one go; bytes, which count each item's
# memory (outbox.ITEM_OVERHEAD), are their real bound.
MAX_QUEUED_CALLS = 20_000
MAX_QUEUED_FRAMES = 1_000_000
MAX_QUEUED_REPLICA_WRITES = 20_000
MAX_QUEUED_BYTES = 256 * 1024 * 1024  # each of the three
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.keepalive_permit_without_calls", 1),
    # Server side (GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS): accept those
    # keepalives on an idle stream. The default (one per 5 min, two strikes) answers
    # GOAWAY "too_many_pings" after ~30 s idle, breaking the stream and its WebSockets.
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    # gRPC's reconnect backoff grows to 120 s: after a node returns (restart, healed
    # partition) its peers would keep failing fast for minutes. Retry every second.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1_000),
]

FrameHandler = Callable[[str, list[Frame]], None]


class PeerClient:
    """One peer node. ``router_id`` names this end to the node (for socket frames);
    ``on_frames(address, frames)`` receives frames the node sends, and
    ``on_lost(address)`` hears that the stream broke. ``max_queued_*`` bound what
    waits for the stream's writer (see MAX_QUEUED_CALLS)."""

    def __init__(
        self,
        address: str,
        *,
        router_id: str = "",
        node_id: str = "",
        on_frames: FrameHandler | None = None,
        on_lost: Callable[[str], None] | None = None,
        max_batch: int = 512,
        max_queued_calls: int = MAX_QUEUED_CALLS,
        max_queued_frames: int = MAX_QUEUED_FRAMES,
        max_queued_writes: int = MAX_QUEUED_REPLICA_WRITES,
        max_queued_bytes: int = MAX_QUEUED_BYTES,
    ) -> None:
        self.address = address
        self._max_batch = max_batch
        metadata = [(ROUTER_METADATA, router_id)] if router_id else []
        if node_id:
            metadata.append((NODE_METADATA, node_id))
        self._metadata = tuple(metadata) or None
        # Replication: writes waiting to be sent, and each sent write's ack future.
        self._replica_out: Outbox[pb.ReplicaWrite] = Outbox(
            f"replica writes to {address}", max_items=max_queued_writes,
            max_bytes=max_queued_bytes)
        self._acks: dict[int, asyncio.Future[ReplicaAck]] = {}
        self._on_frames = on_frames
        self._on_lost = on_lost
        self._frames: Outbox[pb.SocketFrame] = Outbox(
            f"socket frames to {address}", max_items=max_queued_frames,
            max_bytes=max_queued_bytes)
        self._channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        self._stub = pb_grpc.NodeStub(self._channel)
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._outbox: Outbox[pb.Call] = Outbox(
            f"calls to {address}", max_items=max_queued_calls, max_bytes=max_queued_bytes)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stream: Any = None  # the current Exchange call
        self._closed = False
        self._answered = False  # the current stream has carried something back
        self.envelopes_sent = 0
        self.calls_sent = 0

    def connect(self) -> None:
        """Open the stream now (so the node can send socket frames before any call)."""
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def replicate(
        self, batches: Sequence[Batch], revision: int, timeout: float
    ) -> list[ReplicaAck]:
        """Ship a home's batches (at its membership ``revision``) to this replica;
        returns the replica's ack of each, or UNREACHABLE for those with no answer
        within ``timeout``, or REFUSED for those the outbox had no room for, or
        FAILED for one too large to send."""
        if self._closed:
            return [ReplicaAck(AckStatus.UNREACHABLE, "replica connection closed")
                    ] * len(batches)
        loop = asyncio.get_running_loop()
        futs: list[asyncio.Future[ReplicaAck]] = []
        writes = []
        refusal: ReplicaAck | None = None
        for batch in batches:
            fut: asyncio.Future[ReplicaAck] = loop.create_future()
            futs.append(fut)
            if refusal is not None:
                # Nor any after a refused one: a later batch of the same object would
                # find the replica short of its base and make it fetch the object.
                fut.set_result(refusal)
                continue
            w = wire.batch_to_pb(batch, revision, next(self._ids))
            try:
                self._replica_out.put(w)
            except Overloaded as exc:  # the home asks again, after a backoff
                refusal = ReplicaAck(AckStatus.REFUSED, str(exc))
                fut.set_result(refusal)
            except MessageTooLarge as exc:
                fut.set_result(ReplicaAck(AckStatus.FAILED, f"batch not sent: {exc}"))
            else:
                self._acks[w.seq] = fut
                writes.append(w)
        self.connect()
        self._wake.set()
        try:
            # asyncio.wait, not a timeout around gather: that cancels the futures of the
            # writes not yet acked, and result() on them then raises CancelledError into
            # the commit loop, ending it.
            await asyncio.wait(futs, timeout=timeout)
        finally:
            for w in writes:
                self._acks.pop(w.seq, None)
        return [f.result() if f.done() and not f.cancelled()
                else ReplicaAck(AckStatus.UNREACHABLE,
                                f"no ack from {self.address} within {timeout:g} s")
                for f in futs]

    @property
    def in_flight(self) -> int:
        """Calls sent or queued that have no answer yet."""
        return len(self._pending)

    async def invoke(self, inv: Invocation) -> Outcome:
        if self._closed:
            raise Unavailable(f"connection to {self.address} is closed")
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        call_id = next(self._ids)
        try:
            self._outbox.put(wire.call_to_pb(call_id, inv))
        except MessageTooLarge as exc:
            raise RequestTooLarge(f"call not sent to {self.address}: {exc}") from None
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = fut
        self._wake.set()
        try:
            # A little slack over the callee's own deadline, so its answer wins the race.
            async with asyncio.timeout(inv.timeout + 1.0):
                outcome = await fut
        except TimeoutError:
            raise CallTimeout(f"no answer from {self.address} within {inv.timeout:g} s") from None
        finally:
            self._pending.pop(call_id, None)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome  # type: ignore[no-any-return]

    def send_frame(self, frame: Frame) -> None:
        """Queue a socket frame for the node; it rides the next Envelope. Raises
        Overloaded when the queue is full (a close always goes: it ends a socket's
        traffic, and there is one per socket)."""
        self._frames.put(wire.frame_to_pb(frame), force=frame.kind == FrameKind.CLOSE)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        self._wake.set()

    def take_frames(self) -> list[Frame]:
        """Socket frames queued and not sent (after the stream broke), for the caller
        to send elsewhere; they are no longer this peer's to send."""
        return [wire.frame_from_pb(f) for f in self._frames.clear()]

    async def _run(self) -> None:
        backoff = 0.05
        failures = 0
        while not self._closed:
            stream = self._stream = self._stub.Exchange(metadata=self._metadata)
            sent: set[int] = set()
            self._answered = False
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._write(stream, sent))
                    tg.create_task(self._read(stream))
            except* Exception as group:
                if self._answered:
                    backoff, failures = 0.05, 0
                # The first break is news; repeats while the peer stays down are not.
                log.log(logging.INFO if failures == 0 and not self._closed else logging.DEBUG,
                        "stream to %s broke: %s", self.address, describe(group.exceptions[0]))
                failures += 1
            self._fail(sent)
            stream.cancel()
            if self._on_lost is not None:
                self._on_lost(self.address)
            if self._closed:
                return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)

    async def _write(self, stream: Any, sent: set[int]) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._outbox or self._frames or self._replica_out:
                # Each Envelope up to ENVELOPE_BYTES; replica writes first (commits
                # wait on them), and no kind waits on another's order.
                replicate, used = self._replica_out.take(0)
                batch, used = self._outbox.take(used, self._max_batch)
                frames, used = self._frames.take(used)
                sent.update(c.id for c, _ in batch)
                try:
                    await stream.write(pb.Envelope(calls=messages(batch), frames=messages(frames),
                                                   replicate=messages(replicate)))
                except BaseException:
                    self._frames.put_back(frames)  # not sent: see take_frames
                    raise
                self.envelopes_sent += 1
                self.calls_sent += len(batch)

    async def _read(self, stream: Any) -> None:
        pending = self._pending
        while True:
            env = await stream.read()
            if env is grpc.aio.EOF:
                raise ConnectionError("peer closed the stream")
            self._answered = True
            for result in env.results:
                fut = pending.get(result.id)
                if fut is not None and not fut.done():
                    fut.set_result(wire.outcome_from_pb(result))
            for ack in env.acks:
                fut = self._acks.get(ack.seq)
                if fut is not None and not fut.done():
                    fut.set_result(wire.ack_from_pb(ack))
            if env.frames and self._on_frames is not None:
                self._on_frames(self.address, [wire.frame_from_pb(f) for f in env.frames])

    def _fail(self, sent: set[int]) -> None:
        # A call the peer may have run must not be retried blindly (ConnectionLost);
        # a call never sent is safe to retry (Unavailable is a refusal).
        unsent = {c.id for c in self._outbox.clear()}
        self._replica_out.clear()
        for ack in self._acks.values():
            if not ack.done():
                ack.set_result(ReplicaAck(AckStatus.UNREACHABLE,
                                          f"connection to replica {self.address} lost"))
        for call_id, fut in list(self._pending.items()):
            if fut.done():
                continue
            if call_id in sent:
                fut.set_result(ConnectionLost(f"connection to {self.address} lost mid-call"))
            elif call_id in unsent or self._closed:
                fut.set_result(Unavailable(f"node {self.address} is unreachable"))

    async def close(self, flush_timeout: float = 1.0) -> None:
        """Send what is queued (bounded), fail what is outstanding, close. Safe twice."""
        deadline = time.monotonic() + flush_timeout
        while (
            (self._outbox or self._frames)
            and self._task is not None
            and not self._task.done()
            and time.monotonic() < deadline
        ):
            await asyncio.sleep(0.01)
        self._closed = True
        if self._task is not None:
            if self._stream is not None and not self._stream.done() and not self._task.done():
                # Half-close, and let the peer act on everything sent (a router's last
                # socket frames) before the stream ends; cancelling could drop them.
                left = max(0.05, deadline - time.monotonic())
                try:
                    async with asyncio.timeout(left):
                        await self._stream.done_writing()
                except Exception as exc:
                    log.debug("half-close of the stream to %s: %s", self.address, describe(exc))
                await asyncio.wait([self._task], timeout=left)
            self._task.cancel()
            # gather, not try/except CancelledError: a cancellation of close() itself
            # must reach its caller.
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._fail(set())
        await self._channel.close()
