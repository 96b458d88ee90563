"""A router that stops reading its stream from a node: the node's queue of frames for
it stays bounded. Sockets whose frames find it full are closed with 1013 (try again
later), and the stream itself, with everything else on it, lives on."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from abode.cluster.peer import MAX_QUEUED_BYTES
from tests.cluster.conftest import etcd  # noqa: F401  (a fixture, used by name below)
from tests.cluster.etcd import EtcdProcess
from tests.cluster.harness import Cluster
from tests.websockets.helpers import receive

pytestmark = pytest.mark.timeout(120)

APP = "tests.websockets.broadcast_app"
SOCKETS = 20
SIZE = 256 * 1024
# Frames per socket: together twice the node's bound for one router's frames (an
# event's frames are released at once, so the queue fills before any is written).
TIMES = 2 * MAX_QUEUED_BYTES // (SOCKETS * SIZE)


@pytest.fixture
def hall_cluster(
    tmp_path: Path, etcd: EtcdProcess, request: pytest.FixtureRequest  # noqa: F811
) -> Iterator[Cluster]:
    handle = Cluster(tmp_path / "cluster", etcd, APP)
    try:
        yield handle
    finally:
        handle.stop_all()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(f"\n{handle.all_logs(tail=6000)}")


async def test_a_router_that_stops_reading_gets_its_sockets_shed_not_queued_forever(
    hall_cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    cluster = hall_cluster
    cluster.start_node("n1")
    paused, other = cluster.start_routers(2)
    url, other_url = paused.info["url"], other.info["url"]
    ws_url = f"{url.replace('http', 'ws', 1)}/Hall/shed/ws"
    sockets = await asyncio.gather(*(http.ws_connect(ws_url, max_msg_size=2 * SIZE)
                                     for _ in range(SOCKETS)))
    try:
        async with http.get(f"{other_url}/Hall/shed") as resp:
            assert (await resp.json())["sockets"] == SOCKETS
        paused.send(signal.SIGSTOP)
        try:
            async with http.post(f"{other_url}/Hall/shed",
                                 params={"size": str(SIZE), "times": str(TIMES)}) as resp:
                assert resp.status == 200
        finally:
            paused.send(signal.SIGCONT)

        async def closing_code(ws: aiohttp.ClientWebSocketResponse) -> int | None:
            got = 0
            while True:
                msg = await ws.receive(timeout=60)
                if msg.type == aiohttp.WSMsgType.TEXT:
                    got += 1
                    continue
                assert got < TIMES, "every frame arrived: nothing was shed"
                return ws.close_code if msg.type != aiohttp.WSMsgType.CLOSE else msg.data

        assert set(await asyncio.gather(*(closing_code(ws) for ws in sockets))) == {1013}
        assert "queue is full" in cluster.logs("n1")
        # Shedding is cheap: the burst did not hold the node's loop past its lease.
        assert "lease lost" not in cluster.logs("n1")
        # The stream to the paused router was not broken: a new socket there works.
        fresh = await http.ws_connect(ws_url)
        await fresh.send_str("count")
        assert await receive(fresh) == {"sockets": 1}
        await fresh.close()
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
