"""Fixtures for tests against real etcd and real node/router processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.etcd import EtcdProcess, start_etcd
from tests.cluster.harness import Cluster


@pytest.fixture
def etcd(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[EtcdProcess]:
    """A fresh single-member etcd per test; its log is printed if the test failed
    (`rep_call` is set by the report hook in tests/conftest.py)."""
    proc = start_etcd(tmp_path)
    try:
        yield proc
    finally:
        proc.stop()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(f"\n--- etcd log ({proc.log_path}) ---\n{proc.logs()[-5000:]}")


def _failed(request: pytest.FixtureRequest) -> bool:
    report = getattr(request.node, "rep_call", None)
    return report is not None and report.failed


@pytest.fixture
def cluster(tmp_path: Path, etcd: EtcdProcess, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """An empty cluster of this test's own (start nodes and routers on it); every child
    is stopped after the test, and their logs are printed if it failed."""
    handle = Cluster(tmp_path / "cluster", etcd)
    problems: list[str] = []
    try:
        yield handle
    finally:
        problems = handle.stop_all()
        if _failed(request) or problems:
            print(f"\n{handle.all_logs()}")
    # A clean stop is part of every test: SIGTERM exits 0, no process logs a traceback.
    assert not problems, problems


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three nodes and two routers shared by a module's tests that kill nothing."""
    base = tmp_path_factory.mktemp("shared")
    etcd = start_etcd(base)
    handle = Cluster(base / "cluster", etcd)
    problems: list[str] = []
    try:
        handle.start_nodes("n1", "n2", "n3")
        handle.start_routers(2)
        yield handle
    finally:
        problems = handle.stop_all()
        if problems:
            print(f"\n{handle.all_logs()}")
        etcd.stop()
    assert not problems, problems


@pytest.fixture
def three(shared_cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """`shared_cluster`, with its logs printed if this test failed."""
    yield shared_cluster
    if _failed(request):
        print(f"\n{shared_cluster.all_logs()}")
