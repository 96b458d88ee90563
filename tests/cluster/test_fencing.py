"""Self-fencing: a node cut off from etcd stops executing before its lease can expire,
and no object ever runs on two nodes at once (DESIGN §3).

Either etcd is frozen with SIGSTOP (every node is cut off: connections stay open but
nothing answers), or one node reaches etcd through an `EtcdProxy` that freezes only
its connections, while the others fail its objects over (two replicas). `Recorder`
objects log each event's start and end per process, so a test can check afterwards
that executions of one object never overlapped.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator

import aiohttp
import pytest

from abode.cluster import ids
from abode.cluster.errors import Unavailable
from abode.cluster.ring import Member, Ring, position_of
from tests.cluster.harness import Cluster, EtcdProxy, overlaps, record_lines
from tests.cluster.load import CounterLoad, get_json, wait_healthy
from tests.harness import assert_eventually

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


def _starts(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("start ")]


async def _assert_counts(http: aiohttp.ClientSession, url: str, load: CounterLoad) -> None:
    """Every acknowledged increment is there; a failed call may have counted (it is
    not acknowledged, so either way is allowed), a 503 never did."""
    for name, values in load.acked.items():
        failed = sum(f" {name}: " in e for e in load.errors)
        value = int((await get_json(http, "POST", f"{url}/Recorder/{name}"))["value"])  # type: ignore[call-overload]
        assert len(values) + 1 <= value <= len(values) + 1 + failed, (name, value, len(values))


def _starts_of(lines: list[str], pid: int) -> list[str]:
    return [line for line in _starts(lines) if line.split()[2] == str(pid)]


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
    await _assert_counts(http, urls[0], load)


async def test_a_partitioned_home_stops_before_its_replica_takes_over(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    """Only n1 loses etcd (a proxy freezes its connection). With two replicas its
    objects fail over to their second node once its lease expires; n1 must have
    stopped executing by then, so no object ever runs on two nodes at once."""
    proxy = EtcdProxy(cluster.etcd.client_port)
    try:
        cluster.start_node("n1", replicas=2, etcd_url=proxy.url)
        cluster.start_nodes("n2", "n3", replicas=2)
        cluster.start_routers(2)
        urls = cluster.router_urls
        await wait_healthy(http, urls, live=3)
        tag = os.urandom(3).hex()
        ring = Ring([Member(c.name, "") for c in cluster.nodes])
        mine, others = [], []
        for i in itertools.count():
            name = f"part{i}-{tag}"
            owner = ring.owner(position_of(ids.id_from_name("Recorder", name).raw))
            (mine if owner == "n1" else others).append(name)
            if len(mine) >= 7 and len(others) >= 6:
                break
        probe, names = mine[0], mine[1:] + others[:6]
        n1_pid = cluster["n1"].info["pid"]

        load = CounterLoad(http, urls, names, namespace="Recorder", workers=6).start()
        try:
            await load.until(100)
            proxy.cut()
            try:
                env, peer = cluster.direct_env("n1")
                try:
                    async def refused() -> bool:
                        try:
                            await env.Recorder.get_by_name(probe).fetch("/", method="POST")
                        except Unavailable as exc:
                            return "fenced" in str(exc)
                        return False

                    await assert_eventually(refused, timeout=cluster.lease_ttl + 5, interval=0.1)
                finally:
                    await peer.close()
                fenced_at = len(_starts_of(record_lines(cluster.records), n1_pid))
                # etcd expires n1's lease; the others fail its objects over and serve on.
                await wait_healthy(http, urls, live=2, timeout=20)
                await load.until(100, timeout=30)
                during = _starts_of(record_lines(cluster.records), n1_pid)[fenced_at:]
                assert not during, f"n1 executed while cut off: {during[:5]}"
            finally:
                proxy.heal()
            await wait_healthy(http, urls, live=3, timeout=30)
            healed_at = len(_starts_of(record_lines(cluster.records), n1_pid))
            # n1 catches up and is home again for its objects.
            await load.until(100, timeout=30)
            await assert_eventually(
                lambda: len(_starts_of(record_lines(cluster.records), n1_pid)) > healed_at,
                timeout=30)
        finally:
            await load.stop()
    finally:
        proxy.close()

    lines = record_lines(cluster.records)
    assert not overlaps(lines), overlaps(lines)[:5]
    # Besides 503s, an event may fail to commit: on n1 when it fences itself, or on
    # the interim home when n1 takes its objects back (its replica write is refused).
    # Such a call acknowledges nothing; no other kind of error may show.
    unexpected = [e for e in load.errors if not e.startswith(("500 ", "502 "))]
    assert not unexpected, unexpected[:10]
    load.assert_acked_unique()
    # n1's objects really moved while it was cut off.
    moved = {ids.id_from_name("Recorder", n).hex for n in mine}
    assert {line.split()[2] for line in _starts(lines) if line.split()[1] in moved} - {
        str(n1_pid)}
    await _assert_counts(http, urls[0], load)


async def test_events_queued_before_a_node_fenced_itself_do_not_run_after(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    """A hot object on n1 has a deep mailbox when n1 is cut off from etcd. n1 must
    not work through that queue after it fenced itself: by then the object's second
    node may be home (its lease expires), and the object would run twice at once.
    The queued calls are refused instead (503: never ran) and retried elsewhere."""
    proxy = EtcdProxy(cluster.etcd.client_port)
    try:
        cluster.start_node("n1", replicas=2, etcd_url=proxy.url)
        cluster.start_nodes("n2", "n3", replicas=2)
        cluster.start_router()
        url = cluster.router_urls[0]
        await wait_healthy(http, [url], live=3)
        ring = Ring([Member(c.name, "") for c in cluster.nodes])
        tag = os.urandom(3).hex()
        name = next(n for n in (f"hot{i}-{tag}" for i in itertools.count())
                    if ring.owner(position_of(ids.id_from_name("Recorder", n).raw)) == "n1")
        n1_pid = cluster["n1"].info["pid"]

        async def slow_post() -> int:
            async with http.post(f"{url}/Recorder/{name}", params={"sleep": "0.3"}) as resp:
                return resp.status

        # About 5 s of work queued on n1, well past the lease TTL.
        first = [asyncio.create_task(slow_post()) for _ in range(16)]
        await assert_eventually(
            lambda: _starts_of(record_lines(cluster.records), n1_pid), timeout=10)
        proxy.cut()
        try:
            await wait_healthy(http, [url], live=2, timeout=20)
            # The object's second node is home now: a second wave goes there.
            second = [asyncio.create_task(slow_post()) for _ in range(3)]
            statuses = await asyncio.gather(*first, *second)
        finally:
            proxy.heal()
    finally:
        proxy.close()
    lines = record_lines(cluster.records)
    assert not overlaps(lines), overlaps(lines)[:3]
    assert set(statuses) <= {200, 503, 500, 502}, statuses
    assert statuses.count(200) >= 3
