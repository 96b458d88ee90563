"""Translation between protobuf messages and abode's own values. The only place that does it."""

from __future__ import annotations

from abode.cluster.errors import AbodeError, Refused, RemoteError, from_code
from abode.cluster.http import Request, Response
from abode.cluster.invocation import Invocation, Outcome
from abode.cluster.replica import AckStatus, Batch, ReplicaAck
from abode.cluster.rpc.v1 import node_pb2 as pb
from abode.cluster.sockets import Frame, FrameKind, SocketOwner


def call_to_pb(call_id: int, inv: Invocation) -> pb.Call:
    msg = pb.Call(
        id=call_id,
        namespace=inv.namespace,
        object_id=inv.object_id,
        revision=inv.revision,
        hops=inv.hops,
        chain=inv.chain,
        timeout_ms=max(1, int(inv.timeout * 1000)),
        object_name=inv.object_name,
    )
    req = inv.request
    if req is not None:
        h = msg.http
        h.method = req.method
        h.url = req.url
        h.path = req.path
        h.body = req.body
        h.headers.extend(pb.Header(name=k, value=v) for k, v in req.headers.items())
        if req.socket_id:
            h.socket_id = req.socket_id
    else:
        msg.method.name = inv.method
        msg.method.args = inv.args
    return msg


def call_from_pb(msg: pb.Call) -> Invocation:
    inv = Invocation(
        namespace=msg.namespace,
        object_id=msg.object_id,
        chain=msg.chain,
        timeout=msg.timeout_ms / 1000.0,
        revision=msg.revision,
        hops=msg.hops,
        object_name=msg.object_name,
    )
    if msg.WhichOneof("kind") == "http":
        h = msg.http
        inv.request = Request(
            h.url,
            method=h.method,
            headers=[(x.name, x.value) for x in h.headers],
            body=h.body,
            path=h.path,
        )
        inv.request.socket_id = h.socket_id
    else:
        inv.method = msg.method.name
        inv.args = msg.method.args
    return inv


def outcome_to_pb(call_id: int, outcome: Outcome | BaseException) -> pb.Result:
    msg = pb.Result(id=call_id)
    if isinstance(outcome, Response):
        h = msg.http
        h.status = outcome.status
        h.body = outcome.body
        h.headers.extend(pb.Header(name=k, value=v) for k, v in outcome.headers.items())
        ws = outcome.websocket
        if ws is not None:
            h.socket_namespace = ws.namespace
            h.socket_object_id = ws.object_id
    elif isinstance(outcome, bytes):
        msg.value = outcome
    else:
        err = outcome if isinstance(outcome, AbodeError) else RemoteError(
            str(outcome), type(outcome).__name__
        )
        e = msg.error
        e.code = err.code
        e.message = err.message
        if isinstance(err, RemoteError):
            e.remote_type = err.remote_type
        if isinstance(err, Refused):
            e.retry_after_ms = int(err.retry_after * 1000)
    return msg


def outcome_from_pb(msg: pb.Result) -> Outcome | AbodeError:
    kind = msg.WhichOneof("kind")
    if kind == "http":
        h = msg.http
        resp = Response(h.body, status=h.status, headers=[(x.name, x.value) for x in h.headers])
        if h.socket_object_id:
            resp.websocket = SocketOwner(h.socket_namespace, h.socket_object_id)
        return resp
    if kind == "value":
        return msg.value
    e = msg.error
    return from_code(e.code, e.message, e.remote_type, e.retry_after_ms / 1000.0)


def frame_to_pb(frame: Frame) -> pb.SocketFrame:
    msg = pb.SocketFrame(
        socket_id=frame.socket_id,
        namespace=frame.namespace,
        object_id=frame.object_id,
        kind=int(frame.kind),  # type: ignore[arg-type]
        code=frame.code,
        reason=frame.reason,
        was_clean=frame.was_clean,
        revision=frame.revision,
    )
    if isinstance(frame.data, str):
        msg.text = frame.data
    elif frame.data is not None:
        msg.binary = frame.data
    return msg


def frame_from_pb(msg: pb.SocketFrame) -> Frame:
    which = msg.WhichOneof("data")
    data: str | bytes | None = None
    if which == "text":
        data = msg.text
    elif which == "binary":
        data = msg.binary
    return Frame(
        msg.socket_id, msg.namespace, msg.object_id, FrameKind(msg.kind), data,
        msg.code, msg.reason, msg.was_clean, msg.revision,
    )


def batch_to_pb(batch: Batch, revision: int, seq: int = 0) -> pb.ReplicaWrite:
    """A home's batch for a replica; ``revision`` is the home's membership revision."""
    return pb.ReplicaWrite(
        seq=seq,
        object_id=batch.object_id,
        namespace=batch.namespace,
        version=batch.version,
        base=batch.base,
        revision=revision,
        puts=[pb.KeyValue(key=k, value=v) for k, v in batch.puts],
        deletes=batch.deletes,
        index_puts=[pb.KeyValue(key=k, value=v) for k, v in batch.index_puts],
        index_deletes=batch.index_deletes,
    )


def batch_from_pb(msg: pb.ReplicaWrite) -> Batch:
    return Batch(
        msg.object_id, msg.version, msg.namespace,
        puts=[(kv.key, kv.value) for kv in msg.puts],
        deletes=list(msg.deletes),
        index_puts=[(kv.key, kv.value) for kv in msg.index_puts],
        index_deletes=list(msg.index_deletes),
        base=msg.base,
    )


# UNREACHABLE has no wire form: it is what a home concludes when no ack came.
_ACK_TO_PB = {
    AckStatus.OK: pb.ReplicaAck.OK,
    AckStatus.REFUSED: pb.ReplicaAck.REFUSED,
    AckStatus.FAILED: pb.ReplicaAck.FAILED,
}
_ACK_FROM_PB = {v: k for k, v in _ACK_TO_PB.items()}


def ack_to_pb(seq: int, ack: ReplicaAck) -> pb.ReplicaAck:
    status = _ACK_TO_PB.get(ack.status, pb.ReplicaAck.FAILED)
    return pb.ReplicaAck(seq=seq, status=status, message=ack.message)


def ack_from_pb(msg: pb.ReplicaAck) -> ReplicaAck:
    status = _ACK_FROM_PB.get(msg.status)
    if status is None:  # unset or unknown: nothing says the replica took the write
        return ReplicaAck(AckStatus.FAILED, msg.message or f"replica ack with status {msg.status}")
    return ReplicaAck(status, msg.message)
