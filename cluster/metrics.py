"""Metrics helpers shared by nodes and routers (the families themselves: docs/metrics.md).

Counts on the hot path are plain Python numbers touched only from the event loop,
never a locked ``prometheus_client`` metric per event: each process's metrics object
registers one collector on its *injected* ``CollectorRegistry`` and turns those
numbers (and counters the components already keep) into Prometheus families at
scrape time. Scrapes run on the same loop, so they read a consistent picture
without locks. Names start with ``abode_`` and use base units (``_seconds``,
``_bytes``, ``_total``).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.utils import floatToGoString

__all__ = [
    "COUNT_BUCKETS",
    "LATENCY_BUCKETS",
    "Histogram",
    "counter",
    "gauge",
    "histogram",
    "new_registry",
]

# Seconds: from a cached point read (tens of microseconds) to a call timeout (30 s).
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)
# Sizes (batches per group commit): powers of two up to the largest useful group.
COUNT_BUCKETS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def new_registry() -> CollectorRegistry:
    """A process's registry: never the global one, so several metrics objects (the node
    and router of ``abode dev``, tests) live side by side. Adds the standard
    ``process_*`` families (CPU, memory, open fds) of this process."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    return registry


class Histogram:
    """A Prometheus histogram for one event-loop thread: ``observe`` is a bisect and
    two additions, with no lock (every caller and the scrape run on the same loop)."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float] = LATENCY_BUCKETS) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        # bisect_left finds the first bound >= value: Prometheus buckets are "le".
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def buckets(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            running += n
            out.append((floatToGoString(bound), running))
        out.append(("+Inf", running + self.counts[-1]))
        return out


def counter(
    name: str, doc: str, labels: Sequence[str] = (),
    values: Mapping[Any, float] | Iterable[tuple[Any, float]] = (),
) -> Metric:
    """A counter family; ``name`` without ``_total`` (the text format adds it)."""
    family = CounterMetricFamily(name, doc, labels=list(labels))
    items = values.items() if isinstance(values, Mapping) else values
    for key, value in items:
        family.add_metric(list(key), value)
    return family


def gauge(
    name: str, doc: str, labels: Sequence[str] = (),
    values: Mapping[Any, float] | Iterable[tuple[Any, float]] = (),
) -> Metric:
    family = GaugeMetricFamily(name, doc, labels=list(labels))
    items = values.items() if isinstance(values, Mapping) else values
    for key, value in items:
        family.add_metric(list(key), value)
    return family


def histogram(
    name: str, doc: str, labels: Sequence[str] = (),
    values: Mapping[Any, Histogram] | Iterable[tuple[Any, Histogram]] = (),
) -> Metric:
    family = HistogramMetricFamily(name, doc, labels=list(labels))
    items = values.items() if isinstance(values, Mapping) else values
    for key, hist in items:
        family.add_metric(list(key), hist.buckets(), hist.total)
    return family
