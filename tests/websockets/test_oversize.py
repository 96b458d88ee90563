"""One answer over the message limit is refused to its caller, and the router's stream
to the node (with every other call and socket on it) carries on."""

from __future__ import annotations

import aiohttp
import pytest

from abode.cluster.outbox import MAX_ITEM_BYTES
from tests.websockets.helpers import receive

pytestmark = pytest.mark.timeout(60)

APP = "tests.websockets.broadcast_app"


async def test_a_result_over_the_message_limit_is_an_error_and_the_stream_lives_on(
    dev_factory, http: aiohttp.ClientSession
) -> None:
    dev = dev_factory(APP)
    ws = await http.ws_connect(f"{dev.url.replace('http', 'ws', 1)}/Hall/o/ws")
    try:
        async with http.get(f"{dev.url}/Hall/o", params={"bytes": str(MAX_ITEM_BYTES + 1)}) as r:
            assert r.status == 500
            assert "too large" in (await r.json())["error"]
        # A large answer under the limit still goes, alone in its Envelope.
        async with http.get(f"{dev.url}/Hall/o", params={"bytes": str(40 << 20)}) as r:
            assert r.status == 200
            assert len(await r.read()) == 40 << 20
        await ws.send_str("count")  # the socket opened before is still served
        assert await receive(ws) == {"sockets": 1}
    finally:
        await ws.close()
    assert "Traceback" not in dev.logs()
