"""A real etcd for cluster tests: the one ``abode up`` starts, without fsync."""

from __future__ import annotations

from pathlib import Path

from abode.cluster.cli.etcd import ETCD_BIN, EtcdProcess, free_port
from abode.cluster.cli.etcd import start_etcd as _start_etcd

__all__ = ["ETCD_BIN", "EtcdProcess", "free_port", "start_etcd"]


def start_etcd(tmp_path: Path, *, attempts: int = 3, ready_timeout: float = 15.0) -> EtcdProcess:
    # Test data is throwaway; fsync only slows the suite.
    return _start_etcd(tmp_path, attempts=attempts, ready_timeout=ready_timeout, fsync=False)
