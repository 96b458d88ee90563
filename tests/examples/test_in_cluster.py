"""The examples on a real cluster: etcd, three nodes (replicas 2), two routers.

The same guarantees as under ``abode dev``, now with requests for one object
arriving through different routers, and with a node killed.
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.etcd import EtcdProcess, start_etcd
from tests.cluster.harness import Cluster
from tests.examples.helpers import APP, call, edit_until_applied, rpc
from tests.harness import assert_eventually


def _start(base: Path) -> tuple[Cluster, EtcdProcess]:
    etcd = start_etcd(base)
    cluster = Cluster(base / "cluster", etcd, APP)
    cluster.start_nodes("n1", "n2", "n3", replicas=2)
    cluster.start_routers(2)
    return cluster, etcd


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster, etcd = _start(tmp_path_factory.mktemp("examples-cluster"))
    try:
        yield cluster
    finally:
        cluster.stop_all()
        etcd.stop()


async def test_tickets_never_oversell_through_two_routers(three, http):
    a, b = three.router_urls
    results = await asyncio.gather(
        *(call(http, "POST", f"{(a, b)[i % 2]}/Tickets/cluster-rush/buy") for i in range(300))
    )
    assert Counter(status for status, _ in results) == {200: 100, 409: 200}
    assert sorted(body["ticket"] for s, body in results if s == 200) == list(range(1, 101))
    assert await rpc(http, b, "Tickets/cluster-rush/remaining") == 0


async def test_document_clients_on_both_routers_converge(three, http):
    routers = three.router_urls

    async def client(k):
        url = f"{routers[k % 2]}/Document/cluster-doc"
        state = {"version": 0, "text": ""}
        for n in range(8):
            await edit_until_applied(
                http, url, f"c{k}", n,
                lambda text, t=f"[c{k}.{n}]": {"op": "insert", "pos": 0, "text": t}, state,
            )

    await asyncio.gather(*(client(k) for k in range(6)))
    docs = [await call(http, "GET", f"{r}/Document/cluster-doc") for r in routers]
    assert docs[0] == docs[1]
    status, doc = docs[0]
    assert doc["version"] == 48
    assert sorted(doc["text"].replace("]", "]\n").split()) == sorted(
        f"[c{k}.{n}]" for k in range(6) for n in range(8))


async def test_rate_limit_window_closes_by_alarm_in_the_cluster(three, http):
    a, b = three.router_urls
    query = "limit=2&window=1"
    statuses = [(await call(http, "POST", f"{r}/RateLimiter/cl?{query}"))[0] for r in (a, b, a)]
    assert statuses == [200, 200, 429]

    async def reset():
        return (await call(http, "GET", f"{b}/RateLimiter/cl/status"))[1]["count"] == 0

    await assert_eventually(reset, timeout=10)
    assert await call(http, "POST", f"{b}/RateLimiter/cl?{query}") == (
        200, {"allowed": True, "remaining": 1})


async def test_cart_checkout_through_either_router(three, http):
    a, b = three.router_urls
    adds = [call(http, "POST", f"{(a, b)[i % 2]}/Cart/cl-ada/items", {"sku": f"s{i % 3}"})
            for i in range(30)]
    assert all(status == 200 for status, _ in await asyncio.gather(*adds))
    status, order = await call(http, "POST", f"{b}/Cart/cl-ada/checkout")
    assert (status, order["items"]) == (200, {"s0": 10, "s1": 10, "s2": 10})
    assert await call(http, "GET", f"{a}/Cart/cl-ada") == (200, {"items": {}, "count": 0})


async def test_a_sale_answered_with_an_error_sells_no_ticket_when_a_node_dies(tmp_path, http):
    # Runtime bug (node/_store.py, GroupCommitter._run): the local write and the
    # replica writes run in parallel; when a replica fails, the event is answered
    # 500 "could not be made durable; it was reset" but its local write stays, and
    # the reset object reads it back. Here: tickets sold to buyers who were told the
    # sale failed.
    cluster, etcd = _start(tmp_path)
    try:
        url = cluster.router_urls[0]
        events = [f"failover-{i}" for i in range(6)]  # n1 is home or replica of some
        for event in events:
            for n in range(1, 6):
                assert await call(http, "POST", f"{url}/Tickets/{event}/buy") == (
                    200, {"ticket": n})
        cluster.kill("n1", signal.SIGKILL)

        for event in events:
            errors: list[tuple[int, object]] = []

            async def sold(event: str = event, errors: list = errors) -> object:
                status, body = await call(http, "POST", f"{url}/Tickets/{event}/buy")
                if status != 200:
                    errors.append((status, body))
                    return None
                return body

            # Buyers retry until the sale goes through (while n1's lease runs out).
            body = await assert_eventually(sold, timeout=20, interval=0.1)
            # Every acknowledged sale survived, and no failed attempt sold a ticket:
            # the sale that succeeds is number 6 and the event has sold 6.
            _, state = await call(http, "GET", f"{url}/Tickets/{event}")
            assert (body, state["sold"]) == ({"ticket": 6}, 6), (event, errors)
    finally:
        cluster.stop_all()
        etcd.stop()
