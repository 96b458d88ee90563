"""A node that stops reading its stream: its callers are told Overloaded at once
(the call never ran) instead of the caller's queue growing without bound, and the
calls that were queued are answered once the node reads again."""

from __future__ import annotations

import asyncio
import signal

import pytest

from abode.cluster.env import Env
from abode.cluster.errors import Overloaded
from abode.cluster.peer import PeerClient
from tests.harness import assert_eventually

pytestmark = pytest.mark.timeout(60)

APP = "tests.websockets.broadcast_app"
BOUND = 8
BODY = 256 * 1024  # a few of these fill gRPC's flow-control window


async def test_a_full_call_queue_refuses_as_overloaded_and_drains_after(dev_factory) -> None:
    dev = dev_factory(APP)
    peer = PeerClient(dev.info["grpc"], max_queued_calls=BOUND)
    env = Env(["Hall"], peer, call_timeout=30.0)
    hall = env.Hall.get_by_name("stopped")
    queued: list[asyncio.Task[object]] = []
    try:
        assert (await hall.fetch("/")).status == 200  # the stream is up
        dev.proc.send_signal(signal.SIGSTOP)
        try:
            async def refused() -> bool:
                # Keep calling until the writer is stuck and the queue is full.
                task = asyncio.ensure_future(hall.fetch("/", method="POST", body=b"x" * BODY))
                await asyncio.sleep(0)
                await asyncio.sleep(0)
                if task.done() and isinstance(task.exception(), Overloaded):
                    return True
                queued.append(task)
                return False

            await assert_eventually(refused, timeout=20, interval=0.01)
            assert sum(not t.done() for t in queued) >= BOUND
        finally:
            dev.proc.send_signal(signal.SIGCONT)
        answers = await asyncio.gather(*queued)
        assert {a.status for a in answers} == {200}  # type: ignore[attr-defined]
        assert (await hall.fetch("/")).status == 200
    finally:
        dev.proc.send_signal(signal.SIGCONT)
        await asyncio.gather(*queued, return_exceptions=True)
        await peer.close()
