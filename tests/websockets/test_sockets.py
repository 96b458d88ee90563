"""Socket lifecycle through a real ``abode dev``: upgrades, close paths, limits, atomicity."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.harness import assert_eventually
from tests.websockets.helpers import APP, receive, receive_close, upgrade_headers

pytestmark = pytest.mark.timeout(60)


async def state(http: aiohttp.ClientSession, base: str, room: str) -> dict:
    async with http.get(f"{base}/Room/{room}/state") as resp:
        assert resp.status == 200
        return await resp.json()


async def test_messages_reach_the_object_and_a_raising_handler_keeps_the_socket(dev_factory, http):
    dev = dev_factory(APP)
    ws = await http.ws_connect(f"{dev.url}/Room/basics/ws?user=ada&tags=x")
    await ws.send_str("hello")
    assert await receive(ws) == {"kind": "echo", "arg": "hello"}
    await ws.send_bytes(b"abc")
    assert await receive(ws) == b"cba"
    await ws.send_str("who:1")
    who = await receive(ws)
    assert who["user"] == "ada" and who["tags"] == ["user:ada", "room", "x"]
    assert who["tagged"] == 1 and who["peers"] == 1

    # The event raised after sending a frame and writing: neither leaves the node
    # (output gate + atomic events), and the socket stays open.
    await ws.send_str("boom:1")
    await ws.send_str("who:2")
    assert (await receive(ws))["arg"] == "2"
    assert (await state(http, dev.url, "basics"))["boom"] is None
    assert not ws.closed
    # A raising event's attachment change and close are undone with it.
    await ws.send_str("rename-boom:bob")
    await ws.send_str("close-boom")
    await ws.send_str("who:3")
    who = await receive(ws)
    assert (who["arg"], who["user"], who["peers"]) == ("3", "ada", 1)
    assert (await state(http, dev.url, "basics"))["sockets"] == ["ada"]

    # An attachment over 16 KiB is a ValueError in the object; the old one stays.
    await ws.send_str("big:1")
    big = await receive(ws)
    assert big["error"].startswith("ValueError") and "16384" in big["error"]
    assert big["user"] == "ada"
    await ws.close()


async def test_close_paths(dev_factory, http):
    dev = dev_factory(APP)
    room = f"{dev.url}/Room/closing"
    a = await http.ws_connect(f"{room}/ws?user=a")
    b = await http.ws_connect(f"{room}/ws?user=b")
    c = await http.ws_connect(f"{room}/ws?user=c")
    assert (await state(http, dev.url, "closing"))["sockets"] == ["a", "b", "c"]

    # Client closes: the object hears the client's code and reason, and the socket
    # is already out of get_websockets() in its close handler.
    await a.close(code=4000, message=b"bye")
    closes = await assert_eventually(
        lambda: _closes(http, dev.url, "closing", 1), timeout=10)
    assert closes == [{"user": "a", "code": 4000, "reason": "bye", "listed": False}]
    assert (await state(http, dev.url, "closing"))["sockets"] == ["b", "c"]

    # The object closes: the client sees the object's code and reason.
    await b.send_str("close")
    assert await receive_close(b) == (4001, "x")
    await assert_eventually(
        lambda: _sockets_are(http, dev.url, "closing", ["c"]), timeout=10)

    # The others are untouched.
    await c.send_str("who")
    assert (await receive(c))["peers"] == 1
    await c.close()


async def test_shutdown_closes_clients_with_going_away_and_objects_hear_it(dev_factory, http):
    dev = dev_factory(APP)
    sockets = [await http.ws_connect(f"{dev.url}/Room/shutdown/ws?user=u{i}") for i in range(3)]
    await sockets[0].send_str("who")
    assert (await receive(sockets[0]))["peers"] == 3

    # SIGTERM: dev stops its router first (clients hear 1001 going away), then the node.
    # Wait for the close frames while the process exits, not after.
    stopping = asyncio.create_task(asyncio.to_thread(dev.stop))
    codes = await asyncio.gather(*(receive_close(ws, timeout=15) for ws in sockets))
    assert await stopping == 0
    assert codes == [(1001, "router shutting down")] * 3

    # The node delivered websocket_close for every socket before it stopped: the
    # object recorded them durably, as a restart shows.
    dev.start()
    after = await state(http, dev.url, "shutdown")
    assert sorted(c["user"] for c in after["closes"]) == ["u0", "u1", "u2"]
    assert [c["code"] for c in after["closes"]] == [1001] * 3, after
    assert after["sockets"] == []


async def test_upgrade_that_the_object_does_not_accept(dev_factory, http):
    dev = dev_factory(APP)
    # Not accepted: the object's plain response comes back, no upgrade.
    async with http.get(f"{dev.url}/Room/plain/ws?accept=no", headers=upgrade_headers()) as r:
        assert r.status == 200
        assert await r.json() == {"plain": True, "path": "/ws"}
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        await http.ws_connect(f"{dev.url}/Room/plain/ws?accept=no")
    assert err.value.status == 200

    # A 101 without accept_websocket is an error, not a half-open socket.
    async with http.get(f"{dev.url}/Room/plain/ws?fake101=1", headers=upgrade_headers()) as r:
        assert r.status == 500
        assert "accept_websocket" in (await r.json())["error"]

    # 11 tags: the object's accept raises, and the upgrade fails naming the limit.
    async with http.get(f"{dev.url}/Room/plain/ws?ntags=9", headers=upgrade_headers()) as r:
        assert r.status == 500
        assert "at most 10 tags" in (await r.json())["error"]
    # None of those left a socket behind; 8 extra tags (10 in all) are fine.
    ws = await http.ws_connect(f"{dev.url}/Room/plain/ws?user=ok&ntags=8")
    assert (await state(http, dev.url, "plain"))["sockets"] == ["ok"]
    await ws.send_str("who")
    assert len((await receive(ws))["tags"]) == 10
    await ws.close()


async def _closes(http: aiohttp.ClientSession, base: str, room: str, n: int) -> list | None:
    closes = (await state(http, base, room))["closes"]
    return closes if len(closes) >= n else None


async def _sockets_are(http: aiohttp.ClientSession, base: str, room: str, users: list) -> bool:
    return (await state(http, base, room))["sockets"] == users
