"""cluster/outbox.py: Envelopes stay under the message limit, queues stay bounded."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from abode.cluster.errors import Overloaded
from abode.cluster.outbox import (
    ENVELOPE_BYTES,
    ITEM_OVERHEAD,
    MAX_ITEM_BYTES,
    MAX_MESSAGE_BYTES,
    MessageTooLarge,
    Outbox,
    messages,
)
from abode.cluster.rpc.v1 import node_pb2 as pb


def frame(size: int) -> pb.SocketFrame:
    return pb.SocketFrame(socket_id="s", binary=b"x" * size)


def big() -> Outbox[pb.SocketFrame]:
    return Outbox("frames", max_items=10**6, max_bytes=1 << 40)


# Real megabyte-sized messages: few examples, and no per-example deadline on a
# shared machine.
@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 3 * ENVELOPE_BYTES // 2), min_size=1, max_size=12))
def test_envelopes_hold_everything_in_order_and_stay_under_the_limit(sizes: list[int]) -> None:
    box = big()
    for i, size in enumerate(sizes):
        box.put(pb.SocketFrame(socket_id=str(i), binary=b"x" * size))
    order: list[str] = []
    while box:
        taken, _ = box.take(0)
        env = pb.Envelope(frames=messages(taken))
        assert taken
        assert env.ByteSize() <= MAX_MESSAGE_BYTES
        # Several items share an Envelope only within ENVELOPE_BYTES.
        assert len(taken) == 1 or env.ByteSize() <= ENVELOPE_BYTES
        order += [f.socket_id for f in env.frames]
    assert order == [str(i) for i in range(len(sizes))]
    assert box.bytes == 0


def test_one_item_up_to_the_item_limit_goes_alone_and_one_over_is_refused() -> None:
    box = big()
    box.put(frame(MAX_ITEM_BYTES - 100))
    box.put(frame(10))
    first, _ = box.take(0)
    assert len(first) == 1 and pb.Envelope(frames=messages(first)).ByteSize() < MAX_MESSAGE_BYTES
    with pytest.raises(MessageTooLarge):
        box.put(frame(MAX_ITEM_BYTES))
    assert len(box) == 1  # the refused one is not queued


def test_a_full_queue_refuses_as_overloaded_unless_forced() -> None:
    box: Outbox[pb.SocketFrame] = Outbox("frames", max_items=3, max_bytes=1 << 20)
    for _ in range(3):
        box.put(frame(1))
    with pytest.raises(Overloaded):
        box.put(frame(1))
    box.put(frame(1), force=True)  # a close, an answer owed
    assert len(box) == 4
    # Bytes count each item's memory: its encoded size plus ITEM_OVERHEAD.
    bytes_box: Outbox[pb.SocketFrame] = Outbox(
        "frames", max_items=100, max_bytes=1000 + 2 * ITEM_OVERHEAD)
    bytes_box.put(frame(900))
    assert not bytes_box.full()
    with pytest.raises(Overloaded):
        bytes_box.put(frame(200))
    many: Outbox[pb.SocketFrame] = Outbox("frames", max_items=100, max_bytes=10 * ITEM_OVERHEAD)
    with pytest.raises(Overloaded):
        for _ in range(10):
            many.put(pb.SocketFrame())  # empty messages still cost memory


def test_items_taken_and_not_sent_go_back_to_the_front_in_order() -> None:
    box = big()
    for i in range(5):
        box.put(pb.SocketFrame(socket_id=str(i)))
    taken, _ = box.take(0, max_items=3)
    box.put(pb.SocketFrame(socket_id="5"))
    before = box.bytes
    box.put_back(taken)
    assert box.bytes == before + sum(size + ITEM_OVERHEAD for _, size in taken)
    assert [f.socket_id for f in box.clear()] == [str(i) for i in range(6)]
