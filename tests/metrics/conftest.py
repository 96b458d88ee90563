"""Fixtures for the metrics tests: a real etcd with node and router processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.etcd import start_etcd
from tests.cluster.harness import Cluster
from tests.metrics.helpers import APP


@pytest.fixture
def cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """etcd plus an empty cluster running the metrics test app; logs printed on failure."""
    etcd = start_etcd(tmp_path / "etcd")
    handle = Cluster(tmp_path / "cluster", etcd, APP)
    try:
        yield handle
    finally:
        handle.stop_all()
        etcd.stop()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(f"\n{handle.all_logs()}")
