"""Every process's /metrics moves when its event happens: ``abode dev --metrics-port 0``
(node and router families from one process), scraped over HTTP (DESIGN §4, §6)."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from tests.harness import assert_eventually
from tests.metrics.helpers import APP, Scrape, call, scrape

pytestmark = pytest.mark.timeout(90)

IDLE = 1.0  # --idle-timeout: objects go idle quickly, so evictions happen in the test
FLAGS = ("--metrics-port", "0", "--idle-timeout", str(IDLE), "--storage-scan-interval", "0.2",
         "--alarm-retry-base", "0.2")


@pytest.fixture
def dev(dev_factory):
    return dev_factory(APP, *FLAGS)


async def _metrics(http: aiohttp.ClientSession, dev) -> Scrape:
    return await scrape(http, dev.info["metrics_port"])


async def test_ready_file_and_families(dev, http):
    assert dev.info["metrics_port"] > 0
    m = await _metrics(http, dev)
    node = {n for n in m.families if n.startswith("abode_node_")}
    router = {n for n in m.families if n.startswith("abode_router_")}
    assert {"abode_node_events", "abode_node_event_wait_seconds", "abode_node_activations",
            "abode_node_activation_duration_seconds", "abode_node_active_objects",
            "abode_node_evictions", "abode_node_object_active_seconds",
            "abode_node_storage_bytes", "abode_node_storage_keys",
            "abode_node_commit_duration_seconds", "abode_node_commit_group_size",
            "abode_node_alarms_fired", "abode_node_alarms_retried", "abode_node_alarms_failed",
            "abode_node_websockets_open", "abode_node_websockets_hibernated",
            "abode_node_commits_fenced", "abode_node_forwards"} <= node
    assert {"abode_router_requests", "abode_router_request_duration_seconds",
            "abode_router_retries", "abode_router_node_calls", "abode_router_ring_members",
            "abode_router_ring_revision", "abode_router_websockets_open"} <= router
    # Every family of ours is named abode_*; the rest are the standard process_* ones.
    assert all(n.startswith(("abode_", "process_")) for n in m.families), sorted(m.families)
    assert m.families["abode_node_event_wait_seconds"] == "histogram"
    assert m.families["abode_node_events"] == "counter"
    # Namespaces of the app are present at zero before anything happens.
    assert m.has("abode_node_events_total", namespace="Meter", kind="fetch")
    assert m.value("abode_node_events_total", namespace="Meter") == 0
    assert m.value("abode_router_ring_members") == 1


async def test_request_activation_eviction_and_storage(dev, http):
    base = f"{dev.url}/Meter/obj-a"
    status, _ = await call(http, "POST", f"{base}/put?keys=3&size=100")
    assert status == 200
    m = await _metrics(http, dev)
    # Router: one request of namespace Meter answered 200, with a latency observation.
    assert m.value("abode_router_requests_total", namespace="Meter", status="200") == 1
    assert m.value("abode_router_request_duration_seconds_count", namespace="Meter") == 1
    assert m.value("abode_router_node_calls_total") == 1
    # Node: one fetch event, after a cold start, with its wait time observed.
    assert m.value("abode_node_events_total", namespace="Meter", kind="fetch") == 1
    assert m.value("abode_node_event_wait_seconds_count", namespace="Meter") == 1
    assert m.value("abode_node_activations_total", namespace="Meter") == 1
    assert m.value("abode_node_activation_duration_seconds_count") == 1
    assert m.value("abode_node_commits_total") >= 1
    assert m.value("abode_node_commit_batches_total") >= 1
    assert m.value("abode_node_commit_duration_seconds_count") >= 1
    assert m.value("abode_node_commit_group_size_bucket", le="+Inf") >= 1
    # In memory now, unless a stalled machine already let it idle out: either way the
    # gauge agrees with the counters (no timing assumed).
    assert m.value("abode_node_active_objects", namespace="Meter") == 1 - m.value(
        "abode_node_evictions_total", namespace="Meter")

    # A second request to the same object is no cold start (unless it was evicted).
    await call(http, "POST", f"{base}/put?keys=3&size=100")
    m = await _metrics(http, dev)
    assert m.value("abode_node_events_total", namespace="Meter", kind="fetch") == 2
    assert m.value("abode_node_activations_total", namespace="Meter") == 1 + m.value(
        "abode_node_evictions_total", namespace="Meter")

    # Stored bytes: 3 user keys of 5 bytes ("k0000") plus 100-char strings (msgpack adds
    # a 2-byte header for 32..255 bytes), from the background storage walk.
    async def stored() -> Scrape | None:
        s = await _metrics(http, dev)
        return s if s.value("abode_node_storage_keys", namespace="Meter") == 3 else None

    m = await assert_eventually(stored, timeout=15)
    assert m.value("abode_node_storage_bytes", namespace="Meter", role="home") == 3 * (5 + 102)
    assert m.value("abode_node_storage_objects", namespace="Meter") == 1
    assert m.value("abode_node_storage_scan_timestamp_seconds") > 0

    # Idle past the timeout: evicted; its time in memory is now counted as closed.
    async def evicted() -> Scrape | None:
        s = await _metrics(http, dev)
        return s if s.value("abode_node_active_objects", namespace="Meter") == 0 else None

    m = await assert_eventually(evicted, timeout=20)
    evictions = m.value("abode_node_evictions_total", namespace="Meter")
    assert evictions >= 1
    assert m.value("abode_node_activations_total", namespace="Meter") == evictions
    active = m.value("abode_node_object_active_seconds_total", namespace="Meter")
    assert active > 0
    # Nothing in memory: the counter stands still between scrapes.
    again = await _metrics(http, dev)
    assert again.value("abode_node_object_active_seconds_total", namespace="Meter") == active
    # The next request is a cold start again.
    await call(http, "POST", f"{base}/put")
    m = await _metrics(http, dev)
    assert m.value("abode_node_activations_total", namespace="Meter") == evictions + 1


async def test_errors_rpc_and_statuses(dev, http):
    status, body = await call(http, "GET", f"{dev.url}/Meter/obj-b/boom")
    assert status == 500, body
    status, body = await call(http, "GET", f"{dev.url}/Caller/c1/call?target=obj-b")
    assert (status, body) == (200, {"answer": "pong"})
    status, _ = await call(http, "GET", f"{dev.url}/Nope/x")
    assert status == 404
    status, _ = await call(http, "GET", f"{dev.url}/Meter/obj-b2/abort")
    assert status == 500
    m = await _metrics(http, dev)
    # ctx.abort() drops the instance: a reset, not an eviction.
    assert m.value("abode_node_object_resets_total", namespace="Meter") == 1
    assert m.value("abode_node_event_errors_total", namespace="Meter", kind="fetch") == 2
    assert m.value("abode_node_events_total", namespace="Meter", kind="rpc") == 1
    assert m.value("abode_node_events_total", namespace="Caller", kind="fetch") == 1
    assert m.value("abode_router_requests_total", namespace="Meter", status="500") == 2
    assert m.value("abode_router_requests_total", namespace="Caller", status="200") == 1
    # An unknown first segment is not a label value of its own (bounded cardinality).
    assert m.value("abode_router_requests_total", namespace="_other", status="404") == 1
    assert not m.has("abode_router_requests_total", namespace="Nope")


async def test_alarms_fired_and_retried(dev, http):
    status, _ = await call(http, "POST", f"{dev.url}/Meter/obj-c/alarm?in_ms=0")
    assert status == 200

    async def fired() -> Scrape | None:
        s = await _metrics(http, dev)
        return s if s.value("abode_node_events_total", namespace="Meter", kind="alarm") >= 1 else None

    m = await assert_eventually(fired, timeout=15)
    assert m.value("abode_node_alarms_fired_total") >= 1
    assert (await call(http, "GET", f"{dev.url}/Meter/obj-c/state"))[1] == {"runs": 1}

    # An alarm whose handler raises is retried (first retry after --alarm-retry-base).
    status, _ = await call(http, "POST", f"{dev.url}/Meter/obj-d/alarm?in_ms=0&fail=1")
    assert status == 200

    async def retried() -> Scrape | None:
        s = await _metrics(http, dev)
        return s if s.value("abode_node_alarms_retried_total") >= 2 else None

    m = await assert_eventually(retried, timeout=20)
    assert m.value("abode_node_event_errors_total", namespace="Meter", kind="alarm") >= 2
    assert m.value("abode_node_alarms_fired_total") >= 3
    # An alarm far in the future is pending (and obj-d's, until its retries run out).
    await call(http, "POST", f"{dev.url}/Meter/obj-g/alarm?in_ms=600000")

    async def pending() -> bool:
        return (await _metrics(http, dev)).value("abode_node_alarms_pending") >= 1

    await assert_eventually(pending, timeout=10)


async def test_websockets_open_hibernated_and_closed(dev, http):
    ws_url = dev.url.replace("http://", "ws://") + "/Meter/obj-e/ws"
    async with http.ws_connect(ws_url) as ws:
        await ws.send_str("hello")
        msg = await ws.receive(timeout=10)
        assert msg.data == "hello"
        m = await _metrics(http, dev)
        assert m.value("abode_router_requests_total", namespace="Meter", status="101") == 1
        assert m.value("abode_router_websockets_open") == 1
        assert m.value("abode_node_websockets_open", namespace="Meter") == 1
        assert m.value("abode_node_events_total", namespace="Meter", kind="websocket") == 1
        # The object goes idle and is evicted while the socket stays open: hibernated.

        async def hibernated() -> Scrape | None:
            s = await _metrics(http, dev)
            return s if s.value("abode_node_websockets_hibernated", namespace="Meter") == 1 else None

        m = await assert_eventually(hibernated, timeout=20)
        assert m.value("abode_node_websockets_open", namespace="Meter") == 1
        # A message wakes it (a cold start with the socket still open).
        await ws.send_str("again")
        assert (await ws.receive(timeout=10)).data == "again"
        m = await _metrics(http, dev)
        assert m.value("abode_node_activations_total", namespace="Meter") == 2
    # Closed by the client: gone on both sides, and the close is an event (the third).

    async def closed() -> bool:
        s = await _metrics(http, dev)
        return (s.value("abode_node_websockets_open", namespace="Meter") == 0
                and s.value("abode_router_websockets_open") == 0
                and s.value("abode_node_events_total", namespace="Meter", kind="websocket") == 3)

    await assert_eventually(closed, timeout=15)


async def test_scrapes_do_not_disturb_requests(dev, http):
    # Scraping while requests run: both keep working, counts add up.
    async def requests() -> None:
        for i in range(20):
            status, _ = await call(http, "POST", f"{dev.url}/Meter/obj-f{i % 4}/put")
            assert status == 200

    async def scrapes() -> None:
        for _ in range(10):
            await _metrics(http, dev)

    await asyncio.gather(requests(), scrapes())
    m = await _metrics(http, dev)
    assert m.value("abode_node_events_total", namespace="Meter", kind="fetch") == 20
    assert m.value("abode_router_requests_total", namespace="Meter", status="200") == 20
    assert m.value("abode_node_event_wait_seconds_count", namespace="Meter") == 20
