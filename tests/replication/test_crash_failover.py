"""Crash failover faster than a lease (DESIGN §3, "Changes under load"; cluster.crashes).

A SIGKILLed node's port refuses connections at once, so the routers and peers whose
streams to it break revoke its lease and its objects fail over well within the TTL.
A SIGSTOPped node still accepts connections (its kernel does), so nobody revokes its
lease: it lapses after the TTL, as for a partition.

Real etcd and real node/router processes, with the default lease TTL of 3 s.
"""

from __future__ import annotations

import os
import re
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
TTL = 3.0  # the default: what users run with


@pytest.fixture
def lease_ttl() -> float:
    return TTL


async def start(cluster: Cluster, http: aiohttp.ClientSession) -> list[str]:
    cluster.start_nodes(*NODES, replicas=2)
    cluster.start_routers(2)
    urls = cluster.router_urls
    await wait_healthy(http, urls, live=3)
    await wait_caught_up(cluster, NODES)
    return urls


async def home(cluster: Cluster, http: aiohttp.ClientSession, url: str, path: str) -> str:
    body = await get_json(http, f"{url}{path}")
    return cluster.node_by_pid(int(body["pid"]))


def revocations(cluster: Cluster, victim: str) -> list[str]:
    """Log lines of every other process that revoked `victim`'s lease."""
    pattern = re.compile(rf"node {victim} at \S+ refuses connections: revoked its lease")
    return [f"{child.name}: {line.strip()}" for child in cluster.children.values()
            if child.name != victim for line in child.logs().splitlines()
            if pattern.search(line)]


async def test_a_killed_home_fails_over_within_a_fraction_of_its_lease(
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
        # A peer proved the crash and ended the lease: the TTL was not waited out.
        found = await assert_eventually(lambda: revocations(cluster, victim), timeout=TTL + 10)
        print(f"\n{found[0]}")
        await assert_eventually(lambda: load.first_ack_after(names[0], killed_at) is not None,
                                timeout=TTL + 20, interval=0.05)
        failover = load.first_ack_after(names[0], killed_at)
        assert failover is not None
        print(f"failover of the hot object: {failover - killed_at:.2f} s after SIGKILL of "
              f"{victim} (lease TTL {TTL:g} s)")
        snap = await snapshot(cluster)
        assert victim not in snap.live
        await load.until(300)
    finally:
        await load.stop()
    print(load.summary())
    check_ledger(load, await read_ledgers(http, urls[0], names))
    assert await home(cluster, http, urls[1], f"/Ledger/{names[0]}") != victim

    # Back with a new lease (the revoked one stays revoked), it is home again.
    cluster.restart(victim)
    await wait_caught_up(cluster, NODES, timeout=60)
    assert len(revocations(cluster, victim)) >= 1


async def test_a_paused_node_is_not_revoked_its_lease_lapses(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    urls = await start(cluster, http)
    tag = os.urandom(3).hex()
    names = [f"hot-{tag}"] + [f"cold{i}-{tag}" for i in range(8)]
    victim = await home(cluster, http, urls[0], f"/Ledger/{names[0]}")
    load = OpLoad(http, urls, names).start()
    try:
        await load.until(200)
        paused_at = time.monotonic()
        cluster[victim].send(signal.SIGSTOP)
        try:
            async def lapsed() -> bool:
                return victim not in (await snapshot(cluster)).live

            await assert_eventually(lapsed, timeout=TTL + 10, interval=0.1)
            gone = time.monotonic() - paused_at
            print(f"\n{victim}'s lease lapsed {gone:.2f} s after SIGSTOP (TTL {TTL:g} s)")
            # Not proof of a crash (the port still accepts): the lease ran its course.
            assert not revocations(cluster, victim)
        finally:
            # At once: with a replica write in flight, a pause longer than the replica
            # timeout (5 s) still wedges the node's group commit on resume (issue 9's
            # first item, cluster/peer.py), which is not what this test is about.
            cluster[victim].send(signal.SIGCONT)
        await wait_caught_up(cluster, NODES, timeout=60)
        await load.until(100)
    finally:
        await load.stop()
    print(load.summary())
    check_ledger(load, await read_ledgers(http, urls[0], names))
    assert not revocations(cluster, victim)
