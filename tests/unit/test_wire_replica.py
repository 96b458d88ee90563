"""Replica writes and acks across the wire (cluster/wire.py): every status survives
the trip, and an ack that does not say OK is never read as OK."""

from __future__ import annotations

import pytest

from abode.cluster import wire
from abode.cluster.replica import AckStatus, Batch, ReplicaAck
from abode.cluster.rpc.v1 import node_pb2 as pb


@pytest.mark.parametrize(("status", "back"), [
    (AckStatus.OK, AckStatus.OK),
    (AckStatus.REFUSED, AckStatus.REFUSED),
    (AckStatus.FAILED, AckStatus.FAILED),
    # Only a home concludes UNREACHABLE (no answer came); a replica never sends it.
    (AckStatus.UNREACHABLE, AckStatus.FAILED),
])
def test_an_ack_keeps_its_status_and_message(status: AckStatus, back: AckStatus) -> None:
    msg = wire.ack_to_pb(42, ReplicaAck(status, "why"))
    assert msg.seq == 42
    again = wire.ack_from_pb(pb.ReplicaAck.FromString(msg.SerializeToString()))
    assert again == ReplicaAck(back, "why")


def test_an_ack_without_a_status_is_a_failure_not_ok() -> None:
    # What a peer that predates statuses sends for a refusal: only a message.
    ack = wire.ack_from_pb(pb.ReplicaAck(seq=1, message="not the home"))
    assert ack.status is AckStatus.FAILED and not ack.ok
    assert "not the home" in ack.message
    assert not wire.ack_from_pb(pb.ReplicaAck(seq=1)).ok


def test_a_batch_round_trips_with_the_homes_revision() -> None:
    batch = Batch(b"\x01" * 32, version=7 << 32, namespace="Ledger",
                  puts=[(b"k1", b"v1"), (b"k2", b"")], deletes=[b"k3"],
                  index_puts=[(b"i1", b"Ledger")], index_deletes=[b"i2"], base=6 << 32)
    msg = wire.batch_to_pb(batch, revision=19, seq=5)
    assert (msg.seq, msg.revision) == (5, 19)
    assert wire.batch_from_pb(pb.ReplicaWrite.FromString(msg.SerializeToString())) == batch
