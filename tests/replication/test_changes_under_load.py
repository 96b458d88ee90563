"""Planned changes under load are invisible to clients (DESIGN §3, "Changes under load").

A node joining, ``abode remove`` of a node and a rolling restart (SIGTERM each node in
turn, each back and caught up before the next), with ``--replicas 2`` and ``3``, while
clients apply operations to ``Ledger`` objects through two routers. Every answer must
be a 200 or a 503 (the event never ran); no 500, 502, 504 or broken connection. The
final state of each object is exactly its acknowledged operations, each with the value
its client saw.
"""

from __future__ import annotations

import itertools
import os
import signal
from collections.abc import Sequence

import aiohttp
import pytest

from abode.cluster import ids
from abode.cluster.ring import Member, Ring, position_of
from tests.cluster.harness import Cluster
from tests.harness import assert_eventually
from tests.replication.helpers import (
    OpLoad,
    check_ledger,
    get_json,
    read_ledgers,
    wait_caught_up,
    wait_healthy,
)

pytestmark = pytest.mark.timeout(150)

OPS_PER_PHASE = 250


async def start(cluster: Cluster, http: aiohttp.ClientSession, nodes: Sequence[str],
                replicas: int) -> list[str]:
    cluster.start_nodes(*nodes, replicas=replicas)
    cluster.start_routers(2)
    urls = cluster.router_urls
    await wait_healthy(http, urls, live=len(nodes))
    await wait_caught_up(cluster, nodes)
    return urls


def names(prefix: str) -> list[str]:
    tag = os.urandom(3).hex()
    return [f"{prefix}-hot-{tag}"] + [f"{prefix}{i}-{tag}" for i in range(15)]


async def home(cluster: Cluster, http: aiohttp.ClientSession, url: str, name: str) -> str:
    body = await get_json(http, f"{url}/Ledger/{name}")
    return cluster.node_by_pid(int(body["pid"]))


async def finish(load: OpLoad, http: aiohttp.ClientSession, url: str, change: str) -> None:
    """Stop the load, report its answers, and check them and the final state."""
    await load.stop()
    print(f"\n{change}: {load.summary()}")
    finals = await read_ledgers(http, url, load.names)
    check_ledger(load, finals)
    assert not load.ambiguous, (
        f"{len(load.ambiguous)} answers of uncertain outcome: "
        f"{list(load.ambiguous.values())[:5]}")
    assert not load.definite, (
        f"{len(load.definite)} failed answers: {list(load.definite.values())[:5]}")


@pytest.mark.parametrize("replicas", [2, 3])
async def test_a_node_joining_under_load(
    cluster: Cluster, http: aiohttp.ClientSession, replicas: int
) -> None:
    nodes = ["n1", "n2", "n3"]
    urls = await start(cluster, http, nodes, replicas)
    load = OpLoad(http, urls, names("join")).start()
    try:
        await load.until(OPS_PER_PHASE)
        cluster.start_node("n4", replicas=replicas)
        await wait_healthy(http, urls, live=4)
        await wait_caught_up(cluster, [*nodes, "n4"])
        await load.until(OPS_PER_PHASE)
    finally:
        await finish(load, http, urls[0], f"join, replicas {replicas}")


@pytest.mark.parametrize("replicas", [2, 3])
async def test_abode_remove_under_load(
    cluster: Cluster, http: aiohttp.ClientSession, replicas: int
) -> None:
    nodes = ["n1", "n2", "n3", "n4"]
    urls = await start(cluster, http, nodes, replicas)
    load = OpLoad(http, urls, names("remove")).start()
    try:
        await load.until(OPS_PER_PHASE)
        # The hot object's home leaves: the change its clients would feel most.
        victim = await home(cluster, http, urls[0], load.names[0])
        result = cluster.cli("remove", victim, "--etcd", cluster.etcd.url)
        assert result.returncode == 0, result.stdout + result.stderr
        assert cluster[victim].wait(timeout=30) == 0
        rest = [n for n in nodes if n != victim]
        await wait_healthy(http, urls, live=len(rest))
        await wait_caught_up(cluster, rest)
        await load.until(OPS_PER_PHASE)
    finally:
        await finish(load, http, urls[0], f"remove, replicas {replicas}")


@pytest.mark.parametrize("replicas", [2, 3])
async def test_a_rolling_restart_under_load(
    cluster: Cluster, http: aiohttp.ClientSession, replicas: int
) -> None:
    nodes = ["n1", "n2", "n3"]
    urls = await start(cluster, http, nodes, replicas)
    load = OpLoad(http, urls, names("roll")).start()
    try:
        await load.until(OPS_PER_PHASE)
        for node in nodes:
            cluster[node].send(signal.SIGTERM)
            assert cluster[node].wait(timeout=30) == 0
            await load.until(OPS_PER_PHASE // 5)  # the others serve meanwhile
            cluster.restart(node)
            await wait_healthy(http, urls, live=len(nodes))
            await wait_caught_up(cluster, nodes)
            await load.until(OPS_PER_PHASE // 2)
    finally:
        await finish(load, http, urls[0], f"rolling restart, replicas {replicas}")


async def test_an_old_owner_keeps_its_copies_of_what_it_handed_off(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    """With two copies, objects that move to a joining node keep their old owner as
    second copy: its data stays there after the handoff, so when the new home dies
    the old owner serves every acknowledged write."""
    nodes = ["n1", "n2", "n3"]
    urls = await start(cluster, http, nodes, 2)
    ring = Ring([Member(n, "") for n in [*nodes, "n4"]])
    tag = os.urandom(3).hex()
    moving = list(itertools.islice(
        (n for n in (f"kept{i}-{tag}" for i in itertools.count())
         if ring.owner(position_of(ids.id_from_name("Ledger", n).raw)) == "n4"), 6))
    for name in moving:
        for _ in range(3):
            async with http.post(f"{urls[0]}/Ledger/{name}") as resp:
                assert resp.status == 200, await resp.text()
    cluster.start_node("n4", replicas=2)
    await wait_caught_up(cluster, [*nodes, "n4"])

    async def handed_off() -> bool:
        return (await cluster.info("n4")).pending_ranges == 0

    await assert_eventually(handed_off, timeout=30, interval=0.1)
    for name in moving:
        assert await home(cluster, http, urls[0], name) == "n4", name
    cluster.kill("n4", signal.SIGKILL)
    await wait_healthy(http, urls, live=3, timeout=20)
    for name in moving:
        body = await get_json(http, f"{urls[1]}/Ledger/{name}")
        assert body["value"] == 3, (name, body)
        assert cluster.node_by_pid(int(body["pid"])) != "n4"
