"""One supervisor per process (DESIGN §3): a long-lived task that ends takes the
process down with a non-zero exit and a log line naming the task.

The real cause provoked here: etcd goes away for good under a running node, so its
membership watch cannot reload past its bound (``--etcd-give-up``) and raises.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.cluster.etcd import EtcdProcess
from tests.cluster.harness import Cluster

pytestmark = pytest.mark.timeout(90)


def wait_exit(cluster: Cluster, name: str, timeout: float) -> int:
    try:
        return cluster[name].wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{name} still runs {timeout:g} s later:\n"
                             f"{cluster.logs(name)[-4000:]}") from None


def test_a_node_whose_watch_cannot_continue_exits_non_zero_naming_the_task(
    tmp_path: Path, etcd: EtcdProcess
) -> None:
    cluster = Cluster(tmp_path / "cluster", etcd)
    try:
        cluster.start_node("n1", etcd_give_up=2)
        cluster.start_node("n2")  # the default bound (60 s): still running at the end
        etcd.stop()  # for good: nothing brings it back
        started = time.monotonic()
        code = wait_exit(cluster, "n1", timeout=30.0)
        logs = cluster.logs("n1")
        assert code == 1, logs[-4000:]
        # The supervisor's line names the task and why it ended ...
        assert "task membership-watch raised EtcdUnavailableError" in logs, logs[-4000:]
        # ... and the process's last word is that one line.
        assert "abode: node n1: task membership-watch raised" in logs.splitlines()[-1], logs[-2000:]
        # Not before its bound: a short outage is ridden out.
        assert time.monotonic() - started >= 2.0
        assert cluster["n2"].running, cluster.logs("n2")[-2000:]
    finally:
        cluster.stop_all()
