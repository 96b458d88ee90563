"""Membership changes and restarts under load lose nothing (DESIGN §3, §4).

Each test has its own etcd and processes (they add, remove and stop nodes). Load is
counters incremented through both routers; an acknowledged value must be there
afterwards, and no error other than a transient 503 (the event never ran) may show.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from abode.cluster import ids
from abode.cluster.ring import Member, Ring, position_of
from tests.cluster.harness import Cluster, EtcdProxy
from tests.cluster.load import CounterLoad, get_json, wait_healthy
from tests.harness import assert_eventually
from tests.replication.helpers import wait_caught_up

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=100)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=30)
    ) as session:
        yield session


async def _counts(http: aiohttp.ClientSession, url: str, names: list[str]) -> dict[str, int]:
    bodies = await asyncio.gather(*(get_json(http, "GET", f"{url}/Tally/{n}") for n in names))
    return {n: int(b["value"]) for n, b in zip(names, bodies, strict=True)}  # type: ignore[call-overload]


def _assert_exact(load: CounterLoad, counts: dict[str, int]) -> None:
    """No error but 503: every counter holds exactly its acknowledged increments."""
    assert not load.errors, load.errors[:10]
    load.assert_acked_unique()
    for name, values in load.acked.items():
        assert sorted(values) == list(range(1, len(values) + 1)), name
        assert counts[name] == len(values), (name, counts[name], len(values))


async def _settled(cluster: Cluster, names: list[str]) -> None:
    """Every node is at one membership revision with no range still being pulled."""

    async def check() -> bool:
        infos = [await cluster.info(n) for n in names]
        return len({i.revision for i in infos}) == 1 and all(
            i.pending_ranges == 0 for i in infos
        )

    await assert_eventually(check, timeout=30, interval=0.1)


async def test_adding_a_node_under_load_moves_a_quarter_and_loses_nothing(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    cluster.start_nodes("n1", "n2", "n3")
    cluster.start_routers(2)
    urls = cluster.router_urls
    await wait_healthy(http, urls, live=3)
    tag = os.urandom(3).hex()
    names = [f"add{i}-{tag}" for i in range(40)]
    # Big objects that will move to n4: each pull spans several chunks.
    big = [_owned_by("n4", ["n1", "n2", "n3", "n4"], f"big{i}-{tag}-") for i in range(4)]
    env, peer = cluster.direct_env("n1")
    try:
        for name in big:
            assert await env.Tally.get_by_name(name).fill(700) == 700
    finally:
        await peer.close()
    load = CounterLoad(http, urls, names).start()
    try:
        await load.until(200)
        cluster.start_node("n4")
        await wait_healthy(http, urls, live=4)
        await _settled(cluster, ["n1", "n2", "n3", "n4"])
        await load.until(200)
    finally:
        await load.stop()
    _assert_exact(load, await _counts(http, urls[0], names))
    env, peer = cluster.direct_env("n2")
    try:
        for name in big:
            count, total, pid = await env.Tally.get_by_name(name).keys()
            assert (count, total) == (700, sum(range(700))), name
            assert cluster.node_by_pid(pid) == "n4", name
    finally:
        await peer.close()

    share = float(cluster.status()["n4"]["share"])
    assert 18.0 < share < 32.0, share
    # A spread of fresh names: about a quarter of them live on n4 now.
    fresh = [f"spread{i}-{tag}" for i in range(120)]
    bodies = await asyncio.gather(*(get_json(http, "GET", f"{urls[i % 2]}/Tally/{n}")
                                    for i, n in enumerate(fresh)))
    on_n4 = sum(cluster.node_by_pid(int(b["pid"])) == "n4" for b in bodies)  # type: ignore[call-overload]
    assert 12 <= on_n4 <= 50, on_n4
    assert (await cluster.info("n4")).active_objects >= on_n4


async def test_removing_a_node_under_load_hands_off_and_it_exits_zero(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    cluster.start_nodes("n1", "n2", "n3")
    cluster.start_routers(2)
    urls = cluster.router_urls
    await wait_healthy(http, urls, live=3)
    tag = os.urandom(3).hex()
    names = [f"rm{i}-{tag}" for i in range(40)]
    load = CounterLoad(http, urls, names).start()
    try:
        await load.until(200)
        n3_pid = cluster["n3"].info["pid"]
        assert any(pid == n3_pid for pid in await _homes(http, urls[0], names))
        result = cluster.cli("remove", "n3", "--etcd", cluster.etcd.url)
        assert result.returncode == 0, result.stdout + result.stderr
        assert cluster["n3"].wait(timeout=30) == 0
        await wait_healthy(http, urls, live=2)
        await _settled(cluster, ["n1", "n2"])
        await load.until(200)
    finally:
        await load.stop()
    _assert_exact(load, await _counts(http, urls[0], names))
    assert n3_pid not in await _homes(http, urls[0], names)
    assert set(cluster.status()) == {"n1", "n2"}
    assert "handed off its data" in cluster.logs("n3")


async def _homes(http: aiohttp.ClientSession, url: str, names: list[str]) -> set[int]:
    bodies = await asyncio.gather(*(get_json(http, "GET", f"{url}/Tally/{n}") for n in names))
    return {int(b["pid"]) for b in bodies}  # type: ignore[call-overload]


def _owned_by(node: str, members: list[str], prefix: str) -> str:
    """A Tally name that `node` owns on the ring of `members` (a pure function of them)."""
    ring = Ring([Member(m, "") for m in members])
    return next(n for n in (f"{prefix}{i}" for i in itertools.count())
                if ring.owner(position_of(ids.id_from_name("Tally", n).raw)) == node)


class HeldIncrement:
    """A POST whose event stays running (after its write) until `release()`."""

    def __init__(self, http: aiohttp.ClientSession, url: str, name: str, hold: Path) -> None:
        self.hold = hold

        async def post() -> tuple[int, str]:
            async with http.post(f"{url}/Tally/{name}", params={"hold": str(hold)}) as resp:
                return resp.status, await resp.text()

        self.task = asyncio.create_task(post())

    async def started(self) -> None:
        await assert_eventually(lambda: Path(f"{self.hold}.started").exists(), timeout=10)

    async def release(self) -> tuple[int, str]:
        self.hold.touch()
        return await self.task


async def test_sigterm_under_load_loses_no_acknowledged_write(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    cluster.start_nodes("n1", "n2", "n3")
    cluster.start_routers(2)
    urls = cluster.router_urls
    await wait_healthy(http, urls, live=3)
    tag = os.urandom(3).hex()
    names = [f"term{i}-{tag}" for i in range(30)]
    held_name = _owned_by("n2", ["n1", "n2", "n3"], f"held-{tag}-")
    load = CounterLoad(http, urls, names).start()
    try:
        await load.until(200)
        held = HeldIncrement(http, urls[0], held_name, cluster.base / f"hold-{tag}")
        await held.started()
        cluster["n2"].send(signal.SIGTERM)
        await assert_eventually(lambda: "stopping: draining" in cluster.logs("n2"), timeout=10)
        # The event n2 admitted before SIGTERM finishes, commits and is answered.
        status, text = await held.release()
        assert status == 200, text
        assert cluster["n2"].wait(30) == 0
        await wait_healthy(http, urls, live=2)
        await load.until(50)  # the other nodes keep serving their objects
        cluster.restart("n2")
        await wait_healthy(http, urls, live=3)
        await load.until(200)
    finally:
        await load.stop()
    assert "revoked" in cluster.logs("n2")  # it left at once, not a lease TTL later
    # A draining node finishes what it admitted and refuses the rest (503, retried):
    # every acknowledged increment is there, and nothing else happened.
    _assert_exact(load, await _counts(http, urls[0], names))
    assert (await get_json(http, "GET", f"{urls[1]}/Tally/{held_name}"))["value"] == 1


async def test_an_event_in_flight_when_its_object_moves_commits_and_moves_along(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    """The old home lets an event it admitted finish and commit before it hands the
    object over; the new home then serves the committed value."""
    cluster.start_nodes("n1", "n2", "n3")
    cluster.start_router()
    url = cluster.router_urls[0]
    await wait_healthy(http, [url], live=3)
    # The ring is a function of the members, so we know in advance what n4 will own.
    tag = os.urandom(3).hex()
    name = _owned_by("n4", ["n1", "n2", "n3", "n4"], f"move-{tag}-")
    before = Ring([Member(n, "") for n in ("n1", "n2", "n3")])
    old_home = before.owner(position_of(ids.id_from_name("Tally", name).raw))
    assert (await get_json(http, "POST", f"{url}/Tally/{name}"))["value"] == 1
    held = HeldIncrement(http, url, name, cluster.base / f"hold-{tag}")
    await held.started()
    cluster.start_node("n4")
    n4_revision = (await cluster.info("n4")).revision

    async def old_home_caught_up() -> bool:
        return (await cluster.info(old_home)).revision >= n4_revision

    await assert_eventually(old_home_caught_up, timeout=10)
    status, text = await held.release()
    assert status == 200, text
    assert json.loads(text)["value"] == 2
    body = await get_json(http, "GET", f"{url}/Tally/{name}")
    assert body["value"] == 2
    assert cluster.node_by_pid(int(body["pid"])) == "n4"  # type: ignore[call-overload]


async def test_a_router_with_a_stale_view_still_reaches_the_new_home(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    """router-2 is cut off from etcd while n4 joins: it keeps routing by the old ring,
    so calls for objects that moved reach their old home, which forwards them to n4.
    One instance answers, with the state that moved."""
    proxy = EtcdProxy(cluster.etcd.client_port)
    try:
        cluster.start_nodes("n1", "n2", "n3")
        fresh = cluster.start_router()
        stale = cluster.start_router(etcd_url=proxy.url)
        urls = [fresh.info["url"], stale.info["url"]]
        await wait_healthy(http, urls, live=3)
        tag = os.urandom(3).hex()
        names = [_owned_by("n4", ["n1", "n2", "n3", "n4"], f"moving{i}-{tag}-")
                 for i in range(5)]
        for name in names:
            assert (await get_json(http, "POST", f"{urls[0]}/Tally/{name}"))["value"] == 1

        proxy.cut()
        try:
            cluster.start_node("n4")
            await wait_healthy(http, urls[:1], live=4)
            await _settled(cluster, ["n1", "n2", "n3", "n4"])
            # The stale router still sees three nodes...
            async with http.get(f"{urls[1]}/_abode/health") as resp:
                assert (await resp.json())["live_nodes"] == 3
            # ...yet each call it routes by the old ring is answered by n4, once.
            for name in names:
                body = await get_json(http, "POST", f"{urls[1]}/Tally/{name}")
                assert body["value"] == 2, name
                assert cluster.node_by_pid(int(body["pid"])) == "n4", name  # type: ignore[call-overload]
                body = await get_json(http, "POST", f"{urls[0]}/Tally/{name}")
                assert body["value"] == 3, name
                assert cluster.node_by_pid(int(body["pid"])) == "n4", name  # type: ignore[call-overload]
        finally:
            proxy.heal()
        await wait_healthy(http, urls, live=4)
    finally:
        proxy.close()


async def test_a_dead_homes_objects_answer_503_until_it_returns_with_their_state(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    """With one replica a killed node's objects are unavailable (503 + Retry-After),
    never served from an empty store elsewhere; they come back with the node."""
    cluster.start_nodes("n1", "n2", "n3")
    cluster.start_router()
    url = cluster.router_urls[0]
    await wait_healthy(http, [url], live=3)
    tag = os.urandom(3).hex()
    gone = _owned_by("n2", ["n1", "n2", "n3"], f"gone-{tag}-")
    alive = _owned_by("n3", ["n1", "n2", "n3"], f"alive-{tag}-")
    for name in (gone, alive):
        for _ in range(3):
            await get_json(http, "POST", f"{url}/Tally/{name}")
    assert cluster.kill("n2", signal.SIGKILL) == -signal.SIGKILL
    await wait_healthy(http, [url], live=2, timeout=20)
    async with http.post(f"{url}/Tally/{gone}") as resp:
        assert resp.status == 503, await resp.text()
        assert "n2" in (await resp.json())["error"]
        assert resp.headers["Retry-After"]
    assert (await get_json(http, "POST", f"{url}/Tally/{alive}"))["value"] == 4
    cluster.restart("n2")
    body = await get_json(http, "POST", f"{url}/Tally/{gone}")
    assert body["value"] == 4
    assert cluster.node_by_pid(int(body["pid"])) == "n2"  # type: ignore[call-overload]


async def test_an_event_in_flight_on_the_interim_home_commits_when_its_home_returns(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    """With two copies, a restarted node is home again once caught up. An event its
    object's interim home admitted before that still finishes there, commits and is
    answered 200; the returning node runs the object only after it, with its write."""
    nodes = ["n1", "n2", "n3"]
    cluster.start_nodes(*nodes, replicas=2)
    cluster.start_router()
    url = cluster.router_urls[0]
    await wait_healthy(http, [url], live=3)
    await wait_caught_up(cluster, nodes)
    tag = os.urandom(3).hex()
    name = _owned_by("n2", nodes, f"back-{tag}-")
    body = await get_json(http, "POST", f"{url}/Tally/{name}")
    assert cluster.node_by_pid(int(body["pid"])) == "n2"  # type: ignore[call-overload]
    cluster["n2"].send(signal.SIGTERM)
    assert cluster["n2"].wait(30) == 0
    await wait_healthy(http, [url], live=2)
    body = await get_json(http, "POST", f"{url}/Tally/{name}")
    interim = cluster.node_by_pid(int(body["pid"]))  # type: ignore[call-overload]
    assert interim != "n2" and body["value"] == 2

    held = HeldIncrement(http, url, name, cluster.base / f"hold-{tag}")
    await held.started()
    cluster.restart("n2")
    await wait_caught_up(cluster, nodes)  # n2 is the object's home in etcd now
    # A call sent now runs after the held event, wherever it lands.
    after = asyncio.create_task(get_json(http, "POST", f"{url}/Tally/{name}"))
    status, text = await held.release()
    assert status == 200, text
    assert json.loads(text)["value"] == 3
    assert (await after)["value"] == 4
    body = await get_json(http, "GET", f"{url}/Tally/{name}")
    assert body["value"] == 4
    assert cluster.node_by_pid(int(body["pid"])) == "n2"  # type: ignore[call-overload]
