"""What lives with an object follows it to its next home when its home is killed:
a pending alarm fires there, and hibernated WebSockets stay open and keep working
(DESIGN §3, "Alarms", "WebSockets across the cluster"; ``--replicas 2``)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from typing import Any

import aiohttp
import pytest

from tests.cluster.harness import Cluster
from tests.harness import assert_eventually
from tests.replication.helpers import get_json, wait_caught_up, wait_healthy

pytestmark = pytest.mark.timeout(120)

NODES = ("n1", "n2", "n3")


async def _home_of(cluster: Cluster, http: aiohttp.ClientSession, url: str) -> str:
    return cluster.node_by_pid(int((await get_json(http, url))["pid"]))


async def test_a_pending_alarm_of_a_killed_home_fires_on_the_new_home(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    cluster.start_nodes(*NODES, replicas=2)
    url = cluster.start_router().info["url"]
    await wait_healthy(http, [url], live=3)
    await wait_caught_up(cluster, NODES)
    tag = os.urandom(3).hex()
    # Two objects with one home: one alarm falls due about when the home's lease
    # lapses, the other well after the new home took over.
    first = f"/Alarmist/early-{tag}"
    victim = await _home_of(cluster, http, url + first)
    late: str | None = None
    for i in range(200):
        if await _home_of(cluster, http, url + f"/Alarmist/late{i}-{tag}") == victim:
            late = f"/Alarmist/late{i}-{tag}"
            break
    assert late is not None
    for path, in_ms in ((first, 1500), (late, 5000)):
        async with http.post(url + path, params={"in_ms": str(in_ms)}) as resp:
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["alarm"] is not None
    victim_pid = cluster[victim].info["pid"]
    killed_at = time.monotonic()
    cluster.kill(victim, signal.SIGKILL)

    async def fired(path: str) -> dict[str, Any] | None:
        body = await get_json(http, url + path)
        return body if body["fired"] else None

    for path in (first, late):
        body = await assert_eventually(lambda p=path: fired(p),  # type: ignore[misc]
                                       timeout=cluster.lease_ttl + 25, interval=0.2)
        print(f"\n{path}: fired {time.monotonic() - killed_at:.1f} s after the kill by "
              f"{cluster.node_by_pid(body['fired'][0]['pid'])}")
        assert body["fired"][0]["pid"] != victim_pid
        assert body["fired"][0]["at"] >= body["due"]
        assert body["alarm"] is None  # done: the alarm cleared itself
        assert body["set_by"] == victim_pid


class Client:
    """One member of a chat room, collecting what the room sends it."""

    def __init__(self, user: str, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.user = user
        self.ws = ws
        self.got: dict[str, dict[str, Any]] = {}  # text -> message
        self.closed: tuple[Any, Any] | None = None
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                body = json.loads(msg.data)
                self.got[body["text"]] = body
        self.closed = (self.ws.close_code, self.ws.exception())

    async def close(self) -> None:
        await self.ws.close()
        await asyncio.wait_for(self._task, 10)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill", "restart"])
async def test_a_hibernated_room_keeps_its_sockets_and_chats_on_after_its_home_is_killed(
    cluster: Cluster, http: aiohttp.ClientSession, sig: signal.Signals
) -> None:
    cluster.start_nodes(*NODES, replicas=2, idle_timeout=0.5)
    cluster.start_routers(2)
    urls = cluster.router_urls
    await wait_healthy(http, urls, live=3)
    await wait_caught_up(cluster, NODES)
    room = f"/Chat/room-{os.urandom(3).hex()}"
    victim = await _home_of(cluster, http, urls[0] + room)
    ws_urls = [u.replace("http://", "ws://") + room + "/ws" for u in urls]
    clients = [
        Client(f"u{i}", await http.ws_connect(ws_urls[i % 2], params={"user": f"u{i}"}))
        for i in range(4)
    ]
    try:
        def everyone_has(text: str) -> bool:
            missing = [c.user for c in clients if text not in c.got]
            assert not missing, f"{text!r} not received by {missing}; " \
                f"closed: {[c.closed for c in clients]}"
            return True

        await clients[0].ws.send_str("hello")
        await assert_eventually(lambda: everyone_has("hello"), timeout=10)

        async def hibernated() -> bool:
            return (await cluster.info(victim)).active_objects == 0

        await assert_eventually(hibernated, timeout=20, interval=0.1)
        cluster.kill(victim, sig)
        killed_at = time.monotonic()
        # Every client speaks right after the kill, through both routers.
        for c in clients:
            await c.ws.send_str(f"after-{c.user}")
        for c in clients:
            text = f"after-{c.user}"
            await assert_eventually(lambda t=text: everyone_has(t),  # type: ignore[misc]
                                    timeout=cluster.lease_ttl + 20, interval=0.05)
        print(f"\nevery message sent after the kill arrived "
              f"{time.monotonic() - killed_at:.1f} s after it")
        await clients[1].ws.send_str("later")
        await assert_eventually(lambda: everyone_has("later"), timeout=10)
        assert all(c.closed is None for c in clients), [c.closed for c in clients]
        served_by = {cluster.node_by_pid(c.got["later"]["pid"]) for c in clients}
        assert served_by != {victim} and len(served_by) == 1, served_by
        # One history: every client saw each message under the same sequence number.
        for text in ["hello", "later", *(f"after-{c.user}" for c in clients)]:
            assert len({c.got[text]["seq"] for c in clients}) == 1, text
        assert {c.got["after-u2"]["user"] for c in clients} == {"u2"}  # attachment kept
    finally:
        for c in clients:
            await c.close()
