"""A router that dies takes its clients' sockets along: its stream to the node ends,
and the node delivers ``websocket_close`` (1006) for each of them to its object."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.cluster.conftest import etcd  # noqa: F401  (a fixture, used by name below)
from tests.cluster.etcd import EtcdProcess
from tests.cluster.harness import Cluster
from tests.harness import assert_eventually

pytestmark = pytest.mark.timeout(90)

APP = "tests.websockets.app"


@pytest.fixture
def room_cluster(
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


async def test_the_sockets_of_a_killed_router_are_closed_at_their_object(
    room_cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    cluster = room_cluster
    cluster.start_node("n1")
    doomed, survivor = cluster.start_routers(2)
    lost = await http.ws_connect(
        f"{doomed.info['url'].replace('http', 'ws', 1)}/Room/loss/ws?user=lost")
    kept = await http.ws_connect(
        f"{survivor.info['url'].replace('http', 'ws', 1)}/Room/loss/ws?user=kept")
    state_url = f"{survivor.info['url']}/Room/loss/state"
    try:
        async with http.get(state_url) as resp:
            assert (await resp.json())["sockets"] == ["kept", "lost"]
        cluster.kill(doomed.name, signal.SIGKILL)

        async def closed_at_the_object() -> dict[str, object]:
            async with http.get(state_url) as resp:
                state = await resp.json()
            assert state["sockets"] == ["kept"], state
            return state

        state = await assert_eventually(closed_at_the_object, timeout=30, interval=0.1)
        assert [(c["user"], c["code"]) for c in state["closes"]] == [("lost", 1006)]
    finally:
        await lost.close()
        await kept.close()
