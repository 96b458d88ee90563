"""Fixtures for the replication tests: a fresh etcd and cluster per test (they kill)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.cluster.conftest import etcd  # noqa: F401  (a fixture, used by name below)
from tests.cluster.etcd import EtcdProcess
from tests.cluster.harness import LEASE_TTL, Cluster
from tests.replication import netns

APP = "tests.apps.replication_app"


@pytest.fixture
def lease_ttl() -> float:
    """The cluster's lease TTL; a module that needs another one overrides this."""
    return LEASE_TTL


@pytest.fixture
def cluster(
    tmp_path: Path, etcd: EtcdProcess, request: pytest.FixtureRequest,  # noqa: F811
    lease_ttl: float,
) -> Iterator[Cluster]:
    """An empty cluster running the replication test app; every child is stopped
    after the test, and their logs are printed if it failed."""
    handle = Cluster(tmp_path / "cluster", etcd, APP, lease_ttl=lease_ttl)
    try:
        yield handle
    finally:
        handle.stop_all()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(f"\n{handle.all_logs(tail=12000)}")


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=100), timeout=aiohttp.ClientTimeout(total=30)
    ) as session:
        yield session


@pytest.fixture
def net() -> Iterator[netns.Netns]:
    """A network namespace of its own for one node (tests/replication/netns.py)."""
    why = netns.available()
    if why is not None:
        pytest.fail(f"network namespaces are not available: {why}")
    handle = netns.Netns.create()
    try:
        yield handle
    finally:
        handle.delete()
