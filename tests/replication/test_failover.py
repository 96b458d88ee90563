"""Failover with ``--replicas 2`` (DESIGN §3, "Durability across node loss").

Real etcd and real node/router processes; each test has its own (they SIGKILL nodes).
Load applies operations with unique ids to ``Ledger`` objects through two routers;
afterwards every object's state is compared with what each client was told.
"""

from __future__ import annotations

import os
import random
import signal
import time

import aiohttp
import pytest

from tests.cluster.harness import Cluster
from tests.harness import assert_eventually
from tests.replication.helpers import (
    OpLoad,
    check_ledger,
    get_json,
    read_ledgers,
    snapshot,
    wait_caught_up,
    wait_healthy,
)

pytestmark = pytest.mark.timeout(180)

NODES = ("n1", "n2", "n3")


async def start(cluster: Cluster, http: aiohttp.ClientSession, **flags: object) -> list[str]:
    cluster.start_nodes(*NODES, replicas=2, **flags)
    cluster.start_routers(2)
    urls = cluster.router_urls
    await wait_healthy(http, urls, live=3)
    await wait_caught_up(cluster, NODES)
    return urls


async def home(cluster: Cluster, http: aiohttp.ClientSession, url: str, path: str) -> str:
    body = await get_json(http, f"{url}{path}")
    return cluster.node_by_pid(int(body["pid"]))


async def test_sigkill_of_the_hot_objects_home_loses_no_acknowledged_operation(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    urls = await start(cluster, http)
    tag = os.urandom(3).hex()
    names = [f"hot-{tag}"] + [f"cold{i}-{tag}" for i in range(8)]
    victim = await home(cluster, http, urls[0], f"/Ledger/{names[0]}")
    load = OpLoad(http, urls, names).start()
    try:
        await load.until(300)
        killed_at = time.monotonic()
        cluster.kill(victim, signal.SIGKILL)
        # Bounded: the lease TTL, then a new home that already holds the object.
        await load.until(1, timeout=cluster.lease_ttl + 20)
        await assert_answered(load, names[0], killed_at, cluster.lease_ttl + 20)
        failover = load.first_ack_after(names[0], killed_at)
        assert failover is not None
        print(f"\nfailover of the hot object: {failover - killed_at:.2f} s after SIGKILL "
              f"of {victim} (lease TTL {cluster.lease_ttl:g} s)")
        await load.until(300)
    finally:
        await load.stop()
    print(load.summary())
    finals = await read_ledgers(http, urls[0], names)
    check_ledger(load, finals)
    new_home = await home(cluster, http, urls[1], f"/Ledger/{names[0]}")
    assert new_home != victim


async def assert_answered(load: OpLoad, name: str, since: float, timeout: float) -> None:
    await assert_eventually(lambda: load.first_ack_after(name, since) is not None,
                            timeout=timeout, interval=0.05)


async def test_random_kills_and_restarts_under_load_keep_every_acknowledged_operation(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    urls = await start(cluster, http)
    seed = int(os.environ.get("ABODE_TEST_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    print(f"\nseed {seed} (ABODE_TEST_SEED reruns it)")
    tag = os.urandom(3).hex()
    names = [f"hot-{tag}"] + [f"obj{i}-{tag}" for i in range(12)]
    load = OpLoad(http, urls, names).start()
    try:
        await load.until(200)
        for cycle in range(10):
            victim = rng.choice(NODES)
            down = rng.uniform(0.2, 3.0)
            t0 = time.monotonic()
            cluster.kill(victim, signal.SIGKILL)
            await load.until(1, timeout=cluster.lease_ttl + 20)  # the others keep serving
            while time.monotonic() - t0 < down:
                await load.until(1, timeout=cluster.lease_ttl + 20)
            cluster.restart(victim)
            caught_up = await wait_caught_up(cluster, NODES, timeout=60)
            await load.until(50)
            print(f"cycle {cycle}: killed {victim}, down {time.monotonic() - t0:.1f} s, "
                  f"caught up in {caught_up:.1f} s; {load.summary()}")
    finally:
        await load.stop()
    finals = await read_ledgers(http, urls[0], names)
    print(load.summary())
    check_ledger(load, finals)


async def test_a_restarted_node_catches_up_and_is_home_again_with_every_write(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    urls = await start(cluster, http)
    tag = os.urandom(3).hex()
    names = [f"back{i}-{tag}" for i in range(20)]
    homes = {n: await home(cluster, http, urls[0], f"/Ledger/{n}") for n in names}
    victim = homes[names[0]]
    mine = [n for n in names if homes[n] == victim]
    load = OpLoad(http, urls, mine + [n for n in names if n not in mine]).start()
    try:
        await load.until(100)
        cluster.kill(victim, signal.SIGKILL)
        before = load.ok
        await load.until(200, timeout=cluster.lease_ttl + 30)  # written while it is down
        written_down = {op for op, (n, _, _) in list(load.acked.items())[before:] if n in mine}
        assert written_down
        cluster.restart(victim)
        # Its live key waits on every peer at first, then empties once it has pulled.
        snap = await snapshot(cluster)
        waiting = snap.live[victim].waiting if victim in snap.live else None
        print(f"\n{victim} restarted; waiting on {sorted(waiting or ())}")
        await wait_caught_up(cluster, NODES)
        assert "caught up from" in cluster.logs(victim)

        async def home_again() -> bool:
            found = {n: await home(cluster, http, urls[1], f"/Ledger/{n}") for n in mine}
            assert set(found.values()) == {victim}, found
            return True

        await assert_eventually(home_again, timeout=15, interval=0.1)
        await load.until(100)
    finally:
        await load.stop()
    finals = await read_ledgers(http, urls[0], names)
    check_ledger(load, finals)
    assert all(op in finals[load.acked[op][0]]["ops"] for op in written_down)
