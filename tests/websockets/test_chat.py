"""examples/chat.py through ``abode dev examples.app``: the page, rooms, history, order."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.websockets.helpers import receive

pytestmark = pytest.mark.timeout(60)

APP = "examples.app"
CLIENTS = 20
SENDERS = 5
EACH = 10


async def join(http: aiohttp.ClientSession, base: str, room: str, user: str):
    ws = await http.ws_connect(f"{base}/ChatRoom/{room}/ws?user={user}")
    history = await receive(ws)
    assert history["type"] == "history"
    return ws, history


async def until(ws: aiohttp.ClientWebSocketResponse, kind: str) -> dict:
    """Skip other events (e.g. joins of later clients) up to the next one of ``kind``."""
    while True:
        event = await receive(ws)
        if event["type"] == kind:
            return event


async def test_page_and_other_examples_are_served(dev_factory, http):
    dev = dev_factory(APP)
    async with http.get(f"{dev.url}/") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/html")
        page = await resp.text()
    assert "new WebSocket(" in page and "/ChatRoom/" in page
    # The chat edge hands every other path to default routing.
    async with http.post(f"{dev.url}/Counter/chat-test/increment") as resp:
        assert (resp.status, await resp.json()) == (200, {"value": 1})
    async with http.post(f"{dev.url}/Tickets/chat-test/buy") as resp:
        assert resp.status == 200
    async with http.get(f"{dev.url}/Document/chat-test") as resp:
        assert (resp.status, await resp.json()) == (200, {"version": 0, "text": ""})
    async with http.get(f"{dev.url}/Nope/x") as resp:
        assert resp.status == 404
    async with http.get(f"{dev.url}/ChatRoom/lobby/ws") as resp:  # not an upgrade
        assert resp.status == 426


async def test_history_join_leave_and_ping(dev_factory, http):
    dev = dev_factory(APP)
    ada, history = await join(http, dev.url, "hist", "ada")
    assert history == {"type": "history", "messages": [], "users": ["ada"]}
    assert await receive(ada) == {"type": "join", "user": "ada", "users": ["ada"]}
    for i in range(105):
        await ada.send_str(f"m{i}")
    for i in range(105):
        assert (await until(ada, "message"))["text"] == f"m{i}"

    # A joiner gets the last 100 messages, in order; everyone hears the join.
    bob, history = await join(http, dev.url, "hist", "bob")
    assert [m["text"] for m in history["messages"]] == [f"m{i}" for i in range(5, 105)]
    assert [m["seq"] for m in history["messages"]] == list(range(6, 106))
    assert {m["user"] for m in history["messages"]} == {"ada"}
    assert history["users"] == ["ada", "bob"]
    assert await until(ada, "join") == {"type": "join", "user": "bob", "users": ["ada", "bob"]}
    await bob.send_str('{"type":"ping"}')  # the node answers; no chat message results
    assert await receive(bob) == {"type": "join", "user": "bob", "users": ["ada", "bob"]}
    assert await receive(bob) == {"type": "pong"}

    await bob.close()
    assert await until(ada, "leave") == {"type": "leave", "user": "bob", "users": ["ada"]}
    async with http.get(f"{dev.url}/ChatRoom/hist/messages") as resp:
        assert len((await resp.json())["messages"]) == 100
    # Another room is another object, with its own history.
    cy, history = await join(http, dev.url, "other room", "cy")
    assert history["messages"] == [] and history["users"] == ["cy"]
    await cy.close()
    await ada.close()


async def test_twenty_clients_see_every_message_in_one_order(dev_factory, http):
    dev = dev_factory(APP)
    clients = [(await join(http, dev.url, "busy", f"user{i}"))[0] for i in range(CLIENTS)]
    # Every client has heard every join once the last one's join reaches the first.
    for ws in clients:
        while (await until(ws, "join"))["user"] != f"user{CLIENTS - 1}":
            pass

    # Senders run closed-loop: each sends its next message once the room has broadcast
    # its last one back to it, so all five are always in flight together.
    echoed: dict[str, asyncio.Future[None]] = {}

    async def collect(ws: aiohttp.ClientWebSocketResponse, me: str) -> list[tuple[int, str, str]]:
        got = []
        while len(got) < SENDERS * EACH:
            m = await until(ws, "message")
            got.append((m["seq"], m["user"], m["text"]))
            if m["user"] == me and m["text"] in echoed:
                echoed[m["text"]].set_result(None)
        return got

    async def send(ws: aiohttp.ClientWebSocketResponse, sender: int) -> None:
        for k in range(EACH):
            text = f"s{sender}-{k}"
            echoed[text] = asyncio.get_running_loop().create_future()
            await ws.send_str(text)
            await asyncio.wait_for(echoed[text], timeout=10)

    collectors = [asyncio.create_task(collect(ws, f"user{i}")) for i, ws in enumerate(clients)]
    await asyncio.gather(*(send(clients[i], i) for i in range(SENDERS)))
    seen = await asyncio.wait_for(asyncio.gather(*collectors), timeout=10)

    first = seen[0]
    assert all(s == first for s in seen), "clients disagree on the order"
    assert [seq for seq, _, _ in first] == list(range(1, SENDERS * EACH + 1))
    for i in range(SENDERS):  # each sender's messages in its own order, under its name
        mine = [(user, text) for _, user, text in first if user == f"user{i}"]
        assert mine == [(f"user{i}", f"s{i}-{k}") for k in range(EACH)]
    await asyncio.gather(*(ws.close() for ws in clients))

