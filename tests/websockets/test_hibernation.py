"""Hibernation: objects leave memory while their sockets stay open, and wake on a message.

The node's own view (active objects) comes from its Info RPC over real gRPC.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.harness import assert_eventually
from tests.websockets.helpers import APP, active_objects, receive

pytestmark = pytest.mark.timeout(60)

ROOMS = 20
PER_ROOM = 10


async def hibernated(dev) -> bool:
    return await active_objects(dev) == 0


async def test_200_sockets_survive_eviction_of_their_20_rooms(dev_factory, http):
    dev = dev_factory(APP, "--idle-timeout", "1")
    # Separate connection pools would be wasted: a WebSocket holds its own connection.
    sockets: dict[tuple[int, int], aiohttp.ClientWebSocketResponse] = {}

    async def join(room: int, i: int) -> None:
        url = f"{dev.url}/Room/hib-{room}/ws?user=r{room}u{i}&tags=group{i % 2}"
        sockets[room, i] = await http.ws_connect(url)

    await asyncio.gather(*(join(r, i) for r in range(ROOMS) for i in range(PER_ROOM)))
    before = {}
    for r in range(ROOMS):
        await sockets[r, 0].send_str("who")
        before[r] = (await receive(sockets[r, 0]))["activations"]
    assert await active_objects(dev) == ROOMS

    # Every room leaves memory; no socket closes.
    await assert_eventually(lambda: hibernated(dev), timeout=15, interval=0.2)
    assert not any(ws.closed for ws in sockets.values())

    # A message to each socket wakes its room: the constructor ran again, and the
    # attachment (user name) and tags of every socket came through intact.
    async def ask(room: int, i: int) -> dict:
        await sockets[room, i].send_str(f"who:{room}.{i}")
        return await receive(sockets[room, i])

    keys = list(sockets)
    replies = await asyncio.gather(*(ask(r, i) for r, i in keys))
    for (r, i), who in zip(keys, replies, strict=True):
        assert who["arg"] == f"{r}.{i}"
        assert who["user"] == f"r{r}u{i}"
        assert who["tags"] == [f"user:r{r}u{i}", "room", f"group{i % 2}"]
        assert who["tagged"] == 1 and who["peers"] == PER_ROOM
        assert who["activations"] > before[r], (r, who, before[r])

    # get_websockets(tag) after waking: a broadcast reaches exactly the room's sockets.
    for r in range(ROOMS):
        await sockets[r, 3].send_str(f"say:{r}")
    for (r, _i), ws in sockets.items():
        said = await receive(ws)
        assert said["kind"] == "said" and said["arg"] == str(r) and said["user"] == f"r{r}u3"
    await asyncio.gather(*(ws.close() for ws in sockets.values()))


async def test_auto_response_does_not_wake_the_object(dev_factory, http):
    dev = dev_factory(APP, "--idle-timeout", "1")
    ws = await http.ws_connect(f"{dev.url}/Room/auto/ws?user=ada")
    other = await http.ws_connect(f"{dev.url}/Room/auto/ws?user=bob")
    await ws.send_str("auto")
    assert (await receive(ws))["kind"] == "auto"
    await ws.send_str("who")
    first = await receive(ws)
    assert first["auto_at"] is None

    await assert_eventually(lambda: hibernated(dev), timeout=15, interval=0.2)
    for _ in range(5):
        await ws.send_str("ping")
        assert await receive(ws) == "pong"
    await other.send_str("ping")
    assert await receive(other) == "pong"
    assert await active_objects(dev) == 0  # answered by the node; the room slept through

    # The next real message wakes the room once; it sees when the auto-response went out.
    await ws.send_str("who")
    woke = await receive(ws)
    assert woke["activations"] == first["activations"] + 1
    assert woke["auto_at"] is not None
    await other.send_str("who")
    assert (await receive(other))["auto_at"] is not None
    await ws.close()
    await other.close()
