"""``abode usage``: per-namespace requests, object GB-seconds and stored bytes.

Read from the nodes themselves: each live node (found in etcd, its metrics address
from its Info RPC) or each ``--url`` answers ``/usage`` on its metrics endpoint from
the same counters it exports to Prometheus. What the numbers are:

* requests: events delivered to objects (HTTP fetch, RPC call, alarm, WebSocket
  message/close/error), counted by the node that ran them.
* object GB-seconds: wall time objects spent in memory (idle time before eviction
  included, as Cloudflare bills duration) times ``--memory-mb`` / 1024.
* stored bytes and keys: the size *now* of user keys plus values, counted at each
  object's home (from the node's last storage walk, at most a minute old by default).

Nodes keep these counters since their process started, with a snapshot a minute for
the last 24 hours, in memory. ``--since`` therefore starts each node's window at its
newest snapshot at or before the time asked (up to a minute earlier), and a node that
started after ``--since`` (or restarted) counts only since its start: the output says
so. For long-term metering scrape ``/metrics`` with Prometheus and use ``increase()``.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import grpc

from abode.cluster.membership import EtcdSession
from abode.cluster.peer import CHANNEL_OPTIONS
from abode.cluster.rpc.v1 import node_pb2 as pb
from abode.cluster.rpc.v1 import node_pb2_grpc as pb_grpc

KINDS = ("fetch", "rpc", "alarm", "websocket")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
DEFAULT_MEMORY_MB = 128  # what Cloudflare bills per object, whatever it uses

HELP = """\
Per-namespace usage, summed over the cluster's live nodes (or the --url endpoints):
requests (fetch, RPC, alarm, WebSocket events), object GB-seconds (wall time objects
spent in memory x --memory-mb / 1024) and stored bytes (current size, at each
object's home). Nodes count since their process started and keep one snapshot a
minute for 24 h in memory: --since starts at the snapshot at or before it (up to a
minute early), and a node that started later counts only since its start (the
output says so). For long-term metering, scrape /metrics with Prometheus."""


def parse_since(text: str | None, now: float | None = None) -> float | None:
    """``1h``, ``30m``, ``2d``, ``90s``, ``1w`` ago, or an ISO 8601 time (no zone:
    local time); returns Unix seconds, or None for "since each node started"."""
    if text is None or not text.strip():
        return None
    now = time.time() if now is None else now
    match = _RELATIVE.match(text)
    if match:
        return now - float(match.group(1)) * _UNITS[match.group(2)]
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"--since {text!r}: expected a duration (90s, 30m, 1h, 2d, 1w) or an ISO 8601 "
            "time (2025-06-01T12:00:00Z)"
        ) from None
    if when.tzinfo is None:
        when = when.astimezone()  # local time, as the user reads their clock
    at = when.timestamp()
    if at > now:
        raise ValueError(f"--since {text!r} is in the future")
    return at


def usage_url(metrics: str, since: float | None) -> str:
    """``/usage`` beside a metrics endpoint (``http://h:p``, ``.../metrics`` or ``h:p``)."""
    base = metrics.strip()
    if "://" not in base:
        base = "http://" + base
    base = base.rstrip("/")
    if base.endswith("/metrics"):
        base = base[: -len("/metrics")]
    return base + "/usage" + (f"?since={since:.3f}" if since is not None else "")


@dataclass
class Report:
    since: float | None
    memory_mb: float
    nodes: list[dict[str, Any]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # "node: why"

    def totals(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for node in self.nodes:
            for ns, fields in node["namespaces"].items():
                row = out.setdefault(ns, {})
                for key, value in fields.items():
                    row[key] = row.get(key, 0) + value
        for row in out.values():
            for key in (*KINDS, "active_seconds", "stored_bytes", "stored_keys"):
                row.setdefault(key, 0)
            row["requests"] = sum(row[k] for k in KINDS)
            row["gb_seconds"] = row["active_seconds"] * self.memory_mb / 1024
        return dict(sorted(out.items()))

    def partial_windows(self) -> list[str]:
        """Nodes whose window starts later than asked (started later, or history ran out)."""
        notes = []
        for node in self.nodes:
            if self.since is not None and node["from"] > self.since + 1e-3:
                notes.append(f"{node['node_id'] or node['url']}: counted only since "
                             f"{_fmt(node['from'])} (process started {_fmt(node['started'])})")
        return notes

    def as_json(self) -> dict[str, Any]:
        return {"since": self.since, "memory_mb": self.memory_mb, "namespaces": self.totals(),
                "nodes": self.nodes, "missing": self.missing, "partial": self.partial_windows()}

    def render(self) -> str:
        if self.since is None:
            head = "usage since each node's process started"
        else:
            head = f"usage since {_fmt(self.since)}"
        lines = [f"{head}; {len(self.nodes)} nodes; object memory {self.memory_mb:g} MB"]
        cols = ("namespace", "requests", "fetch", "rpc", "alarm", "websocket",
                "object-s", "GB-s", "stored bytes", "keys")
        widths = (20, 10, 9, 9, 8, 10, 11, 11, 14, 9)
        lines.append("".join(c.ljust(w) if i == 0 else c.rjust(w)
                             for i, (c, w) in enumerate(zip(cols, widths, strict=True))))
        totals = self.totals()
        grand = {k: sum(r[k] for r in totals.values()) for k in
                 ("requests", *KINDS, "active_seconds", "gb_seconds", "stored_bytes",
                  "stored_keys")}
        for ns, row in [*totals.items(), ("total", grand)]:
            cells = [ns, f"{row['requests']:.0f}", *(f"{row[k]:.0f}" for k in KINDS),
                     f"{row['active_seconds']:.1f}", f"{row['gb_seconds']:.3f}",
                     f"{row['stored_bytes']:.0f}", f"{row['stored_keys']:.0f}"]
            lines.append("".join(c.ljust(w) if i == 0 else c.rjust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths, strict=True))))
        for note in self.partial_windows():
            lines.append(f"note: {note}")
        for miss in self.missing:
            lines.append(f"missing: {miss} (its usage is not included)")
        return "\n".join(lines)


def _fmt(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


async def _node_metrics_urls(etcd: str, cluster: str) -> tuple[list[tuple[str, str]], list[str]]:
    """(node id, metrics URL) of every live node, and the members we cannot read."""
    session = await EtcdSession.connect(etcd, cluster)
    try:
        snap = await session.snapshot()
    finally:
        await session.close()
    found: list[tuple[str, str]] = []
    missing = [f"{node_id}: not live" for node_id in snap.members if node_id not in snap.live]

    async def info(node_id: str, address: str) -> None:
        try:
            async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
                reply = await pb_grpc.NodeStub(channel).Info(pb.InfoRequest(), timeout=5.0)
        except grpc.aio.AioRpcError as exc:
            missing.append(f"{node_id}: Info RPC failed ({exc.code().name})")
            return
        if not reply.metrics_url:
            missing.append(f"{node_id}: started without --metrics-port")
        else:
            found.append((node_id, reply.metrics_url))

    await asyncio.gather(*(info(n, live.address) for n, live in sorted(snap.live.items())))
    return sorted(found), missing


async def collect(
    *, etcd: str | None, cluster: str, urls: list[str], since: float | None, memory_mb: float
) -> Report:
    report = Report(since, memory_mb)
    targets: list[tuple[str, str]] = [(u, u) for u in urls]
    if etcd:
        found, missing = await _node_metrics_urls(etcd, cluster)
        targets += found
        report.missing += missing
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as http:

        async def fetch(name: str, url: str) -> None:
            try:
                async with http.get(usage_url(url, since)) as resp:
                    resp.raise_for_status()
                    body = await resp.json()
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                report.missing.append(f"{name}: {url} unreachable ({type(exc).__name__})")
                return
            body["url"] = url
            report.nodes.append(body)

        await asyncio.gather(*(fetch(name, url) for name, url in targets))
    report.nodes.sort(key=lambda n: (n.get("node_id", ""), n["url"]))
    return report


async def usage(
    *, etcd: str | None, cluster: str, urls: list[str], since: str | None, memory_mb: float,
    as_json: bool = False,
) -> int:
    """Print the report; exit 1 if some node's usage could not be read (it is partial)."""
    if not etcd and not urls:
        print("abode usage: give --etcd URL (a cluster) or --url METRICS_URL", file=sys.stderr)
        return 2
    if memory_mb <= 0:
        print("abode usage: --memory-mb must be positive", file=sys.stderr)
        return 2
    try:
        at = parse_since(since)
    except ValueError as exc:
        print(f"abode usage: {exc}", file=sys.stderr)
        return 2
    report = await collect(etcd=etcd, cluster=cluster, urls=urls, since=at, memory_mb=memory_mb)
    print(json.dumps(report.as_json(), indent=2) if as_json else report.render(), flush=True)
    return 1 if report.missing else 0
