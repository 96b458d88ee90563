"""``abode usage`` against real processes, and the pieces it is built from (DESIGN §6)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from prometheus_client import CollectorRegistry

from abode.cluster.cli.usage import parse_since, usage_url
from abode.cluster.metrics import Histogram
from abode.node._metrics import NodeMetrics, UsageLedger
from tests.harness import ROOT, assert_eventually
from tests.metrics.helpers import APP, call, scrape

pytestmark = pytest.mark.timeout(120)


def abode(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "abode", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False)


# -- pieces -------------------------------------------------------------------------------


def test_parse_since() -> None:
    now = 1_700_000_000.0
    assert parse_since(None, now) is None
    assert parse_since("", now) is None
    assert parse_since("90s", now) == now - 90
    assert parse_since("30m", now) == now - 1800
    assert parse_since("1h", now) == now - 3600
    assert parse_since("1.5h", now) == now - 5400
    assert parse_since("2d", now) == now - 2 * 86400
    assert parse_since("1w", now) == now - 7 * 86400
    assert parse_since("2023-11-14T22:00:00Z", now) == datetime(
        2023, 11, 14, 22, tzinfo=UTC).timestamp()
    assert parse_since("2023-11-14T23:00:00+01:00", now) == datetime(
        2023, 11, 14, 22, tzinfo=UTC).timestamp()
    naive = datetime(2023, 11, 14, 12, 0)  # local time, as the user reads their clock
    assert parse_since("2023-11-14T12:00:00", now) == naive.astimezone().timestamp()
    for bad in ["yesterday", "1y", "-1h", "2023-13-01"]:
        with pytest.raises(ValueError, match="--since"):
            parse_since(bad, now)
    with pytest.raises(ValueError, match="future"):
        parse_since("2099-01-01T00:00:00Z", now)


def test_usage_url() -> None:
    assert usage_url("http://h:1/metrics", None) == "http://h:1/usage"
    assert usage_url("http://h:1", None) == "http://h:1/usage"
    assert usage_url("h:1/", 12.5) == "http://h:1/usage?since=12.500"


def test_histogram_buckets_are_cumulative_le() -> None:
    h = Histogram((1.0, 2.0))
    for v in (0.5, 1.0, 1.5, 3.0):
        h.observe(v)
    assert h.buckets() == [("1.0", 2), ("2.0", 3), ("+Inf", 4)]
    assert h.count == 4 and h.total == 6.0


def test_usage_windows_start_at_a_snapshot() -> None:
    clock = [1000.0]
    m = NodeMetrics(CollectorRegistry(), usage_interval=60, clock=lambda: clock[0])
    m.events["A", "fetch"] = 5
    m.active_closed["A"] = 10.0
    clock[0] = 1060.0
    m.ledger.record(1060.0, m.usage_totals())
    m.events["A", "fetch"] = 8
    m.events["A", "alarm"] = 1
    m.active_closed["A"] = 25.0
    clock[0] = 1100.0
    # A window starting after the snapshot counts from the snapshot (at most a step early).
    recent = m.usage(since=1070.0)
    assert recent["from"] == 1060.0
    assert recent["namespaces"]["A"]["fetch"] == 3
    assert recent["namespaces"]["A"]["alarm"] == 1
    assert recent["namespaces"]["A"]["active_seconds"] == 15.0
    # Before the process started: everything since the start, and `from` says so.
    full = m.usage(since=500.0)
    assert full["from"] == full["started"] == 1000.0
    assert full["namespaces"]["A"]["fetch"] == 8
    assert m.usage()["namespaces"]["A"]["fetch"] == 8
    # Retention drops the oldest snapshots (the start baseline included) first.
    ledger = UsageLedger(0.0, interval=10, retention=20)
    for t in (10.0, 20.0, 30.0):
        ledger.record(t, {})
    assert [t for t, _ in ledger.snapshots] == [10.0, 20.0, 30.0]
    assert ledger.baseline(5.0)[0] == 10.0


# -- against abode dev ----------------------------------------------------------------------


async def test_usage_from_a_dev_process(dev_factory, http):
    dev = dev_factory(APP, "--metrics-port", "0", "--storage-scan-interval", "0.2")
    port = dev.info["metrics_port"]
    for i in range(3):
        assert (await call(http, "POST", f"{dev.url}/Meter/u{i}/put?keys=2&size=10"))[0] == 200
    assert (await call(http, "GET", f"{dev.url}/Caller/c/call?target=u0"))[0] == 200

    async def scanned() -> bool:
        m = await scrape(http, port)
        return m.value("abode_node_storage_keys", namespace="Meter") == 6

    await assert_eventually(scanned, timeout=15)
    url = f"http://127.0.0.1:{port}/metrics"
    result = abode("usage", "--url", url, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    meter = report["namespaces"]["Meter"]
    assert (meter["fetch"], meter["rpc"], meter["requests"]) == (3, 1, 4)
    assert report["namespaces"]["Caller"]["requests"] == 1
    assert meter["stored_keys"] == 6
    assert meter["stored_bytes"] == 6 * (5 + 11)  # "k0000" + msgpack of a 10-char str
    # GB-s = object-seconds x 128 MB / 1024; the objects are still in memory.
    assert meter["active_seconds"] > 0
    assert meter["gb_seconds"] == pytest.approx(meter["active_seconds"] * 128 / 1024)
    assert report["nodes"][0]["node_id"] == "dev" and report["missing"] == []
    # The same numbers as the Prometheus families (requests, storage).
    m = await scrape(http, port)
    assert m.value("abode_node_events_total", namespace="Meter", kind="fetch") == 3
    assert m.value("abode_node_storage_bytes", namespace="Meter", role="home") == 96
    assert m.value("abode_node_object_active_seconds_total", namespace="Meter") >= (
        meter["active_seconds"])

    # Text output, another memory size, and a window older than the process.
    result = abode("usage", "--url", url, "--since", "1h", "--memory-mb", "256")
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[2:]}
    assert rows["Meter"][1:6] == ["4", "3", "1", "0", "0"]
    assert rows["Meter"][8:10] == ["96", "6"]
    # GB-s (3 decimals) from object-seconds (1 decimal) x 256 / 1024.
    assert float(rows["Meter"][7]) == pytest.approx(float(rows["Meter"][6]) * 0.25, abs=0.02)
    assert rows["total"][1] == "5"
    assert "note: dev: counted only since" in result.stdout  # the process is younger

    # A window inside the process's life starts at its start snapshot (no minute yet).
    assert abode("usage", "--url", url, "--since", "1s").returncode == 0

    # Bad input and unreachable endpoints are reported, never silently summed.
    bad = abode("usage", "--url", url, "--since", "yesterday")
    assert bad.returncode == 2 and "--since" in bad.stderr
    assert abode("usage").returncode == 2
    partial = abode("usage", "--url", f"{url},http://127.0.0.1:1/metrics")
    assert partial.returncode == 1
    assert "missing: http://127.0.0.1:1/metrics" in partial.stdout


# -- against a cluster (etcd, node and router processes) ------------------------------------


async def test_cluster_metrics_and_usage_from_etcd(cluster, http):
    cluster.start_nodes("n1", "n2", metrics_port=0, storage_scan_interval=0.2)
    router = cluster.start_router(metrics_port=0)
    url = router.info["url"]
    for i in range(6):
        status, body = await call(http, "POST", f"{url}/Meter/c{i}/put?keys=1&size=10")
        assert status == 200, body

    # Each node publishes where its metrics are, in its Info reply.
    for name in ("n1", "n2"):
        info = await cluster.info(name)
        assert info.metrics_url == f"http://127.0.0.1:{cluster[name].info['metrics_port']}/metrics"

    # Node families of a cluster member: lease, ring, fencing, handoff.
    async def renewed(name: str) -> bool:
        m = await scrape(http, cluster[name].info["metrics_port"])
        return m.value("abode_node_lease_renewals_total") >= 1

    for name in ("n1", "n2"):
        await assert_eventually(lambda n=name: renewed(n), timeout=15)
        m = await scrape(http, cluster[name].info["metrics_port"])
        assert m.value("abode_node_info", node_id=name) == 1
        assert m.value("abode_node_ring_members") == 2
        assert m.value("abode_node_live_nodes") == 2
        assert m.value("abode_node_ring_revision") > 0
        assert m.value("abode_node_fenced") == 0
        assert m.value("abode_node_commits_fenced_total") == 0
        assert m.value("abode_node_lease_age_seconds") >= 0
        for family in ("abode_node_handoff_keys_pulled", "abode_node_handoff_keys_served",
                       "abode_node_handoff_ranges_pulled", "abode_node_handoff_ranges_served",
                       "abode_node_handoff_ranges_pending"):
            assert family in m.families
    # The events of the six objects are split between the nodes, each counted once.
    fetches = 0
    for name in ("n1", "n2"):
        m = await scrape(http, cluster[name].info["metrics_port"])
        fetches += m.value("abode_node_events_total", namespace="Meter", kind="fetch")
    assert fetches == 6

    r = await scrape(http, router.info["metrics_port"])
    assert r.value("abode_router_requests_total", namespace="Meter", status="200") == 6
    assert r.value("abode_router_ring_members") == 2
    assert r.value("abode_router_live_nodes") == 2
    assert r.value("abode_router_ring_revision") > 0
    assert r.value("abode_router_node_calls_total") == 6

    # abode usage finds the live nodes in etcd and sums them.
    async def stored() -> dict | None:
        result = abode("usage", "--etcd", cluster.etcd.url, "--json")
        assert result.returncode == 0, result.stdout + result.stderr
        report = json.loads(result.stdout)
        meter = report["namespaces"].get("Meter", {})
        return report if meter.get("stored_keys") == 6 else None

    report = await assert_eventually(stored, timeout=20, interval=0.5)
    assert sorted(n["node_id"] for n in report["nodes"]) == ["n1", "n2"]
    assert report["namespaces"]["Meter"]["fetch"] == 6
    assert report["namespaces"]["Meter"]["stored_bytes"] == 6 * (5 + 11)

    # A node that is down is named as missing, and the exit status says "partial"
    # (unreachable while its lease lasts, then not live).
    cluster.kill("n2")

    async def missing() -> str | None:
        result = abode("usage", "--etcd", cluster.etcd.url)
        return result.stdout if result.returncode == 1 else None

    out = await assert_eventually(missing, timeout=20, interval=0.5)
    assert "missing: n2: " in out
    assert "1 nodes" in out.splitlines()[0]
