"""A replica that stops answering must not stop its homes' commits for good.

A replica paused (SIGSTOP) for longer than one replication attempt, while its lease
stays valid (a long TTL keeps it live in etcd), makes every home's attempt time out.
That timeout once ended the home's commit loop silently: no write of that node
committed again while it looked healthy. Here, after SIGCONT, every object on both
nodes answers and commits again within a bound, and nothing acknowledged is lost.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from abode.node._replication import REPLICA_TIMEOUT
from tests.cluster.etcd import EtcdProcess
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

pytestmark = pytest.mark.timeout(180)

NODES = ("n1", "n2")
# Long enough that the paused replica stays live in etcd for the whole pause: its
# homes keep waiting for it, and their attempts time out instead of skipping it.
LEASE_TTL = 30.0
PAUSE = REPLICA_TIMEOUT + 3.0
# After SIGCONT: one lease renewal, one replication retry, a request. Generous for a
# loaded 2-core machine; a dead commit loop never answers at all.
RECOVERY = 20.0


@pytest.fixture
def slow_lease_cluster(
    tmp_path: Path, etcd: EtcdProcess, request: pytest.FixtureRequest
) -> Iterator[Cluster]:
    handle = Cluster(tmp_path / "cluster", etcd, "tests.apps.replication_app",
                     lease_ttl=LEASE_TTL)
    try:
        yield handle
    finally:
        handle.stop_all()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(f"\n{handle.all_logs(tail=12000)}")


async def test_a_replica_paused_past_the_replica_timeout_does_not_stop_commits(
    slow_lease_cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    cluster = slow_lease_cluster
    cluster.start_nodes(*NODES, replicas=2)
    cluster.start_routers(1)
    urls = cluster.router_urls
    await wait_healthy(http, urls, live=2)
    await wait_caught_up(cluster, NODES)

    tag = os.urandom(3).hex()
    homes: dict[str, str] = {}
    for i in range(16):
        name = f"c{i}-{tag}"
        body = await get_json(http, f"{urls[0]}/Ledger/{name}")
        homes[name] = cluster.node_by_pid(int(body["pid"]))
    assert set(homes.values()) == set(NODES), homes  # both nodes are home to some

    load = OpLoad(http, urls, list(homes)).start()
    try:
        await load.until(200)
        cluster["n2"].send(signal.SIGSTOP)
        try:
            # The fault's duration, not a synchronisation: the load keeps running, so
            # n1's commits wait on n2 throughout.
            await asyncio.sleep(PAUSE)
        finally:
            cluster["n2"].send(signal.SIGCONT)
        resumed = time.monotonic()

        async def every_object_commits() -> bool:
            return all(load.first_ack_after(name, resumed) is not None for name in homes)

        await assert_eventually(every_object_commits, timeout=RECOVERY, interval=0.1)
        print(f"\nevery object committed again {time.monotonic() - resumed:.1f} s after "
              f"SIGCONT (paused {PAUSE:g} s)")
        await load.until(200, timeout=RECOVERY)
    finally:
        await load.stop()
    print(load.summary())
    assert not load.definite, list(load.definite.items())[:5]
    check_ledger(load, await read_ledgers(http, urls[0], list(homes)))
