"""A room of thousands of sockets where every member receives each broadcast.

One broadcast is one frame per socket, all ready at once on the node's stream to
the router. Sent as one Envelope, ROOM x MESSAGE bytes went over gRPC's 64 MiB
limit and the stream broke, taking every call and socket on it along. The writer
now splits what is ready into Envelopes by encoded size.

Sizes: 5,000 sockets take about as long to open as the whole rest of the test on a
shared 2-core machine, so ROOM x MESSAGE is what carries the point: 5,000 x 16 KiB
is 80 MiB per broadcast, over the limit with room to spare.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from abode.cluster.outbox import MAX_MESSAGE_BYTES
from tests.harness import assert_eventually
from tests.websockets.helpers import receive

pytestmark = pytest.mark.timeout(180)

APP = "tests.websockets.broadcast_app"

ROOM = 5_000
MESSAGE = 16 * 1024
CONNECT_AT_ONCE = 100


async def test_every_member_of_a_5000_socket_room_receives_a_broadcast_over_64_mib(
    dev_factory, http: aiohttp.ClientSession
) -> None:
    assert ROOM * MESSAGE > MAX_MESSAGE_BYTES
    dev = dev_factory(APP)
    url = f"{dev.url.replace('http', 'ws', 1)}/Hall/big/ws"
    t0 = time.monotonic()
    sockets: list[aiohttp.ClientWebSocketResponse] = []
    try:
        for start in range(0, ROOM, CONNECT_AT_ONCE):
            sockets += await asyncio.gather(*(
                http.ws_connect(f"{url}?user=u{i}", max_msg_size=4 * MESSAGE)
                for i in range(start, min(ROOM, start + CONNECT_AT_ONCE))))
        opened = time.monotonic() - t0

        async def everyone_is_in() -> bool:
            async with http.get(f"{dev.url}/Hall/big") as resp:
                return resp.status == 200 and (await resp.json())["sockets"] == ROOM

        await assert_eventually(everyone_is_in, timeout=30, interval=0.2)

        for n, sender in enumerate((sockets[0], sockets[-1]), start=1):
            t1 = time.monotonic()
            pad = f"{n}:" + "x" * MESSAGE
            await sender.send_str(f"say:{pad}")
            got = await asyncio.gather(*(receive(ws, timeout=60) for ws in sockets))
            assert all(g == {"n": n, "text": pad} for g in got), \
                {str(g)[:120] for g in got if g.get("n") != n}
            print(f"\nbroadcast {n}: {ROOM} x {len(pad)} bytes delivered to every member in "
                  f"{time.monotonic() - t1:.1f} s")
        print(f"opened {ROOM} sockets in {opened:.1f} s")

        # The stream carried it all without breaking: the room still answers.
        await sockets[1].send_str("count")
        assert await receive(sockets[1]) == {"sockets": ROOM}
    finally:
        t2 = time.monotonic()
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
        print(f"closed in {time.monotonic() - t2:.1f} s")
    assert "Traceback" not in dev.logs()
