"""deploy/healthcheck.py (the image's HEALTHCHECK) against real abode processes.

A node and a router run with the environment the compose file gives node-1 and
router-1; only what cannot be the same on a test machine is overridden by flags
(flags win over ABODE_*): etcd's URL, port 0 everywhere, a temporary data dir.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from abode.cluster.cli.__main__ import apply_environment, build_parser
from tests.cluster.etcd import EtcdProcess, start_etcd
from tests.harness import ROOT

pytestmark = pytest.mark.timeout(120)

import yaml  # noqa: E402  (the dev extra installs PyYAML)


def _healthcheck() -> Any:
    spec = importlib.util.spec_from_file_location("abode_healthcheck",
                                                  ROOT / "deploy" / "healthcheck.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hc = _healthcheck()


def _compose_env(service: str) -> dict[str, str]:
    data = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    env = data["services"][service]["environment"]
    return {k: str(v).replace("${ABODE_APP:-examples.app}", "examples.app") for k, v in env.items()}


class Proc:
    def __init__(self, tmp: Path, name: str, args: list[str], env: dict[str, str]) -> None:
        self.ready = tmp / f"{name}.json"
        self.log = tmp / f"{name}.log"
        base = {k: v for k, v in os.environ.items() if not k.startswith("ABODE_")}
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "abode", *args, "--ready-file", str(self.ready)],
                cwd=ROOT, env={**base, **env, "PYTHONUNBUFFERED": "1"},
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )

    def wait_ready(self, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not self.ready.exists():
            assert self.proc.poll() is None, f"exited: {self.log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"not ready: {self.log.read_text()[-3000:]}"
            time.sleep(0.05)
        info: dict[str, Any] = json.loads(self.ready.read_text())
        return info

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdProcess]:
    proc = start_etcd(tmp_path / "etcd")
    try:
        yield proc
    finally:
        proc.stop()


def _eventually(check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_healthcheck_passes_on_a_node_and_a_router_run_like_compose(
    tmp_path: Path, etcd: EtcdProcess
) -> None:
    common = ["--etcd", etcd.url, "--metrics-port", "0"]
    node = Proc(tmp_path, "node", ["node", *common, "--listen", "127.0.0.1:0",
                                   "--advertise", "", "--data", str(tmp_path / "data")],
                _compose_env("node-1"))
    router = None
    try:
        info = node.wait_ready()
        # The process is found and parsed as the HEALTHCHECK would, from /proc.
        argv, environ = hc.find_abode(node.proc.pid)
        args = apply_environment(build_parser(), argv, environ)
        assert (args.command, args.id, args.advertise) == ("node", "node-1", "")
        assert environ["ABODE_ID"] == "node-1"
        message = _eventually(lambda: hc.check_node(info["grpc"]))
        assert "node node-1 healthy" in message

        router = Proc(tmp_path, "router", ["router", *common, "--host", "127.0.0.1",
                                           "--port", "0"], _compose_env("router-1"))
        rinfo = router.wait_ready()
        argv, environ = hc.find_abode(router.proc.pid)
        assert apply_environment(build_parser(), argv, environ).command == "router"
        message = _eventually(lambda: hc.check_router("0.0.0.0", rinfo["port"]))
        assert "router healthy" in message and "live_nodes" in message
    finally:
        if router is not None:
            router.stop()
        node.stop()


def test_healthcheck_fails_without_an_abode_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert hc.main([str(os.getpid())]) == 1  # pytest is no abode process
    assert "unhealthy" in capsys.readouterr().err


def test_abode_is_found_in_every_way_it_is_started() -> None:
    assert hc._abode_args(["/usr/local/bin/python", "/usr/local/bin/abode", "node", ""]) == [
        "node"]
    assert hc._abode_args(["python", "-m", "abode", "router", "--port", "1"]) == [
        "router", "--port", "1"]
    assert hc._abode_args(["python", "-m", "pytest"]) is None
    assert hc._abode_args(["/usr/local/bin/abode", "--help"]) is None
