"""``abode up``: a real local cluster — etcd, nodes and routers as processes on loopback.

Each child binds its own port (routers from ``--port`` upward) and writes a ready
file; ``up`` waits for every one, prints the URLs, and on Ctrl-C stops routers,
then nodes (SIGTERM: drain and flush), then etcd. A child that dies is reported
with a pointer to its log; the others keep running.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from abode.cluster.cli.etcd import EtcdProcess, start_etcd


@dataclass(frozen=True, slots=True)
class UpConfig:
    app: str
    nodes: int = 3
    routers: int = 2
    replicas: int = 1
    port: int = 8787
    data: str = ".abode/up"
    idle_timeout: float = 30.0
    cluster: str = "abode"


RESTART_FIRST = 1.0  # seconds before restarting a child that stopped itself; doubling
RESTART_MAX = 30.0
STEADY = 60.0  # a child that ran this long starts over from RESTART_FIRST


class Child:
    def __init__(self, name: str, args: list[str], base: Path) -> None:
        self.name = name
        self.args = args
        self.log = base / "logs" / f"{name}.log"
        self.ready = base / "run" / f"{name}.json"
        self.backoff = RESTART_FIRST / 2
        self.restart_at: float | None = None
        self._launch()

    def _launch(self) -> None:
        self.ready.unlink(missing_ok=True)
        self.started = time.monotonic()
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "abode", *self.args, "--ready-file", str(self.ready)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def restart_when_due(self, code: int) -> bool:
        """A child that exited non-zero by itself (a task of it ended, or it could not
        start) is started again, with a growing delay while it keeps failing. Returns
        whether it was restarted just now."""
        now = time.monotonic()
        if self.restart_at is None:
            steady = now - self.started > STEADY
            self.backoff = RESTART_FIRST if steady else min(self.backoff * 2, RESTART_MAX)
            self.restart_at = now + self.backoff
            print(f"abode up: {self.name} exited with {code}; restarting it in "
                  f"{self.backoff:g} s (see {self.log})", file=sys.stderr, flush=True)
            return False
        if now < self.restart_at:
            return False
        self.restart_at = None
        self._launch()
        return True

    async def wait_ready(self, timeout: float = 60.0) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        while not self.ready.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready within {timeout:g} s; see {self.log}")
            await asyncio.sleep(0.05)
        info: dict[str, object] = json.loads(self.ready.read_text())
        return info

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


async def run_up(cfg: UpConfig, stop: asyncio.Event) -> int:
    base = Path(cfg.data).resolve()
    for sub in ("logs", "run", "nodes"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    print(f"abode up: starting etcd, {cfg.nodes} nodes and {cfg.routers} routers "
          f"(data and logs in {base})", flush=True)
    etcd: EtcdProcess = await asyncio.to_thread(start_etcd, base / "etcd")
    print(f"  etcd      {etcd.url}", flush=True)
    common = ["--app", cfg.app, "--etcd", etcd.url, "--cluster", cfg.cluster]
    children: list[Child] = []
    try:
        for i in range(1, cfg.nodes + 1):
            children.append(Child(f"node-{i}", [
                "node", *common, "--id", f"node-{i}", "--listen", "127.0.0.1:0",
                "--data", str(base / "nodes"), "--replicas", str(cfg.replicas),
                "--idle-timeout", str(cfg.idle_timeout), "--metrics-port", "0",
            ], base))
        for child in children:
            info = await child.wait_ready()
            print(f"  {child.name:<9} grpc {info['grpc']}  metrics "
                  f"http://127.0.0.1:{info['metrics_port']}/metrics", flush=True)
        routers = []
        for i in range(cfg.routers):
            port = cfg.port + i if cfg.port else 0
            routers.append(Child(f"router-{i + 1}", [
                "router", *common, "--port", str(port), "--metrics-port", "0",
            ], base))
        children.extend(routers)
        for child in routers:
            info = await child.wait_ready()
            print(f"  {child.name:<9} {info['url']}  metrics "
                  f"http://127.0.0.1:{info['metrics_port']}/metrics", flush=True)
        print("abode up: ready. Ctrl-C stops the cluster.", flush=True)
        reported: set[str] = set()
        while not stop.is_set():
            # A child killed by a signal is reported, not restarted: the cluster is meant
            # to ride out a lost node (try `kill -9` on one and watch its objects move
            # or wait). One that exited non-zero by itself is restarted, as compose or
            # systemd would; one that exited 0 (removed) stays gone.
            for child in children:
                code = child.proc.poll()
                if code is None:
                    continue
                if code > 0:
                    if child.restart_when_due(code):
                        reported.discard(child.name)
                elif child.name not in reported:
                    reported.add(child.name)
                    print(f"abode up: {child.name} exited with {code}; "
                          f"the rest keep running (see {child.log})", file=sys.stderr, flush=True)
            try:
                async with asyncio.timeout(0.5):
                    await stop.wait()
            except TimeoutError:
                pass
        return 0
    finally:
        print("abode up: stopping", flush=True)
        for child in reversed(children):  # routers first, then nodes
            await asyncio.to_thread(child.stop)
        etcd.stop()
