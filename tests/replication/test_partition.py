"""Partition safety (DESIGN §3, "Membership, liveness, one live home"): a node cut off
from etcd and its peers while it keeps running fences itself, the others take over
its objects, and after the link heals nothing written on either side is lost or
applied twice.

Node n3 runs in a network namespace of its own (tests/replication/netns.py); etcd,
n1, n2 and the routers run on the host. Needs root for ``ip netns``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.cluster.harness import Cluster
from tests.harness import assert_eventually
from tests.replication import netns
from tests.replication.helpers import (
    OpLoad,
    check_ledger,
    get_json,
    read_ledgers,
    wait_caught_up,
    wait_healthy,
)

pytestmark = pytest.mark.timeout(180)

NODES = ("n1", "n2", "n3")

# Calls n3 directly over its gRPC stream from inside its namespace (the way a router
# that still believes it is home would reach it) and prints each outcome.
DIRECT = """
import asyncio, json, sys
from abode.cluster.env import Env
from abode.cluster.peer import PeerClient

async def main(address, pairs):
    peer = PeerClient(address)
    env = Env(["Ledger"], peer, call_timeout=5.0)
    out = {}
    for name, op in json.loads(pairs):
        try:
            resp = await env.Ledger.get_by_name(name).fetch(f"/?op={op}", method="POST")
            out[op] = f"{resp.status} {resp.body[:200]!r}"
        except Exception as exc:
            out[op] = f"{type(exc).__name__}: {exc}"
    await peer.close()
    print(json.dumps(out))

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


@pytest.fixture
def split_cluster(
    tmp_path: Path, net: netns.Netns, request: pytest.FixtureRequest
) -> Iterator[Cluster]:
    etcd = netns.start_etcd(tmp_path, net.host_ip)
    handle = Cluster(tmp_path / "cluster", etcd, "tests.apps.replication_app")
    try:
        yield handle
    finally:
        net.heal()  # so a child in the namespace can leave cleanly
        handle.stop_all()
        etcd.stop()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(f"\n{handle.all_logs(tail=12000)}")


async def test_a_cut_off_node_fences_itself_and_nothing_is_lost_after_healing(
    split_cluster: Cluster, net: netns.Netns, http: aiohttp.ClientSession
) -> None:
    cluster = split_cluster
    n3 = netns.add_ns_node(cluster, net, "n3", replicas=2)
    n3.launch()
    cluster.start_nodes("n1", "n2", replicas=2, listen=f"{net.host_ip}:0")
    n3.wait_ready(time.monotonic() + 60)
    cluster.start_routers(2)
    urls = cluster.router_urls
    await wait_healthy(http, urls, live=3)
    await wait_caught_up(cluster, NODES)

    tag = os.urandom(3).hex()
    homes: dict[str, str] = {}
    for i in range(24):
        name = f"p{i}-{tag}"
        homes[name] = cluster.node_by_pid(int((await get_json(
            http, f"{urls[0]}/Ledger/{name}"))["pid"]))
    cut_off = [n for n, h in homes.items() if h == "n3"]
    assert cut_off, homes
    load = OpLoad(http, urls, cut_off + [n for n in homes if n not in cut_off]).start()
    try:
        await load.until(200)
        cut_at = time.monotonic()
        net.cut()
        # The majority takes n3's objects over once n3's lease lapses in etcd.
        await assert_eventually(lambda: load.first_ack_after(cut_off[0], cut_at),
                                timeout=cluster.lease_ttl + 30, interval=0.05)
        took_over = load.first_ack_after(cut_off[0], cut_at)
        assert took_over is not None
        print(f"\nmajority serves n3's objects {took_over - cut_at:.1f} s after the cut")
        # n3 still runs, and refuses to execute what reaches it.
        assert n3.running
        direct = [(name, f"direct-{tag}-{k}") for k, name in enumerate(cut_off * 2)]
        outcomes = json.loads(netns.run_in(
            net, DIRECT, n3.ns_local, json.dumps(direct)).strip().splitlines()[-1])
        print(f"calls straight to n3 while cut off: {sorted(set(outcomes.values()))}")
        assert all(o.startswith("Unavailable") and "fenced" in o for o in outcomes.values()), \
            outcomes
        await load.until(100)  # the majority keeps writing while n3 is cut off
        net.heal()
        healed_at = time.monotonic()
        await wait_caught_up(cluster, NODES, timeout=90)
        print(f"n3 live and caught up again {time.monotonic() - healed_at:.1f} s after healing")
        assert "lease lost" in cluster.logs("n3")

        async def home_again() -> bool:
            body = await get_json(http, f"{urls[1]}/Ledger/{cut_off[0]}")
            return cluster.node_by_pid(int(body["pid"])) == "n3"

        await assert_eventually(home_again, timeout=30, interval=0.2)
        await load.until(100)
    finally:
        await load.stop()
    print(load.summary())
    finals = await read_ledgers(http, urls[0], list(homes))
    check_ledger(load, finals)
    applied = {op for final in finals.values() for op in final["ops"]}
    assert not applied & {op for _, op in direct}, "a fenced node executed a call"
