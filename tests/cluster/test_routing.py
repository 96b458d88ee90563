"""One live home per object, whichever router or node a call enters by (DESIGN §3).

Three real nodes and two real routers, shared by this module's tests: nothing here
kills a process. Object names are unique per test.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter

import aiohttp
import pytest

from abode.cluster import codec, ids
from abode.cluster.errors import Unavailable
from abode.cluster.invocation import Invocation
from abode.cluster.ring import Member, Ring, position_of
from tests.cluster.harness import Cluster
from tests.cluster.load import get_json, wait_healthy

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
async def http() -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=200)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=30)
    ) as session:
        yield session  # type: ignore[misc]


async def test_ticket_sale_over_two_routers_never_oversells(
    three: Cluster, http: aiohttp.ClientSession
) -> None:
    urls = three.router_urls
    await wait_healthy(http, urls, live=3)
    sale = f"sale-{os.urandom(4).hex()}"

    async def buy(i: int) -> tuple[int, dict[str, object]]:
        async with http.post(f"{urls[i % 2]}/Tickets/{sale}") as resp:
            return resp.status, await resp.json()

    results = await asyncio.gather(*(buy(i) for i in range(300)))
    statuses = Counter(status for status, _ in results)
    assert statuses == {200: 100, 409: 200}, statuses
    tickets = sorted(int(body["ticket"]) for status, body in results if status == 200)  # type: ignore[call-overload]
    assert tickets == list(range(1, 101))
    pids = {body["pid"] for status, body in results if status == 200}
    assert len(pids) == 1, f"one sale was executed by several processes: {pids}"
    for url in urls:
        assert (await get_json(http, "GET", f"{url}/Tickets/{sale}"))["left"] == 0


async def test_counters_through_both_routers_return_each_value_once(
    three: Cluster, http: aiohttp.ClientSession
) -> None:
    urls = three.router_urls
    await wait_healthy(http, urls, live=3)
    tag = os.urandom(4).hex()
    names = [f"c{i}-{tag}" for i in range(12)]
    per_name = 25

    async def bump(name: str, i: int) -> tuple[str, int, int]:
        async with http.post(f"{urls[i % 2]}/Tally/{name}") as resp:
            assert resp.status == 200, await resp.text()
            body = await resp.json()
            return name, int(body["value"]), int(body["pid"])

    results = await asyncio.gather(
        *(bump(name, i) for i in range(per_name) for name in names)
    )
    by_name: dict[str, list[int]] = {name: [] for name in names}
    homes: dict[str, set[int]] = {name: set() for name in names}
    for name, value, pid in results:
        by_name[name].append(value)
        homes[name].add(pid)
    for name in names:
        assert sorted(by_name[name]) == list(range(1, per_name + 1)), name
        assert len(homes[name]) == 1, f"{name} ran in {homes[name]}"
    # The names spread over the nodes, and each ran on its ring owner.
    ring = Ring([Member(c.name, c.info["grpc"]) for c in three.nodes])
    for name in names:
        owner = ring.owner(position_of(ids.id_from_name("Tally", name).raw))
        assert three.node_by_pid(homes[name].pop()) == owner, name


async def test_a_node_that_is_not_home_forwards_to_the_home(
    three: Cluster, http: aiohttp.ClientSession
) -> None:
    """A call entering at the wrong node with a stale (zero) revision is answered
    by the home, never by a second instance on the node it entered."""
    await wait_healthy(http, three.router_urls, live=3)
    tag = os.urandom(4).hex()
    ring = Ring([Member(c.name, c.info["grpc"]) for c in three.nodes])
    names = [f"stale{i}-{tag}" for i in range(9)]
    owners = {n: ring.owner(position_of(ids.id_from_name("Tally", n).raw)) for n in names}
    for entry in three.nodes:
        env, peer = three.direct_env(entry.name)
        try:
            for name in names:
                # RPC and fetch, entering at `entry` whether or not it is home.
                pid = await env.Tally.get_by_name(name).where()
                assert three.node_by_pid(pid) == owners[name], (entry.name, name)
                resp = await env.Tally.get_by_name(name).fetch("/", method="POST")
                assert resp.status == 200
                assert three.node_by_pid((await resp.json())["pid"]) == owners[name]
        finally:
            await peer.close()
    # Every counter was incremented once per entry node, all on one instance.
    for name in names:
        body = await get_json(http, "GET", f"{three.router_urls[0]}/Tally/{name}")
        assert body["value"] == 3
    # A call that was already forwarded once and still lands on a non-home is refused
    # (503, never ran) rather than bounced on.
    name = names[0]
    wrong = next(c.name for c in three.nodes if c.name != owners[name])
    _, peer = three.direct_env(wrong)
    try:
        inv = Invocation("Tally", ids.id_from_name("Tally", name).raw, os.urandom(8),
                         10.0, method="where", args=codec.pack([[], {}]), hops=1)
        with pytest.raises(Unavailable, match="not the object's home"):
            await peer.invoke(inv)
    finally:
        await peer.close()


async def test_status_prints_members_and_ring_shares(
    three: Cluster, http: aiohttp.ClientSession
) -> None:
    await wait_healthy(http, three.router_urls, live=3)
    rows = three.status()
    assert set(rows) == {"n1", "n2", "n3"}
    for row in rows.values():
        assert row["live"] == "yes"
        assert 25.0 < float(row["share"]) < 42.0, rows
    result = three.cli("status", "--etcd", three.etcd.url)
    assert "3 members, 3 live, 2 routers" in result.stdout, result.stdout
