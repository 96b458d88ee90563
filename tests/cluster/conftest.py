"""Fixtures for tests against real etcd (and, later, real node/router processes)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.etcd import EtcdProcess, start_etcd


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
