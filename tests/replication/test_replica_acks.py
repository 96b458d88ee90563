"""PeerClient.replicate against a real node (``abode dev``: a node that is no cluster
member, so it refuses replica writes): typed acks come back over the wire, a full
outbox refuses in order, and a replica that does not answer is UNREACHABLE within
the timeout, never an exception."""

from __future__ import annotations

import signal

import pytest

from abode.cluster.peer import PeerClient
from abode.cluster.replica import AckStatus, Batch

pytestmark = pytest.mark.timeout(60)

APP = "tests.websockets.broadcast_app"


def batches(n: int) -> list[Batch]:
    return [Batch(bytes([i]) * 32, version=i + 1, namespace="Hall", puts=[(b"k", b"v")],
                  base=i) for i in range(n)]


async def test_acks_are_typed_and_a_full_outbox_refuses_the_rest_in_order(dev_factory) -> None:
    dev = dev_factory(APP)
    peer = PeerClient(dev.info["grpc"], node_id="n0", max_queued_writes=2)
    try:
        acks = await peer.replicate(batches(5), revision=1, timeout=10)
    finally:
        await peer.close()
    assert [a.status for a in acks] == [AckStatus.REFUSED] * 5
    assert all("not a cluster member" in a.message for a in acks[:2]), acks
    assert all("queue is full" in a.message for a in acks[2:]), acks


async def test_a_replica_that_does_not_answer_is_unreachable_after_the_timeout(
    dev_factory
) -> None:
    dev = dev_factory(APP)
    peer = PeerClient(dev.info["grpc"], node_id="n0")
    try:
        assert (await peer.replicate(batches(1), revision=1, timeout=10))[0].status \
            is AckStatus.REFUSED  # the stream is up
        dev.proc.send_signal(signal.SIGSTOP)
        try:
            # Returns while the replica is still stopped, or never (the test times out).
            acks = await peer.replicate(batches(3), revision=1, timeout=0.5)
        finally:
            dev.proc.send_signal(signal.SIGCONT)
        assert [a.status for a in acks] == [AckStatus.UNREACHABLE] * 3, acks
        # The late acks of those writes are dropped; the next call is answered.
        assert (await peer.replicate(batches(1), revision=1, timeout=10))[0].status \
            is AckStatus.REFUSED
    finally:
        await peer.close()
