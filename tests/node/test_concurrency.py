"""One object, many concurrent callers, through a real ``abode dev`` (DESIGN §3).

Turn-based execution makes ``count -= 1`` safe without locks; the output gate makes
every acknowledged write survive a SIGKILL.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.node.helpers import fetch_json


@pytest.fixture
async def crowd() -> AsyncIterator[aiohttp.ClientSession]:
    """A client allowed many connections at once."""
    connector = aiohttp.TCPConnector(limit=200)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=60)
    ) as session:
        yield session


async def test_500_buyers_100_tickets_exactly_100_sold(dev_factory, crowd):
    dev = dev_factory("tests.apps.tickets")
    url = f"{dev.url}/Tickets/concert-1/buy"
    results = await asyncio.gather(*(fetch_json(crowd, "POST", url) for _ in range(500)))
    sold = [body["ticket"] for status, body in results if status == 200]
    refused = [body for status, body in results if status == 409]
    assert sorted(sold) == list(range(1, 101))
    assert len(refused) == 400 and all(body == {"sold_out": True} for body in refused)
    assert await fetch_json(crowd, "GET", f"{dev.url}/Tickets/concert-1/") == (200, {"left": 0})


async def test_1000_concurrent_increments_return_1_to_1000_once_each(dev_factory, crowd):
    dev = dev_factory("examples.counter")
    url = f"{dev.url}/Counter/hot-1/increment"
    results = await asyncio.gather(*(fetch_json(crowd, "POST", url) for _ in range(1000)))
    assert all(status == 200 for status, _ in results), {s for s, _ in results}
    assert sorted(body["value"] for _, body in results) == list(range(1, 1001))
    assert await fetch_json(crowd, "GET", f"{dev.url}/Counter/hot-1") == (200, {"value": 1000})


async def test_sigkill_under_load_keeps_every_acknowledged_increment(dev_factory, crowd):
    """Kill ``abode dev`` with SIGKILL while increments are in flight, restart it on the
    same data, and check that no acknowledged value was lost; several rounds, because
    each kill lands at a random point of the commit cycle."""
    dev = dev_factory("examples.counter")
    acked: list[int] = []
    for _ in range(3):
        acked += await _load_then_kill(dev, crowd)
        assert len(acked) == len(set(acked)), "a value was acknowledged twice"
        dev.start()  # same data directory
        status, body = await fetch_json(crowd, "GET", f"{dev.url}/Counter/kill-1")
        assert status == 200
        assert body["value"] >= max(acked), "an acknowledged increment was lost"
    status, body = await fetch_json(crowd, "POST", f"{dev.url}/Counter/kill-1/increment")
    assert status == 200 and body["value"] > max(acked)


async def _load_then_kill(dev, crowd: aiohttp.ClientSession) -> list[int]:
    url = f"{dev.url}/Counter/kill-1/increment"
    acked: list[int] = []
    enough = asyncio.Event()

    async def worker() -> None:
        while True:
            try:
                status, body = await fetch_json(crowd, "POST", url)
            except (TimeoutError, aiohttp.ClientError):
                return  # the server died under us: this increment is unacknowledged
            if status != 200:
                return
            acked.append(body["value"])
            if len(acked) >= 200:
                enough.set()

    workers = [asyncio.ensure_future(worker()) for _ in range(32)]
    try:
        await asyncio.wait_for(enough.wait(), timeout=60)
        dev.kill()  # SIGKILL mid-load: requests are in flight and commits are pending
        await asyncio.wait_for(asyncio.gather(*workers), timeout=30)
    finally:
        for w in workers:
            w.cancel()
    return acked
