"""Writes deploy/grafana/dashboards/abode.json: python deploy/grafana/build_dashboard.py

The dashboard is generated so its queries stay readable and consistent; a test
(tests/deploy) checks the JSON is fresh and that every metric it queries is one
abode's processes export. Metric families: docs/metrics.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).parent / "dashboards" / "abode.json"
# Families the dashboard queries that no process exports yet (named here for the
# metrics that will measure them): replica acknowledgement time per group commit,
# batches whose replication failed, peers a node is still catching up from.
ASSUMED_METRICS: frozenset[str] = frozenset()
DS = {"type": "prometheus", "uid": "prometheus"}
NS = 'namespace=~"$namespace"'
RATE = "$__rate_interval"

_panels: list[dict[str, Any]] = []
_y = 0


def _next_id() -> int:
    return len(_panels) + 1


def row(title: str) -> None:
    global _y
    _panels.append({"id": _next_id(), "type": "row", "title": title, "collapsed": False,
                    "gridPos": {"h": 1, "w": 24, "x": 0, "y": _y}, "panels": []})
    _y += 1


def _targets(queries: list[tuple[str, str]]) -> list[dict[str, Any]]:
    return [{"refId": chr(ord("A") + i), "datasource": DS, "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(queries)]


def panels(*specs: dict[str, Any], height: int = 8) -> None:
    """A row of panels of equal width."""
    global _y
    width = 24 // len(specs)
    for i, spec in enumerate(specs):
        spec["id"] = _next_id()
        spec["gridPos"] = {"h": height, "w": width, "x": i * width, "y": _y}
        _panels.append(spec)
    _y += height


def ts(title: str, unit: str, *queries: tuple[str, str], description: str = "",
       stack: bool = False) -> dict[str, Any]:
    return {
        "type": "timeseries", "title": title, "description": description, "datasource": DS,
        "targets": _targets(list(queries)),
        "fieldConfig": {"defaults": {"unit": unit, "custom": {
            "fillOpacity": 10, "lineWidth": 1, "showPoints": "never",
            "stacking": {"mode": "normal" if stack else "none", "group": "A"}}},
            "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
    }


def stat(title: str, unit: str, expr: str, description: str = "") -> dict[str, Any]:
    return {
        "type": "stat", "title": title, "description": description, "datasource": DS,
        "targets": _targets([(expr, "")]),
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "colorMode": "value", "graphMode": "area", "textMode": "auto"},
    }


def quantiles(metric: str, by: str = "", selector: str = "") -> list[tuple[str, str]]:
    sel = f"{{{selector}}}" if selector else ""
    group = f"le, {by}" if by else "le"
    legend = f"{{{{{by}}}}} p" if by else "p"
    return [
        (f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{sel}[{RATE}])))",
         f"{legend}{int(q * 100)}")
        for q in (0.5, 0.99)
    ]


def build() -> dict[str, Any]:
    _panels.clear()
    global _y
    _y = 0

    row("Overview")
    panels(
        stat("Live nodes", "none", "max(abode_router_live_nodes)",
             "Ring members with a live lease, as the routers see them."),
        stat("Ring members", "none", "max(abode_node_ring_members)"),
        stat("Requests/s", "reqps", f"sum(rate(abode_router_requests_total[{RATE}]))"),
        stat("5xx share", "percentunit",
             f'sum(rate(abode_router_requests_total{{status=~"5.."}}[{RATE}])) / '
             f"clamp_min(sum(rate(abode_router_requests_total[{RATE}])), 1e-9)"),
        stat("Active objects", "none", "sum(abode_node_active_objects)"),
        stat("Open WebSockets", "none", "sum(abode_router_websockets_open)"),
        height=4,
    )

    row("Requests")
    panels(
        ts("Requests by namespace", "reqps",
           (f"sum by (namespace) (rate(abode_router_requests_total{{{NS}}}[{RATE}]))",
            "{{namespace}}"),
           description="HTTP requests answered by the routers (first path segment)."),
        ts("Responses by status", "reqps",
           (f"sum by (status) (rate(abode_router_requests_total{{{NS}}}[{RATE}]))",
            "{{status}}"), stack=True),
        ts("Request latency (router)", "s",
           *quantiles("abode_router_request_duration_seconds", selector=NS),
           description="Arrival at the router to the response starting."),
    )
    panels(
        ts("Wait time before the handler", "s",
           *quantiles("abode_node_event_wait_seconds", selector=NS),
           description="Mailbox queueing plus, on a cold start, activation."),
        ts("Events by kind", "ops",
           (f"sum by (kind) (rate(abode_node_events_total{{{NS}}}[{RATE}]))", "{{kind}}"),
           stack=True),
        ts("Handler errors", "ops",
           (f"sum by (namespace, kind) (rate(abode_node_event_errors_total{{{NS}}}[{RATE}]))",
            "{{namespace}} {{kind}}"),
           description="Events whose handler raised (their writes were discarded)."),
    )

    row("Objects")
    panels(
        ts("Cold starts", "ops",
           (f"sum by (namespace) (rate(abode_node_activations_total{{{NS}}}[{RATE}]))",
            "{{namespace}}")),
        ts("Activation duration", "s", *quantiles("abode_node_activation_duration_seconds")),
        ts("Active objects per node", "none",
           ("sum by (instance) (abode_node_active_objects)", "{{instance}}"), stack=True),
        ts("Object-active seconds", "s",
           (f"sum by (namespace) (rate(abode_node_object_active_seconds_total{{{NS}}}[{RATE}]))",
            "{{namespace}}"),
           description="Seconds of objects in memory per second: what Cloudflare bills."),
    )

    row("WebSockets")
    panels(
        ts("Open WebSockets per router", "none",
           ("sum by (instance) (abode_router_websockets_open)", "{{instance}}")),
        ts("Open and hibernated (nodes)", "none",
           (f"sum by (namespace) (abode_node_websockets_open{{{NS}}})", "open {{namespace}}"),
           (f"sum by (namespace) (abode_node_websockets_hibernated{{{NS}}})",
            "hibernated {{namespace}}")),
        ts("Auto-responses", "ops",
           (f"sum(rate(abode_node_websocket_auto_responses_total[{RATE}]))", "auto-responses")),
    )

    row("Storage and alarms")
    panels(
        ts("Stored bytes", "bytes",
           (f"sum by (namespace) (abode_node_storage_bytes{{{NS}}})", "{{namespace}}"),
           description="User keys and values, from each node's periodic storage walk.",
           stack=True),
        ts("Commit latency", "s", *quantiles("abode_node_commit_duration_seconds"),
           description="One group commit: one fsync'd RocksDB write."),
        ts("Commits and batches", "ops",
           (f"sum(rate(abode_node_commits_total[{RATE}]))", "commits"),
           (f"sum(rate(abode_node_commit_batches_total[{RATE}]))", "event batches")),
        ts("Alarms", "ops",
           (f"sum(rate(abode_node_alarms_fired_total[{RATE}]))", "fired"),
           (f"sum(rate(abode_node_alarms_retried_total[{RATE}]))", "retried"),
           (f"sum(rate(abode_node_alarms_failed_total[{RATE}]))", "dropped")),
    )

    row("Cluster")
    panels(
        ts("Membership", "none",
           ("max(abode_node_ring_members)", "members"),
           ("min(abode_node_live_nodes)", "live (lowest view)"),
           ("sum(abode_node_fenced)", "fenced nodes")),
        ts("Forwards and retries", "ops",
           (f"sum(rate(abode_node_forwards_total[{RATE}]))", "node forwards"),
           (f"sum(rate(abode_router_retries_total[{RATE}]))", "router retries")),
        ts("Handoff", "none",
           ("sum(abode_node_handoff_ranges_pending)", "ranges arriving"),
           (f"sum(rate(abode_node_handoff_keys_pulled_total[{RATE}]))", "keys pulled/s")),
    )
    # Replication (nodes with --replicas above 1).
    panels(
        ts("Replication lag", "s",
           *quantiles("abode_node_replication_duration_seconds"),
           description="Time for the replicas to acknowledge a group commit's batches "
                       "(outputs wait for it). Empty with one replica."),
        ts("Replication failures and catch-up", "none",
           (f"sum(rate(abode_node_replication_failures_total[{RATE}]))", "failed batches/s"),
           ("sum(abode_node_catchup_waiting)", "peers still being caught up from")),
    )

    return {
        "uid": "abode",
        "title": "abode",
        "description": "Requests, latency, objects, WebSockets, storage and cluster health "
                       "of an abode cluster (deploy/docker-compose.yml).",
        "tags": ["abode"],
        "timezone": "browser",
        "editable": False,
        "graphTooltip": 1,
        "refresh": "10s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [{
            "name": "namespace", "label": "namespace", "type": "query", "datasource": DS,
            "query": {"query": "label_values(abode_node_events_total, namespace)",
                      "refId": "namespace"},
            "definition": "label_values(abode_node_events_total, namespace)",
            "includeAll": True, "multi": True, "allValue": ".*", "refresh": 2, "sort": 1,
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        }]},
        "annotations": {"list": []},
        "panels": list(_panels),
    }


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=False) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT}", file=sys.stderr)
