"""Self-fencing: a node cut off from etcd stops executing before its lease can expire,
and no object ever runs on two nodes at once (DESIGN §3).

etcd is frozen with SIGSTOP: every connection stays open but nothing answers, as in a
partition. `Recorder` objects log each event's start and end per process, so the
test can check afterwards that executions of one object never overlapped.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator

import aiohttp
import pytest

from cluster import ids
from cluster.errors import Unavailable
from cluster.ring import Member, Ring, position_of
from tests.cluster.harness import Cluster, overlaps, record_lines
from tests.cluster.load import CounterLoad, get_json, wait_healthy
from tests.harness import assert_eventually

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


def _starts(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("start ")]


async def test_a_node_cut_off_from_etcd_stops_executing_and_no_object_runs_twice(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    cluster.start_nodes("n1", "n2", "n3")
    cluster.start_routers(2)
    urls = cluster.router_urls
    await wait_healthy(http, urls, live=3)
    tag = os.urandom(3).hex()
    names = [f"rec{i}-{tag}" for i in range(12)]
    ring = Ring([Member(c.name, "") for c in cluster.nodes])
    probes: dict[str, str] = {}  # one probe object per node, owned by it
    for i in itertools.count():
        name = f"probe{i}-{tag}"
        probes.setdefault(ring.owner(position_of(ids.id_from_name("Recorder", name).raw)), name)
        if len(probes) == 3:
            break

    load = CounterLoad(http, urls, names, namespace="Recorder", workers=6).start()
    try:
        await load.until(100)
        cluster.etcd.pause()
        try:
            # Every node fences itself: a call straight to the home is refused (503).
            for node, name in probes.items():
                env, peer = cluster.direct_env(node)
                try:
                    async def refused() -> bool:
                        try:
                            await env.Recorder.get_by_name(name).fetch("/", method="POST")  # noqa: B023
                        except Unavailable as exc:
                            return "fenced" in str(exc)
                        return False

                    await assert_eventually(refused, timeout=cluster.lease_ttl + 5, interval=0.1)
                finally:
                    await peer.close()
            # From now until etcd answers again nothing may execute, although the
            # routers (whose views are frozen too) keep sending calls.
            fenced_at = len(_starts(record_lines(cluster.records)))
            refused_before = load.statuses[503]
            await assert_eventually(lambda: load.statuses[503] >= refused_before + 5, timeout=15)
            during = _starts(record_lines(cluster.records))[fenced_at:]
            assert not during, f"executed while fenced: {during[:5]}"
        finally:
            cluster.etcd.resume()
        await wait_healthy(http, urls, live=3, timeout=30)
        await load.until(100, timeout=30)
    finally:
        await load.stop()

    # An event that started just before its node fenced itself may have its commit
    # refused: a 500 that acknowledges nothing. Nothing else may go wrong.
    unexpected = [e for e in load.errors if "could not be made durable" not in e]
    assert not unexpected, unexpected[:10]
    load.assert_acked_unique()
    lines = record_lines(cluster.records)
    assert not overlaps(lines), overlaps(lines)[:5]
    for name, values in load.acked.items():
        body = await get_json(http, "POST", f"{urls[0]}/Recorder/{name}")
        assert body["value"] == len(values) + 1, name
