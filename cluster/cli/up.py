"""``abode up``: a real local cluster — etcd, nodes and routers as processes on loopback.

Each child binds its own port (routers from ``--port`` upward) and writes a ready
file; ``up`` waits for every one, prints the URLs, and on Ctrl-C stops routers,
then nodes (SIGTERM: drain and flush), then etcd. A child that dies is reported
with the end of its log; the others keep running.

Children die with ``up`` even when it is killed outright (``lifeline``), and the data
dir's run dir tells a second ``up`` (and ``abode status``) about this one (``upstate``).
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

from abode.cluster.app import load_app
from abode.cluster.cli.etcd import EtcdProcess, start_etcd_async
from abode.cluster.cli.lifeline import die_with_parent
from abode.cluster.cli.upstate import UpState, lock_run_dir, stop_leftovers

TAIL_LINES = 20  # of a failed child's log, printed with the failure


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


class ChildFailed(Exception):
    """A child exited or did not get ready; the message holds the end of its log."""


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
            self.start_offset = out.tell()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "abode", *self.args, "--ready-file", str(self.ready)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                preexec_fn=die_with_parent(signal.SIGTERM),
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
            print(f"abode up: "
                  f"{self.failure(f'exited with {code}; restarting it in {self.backoff:g} s')}",
                  file=sys.stderr, flush=True)
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
                raise ChildFailed(self.failure(f"exited with {self.proc.returncode}"))
            if time.monotonic() > deadline:
                raise ChildFailed(self.failure(f"was not ready within {timeout:g} s"))
            await asyncio.sleep(0.05)
        info: dict[str, object] = json.loads(self.ready.read_text())
        return info

    def failure(self, what: str) -> str:
        """``what`` happened to this child, and the last lines it logged (this run's)."""
        try:
            with open(self.log, "rb") as f:
                f.seek(self.start_offset)
                lines = f.read().decode(errors="replace").splitlines()[-TAIL_LINES:]
        except OSError:
            lines = []
        tail = "".join(f"\n  | {line}" for line in lines) or "\n  (its log is empty)"
        return f"{self.name} {what}; the end of {self.log}:{tail}"

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


async def run_up(cfg: UpConfig, stop: asyncio.Event) -> int:
    # The app loads here first: an error in it is one line now, not three failed nodes.
    load_app(cfg.app)
    base = Path(cfg.data).resolve()
    for sub in ("logs", "run", "nodes"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    lock = lock_run_dir(base)  # held until this process exits (DirInUse if it cannot)
    try:
        return await _run(cfg, base, stop)
    finally:
        os.close(lock)


async def _run(cfg: UpConfig, base: Path, stop: asyncio.Event) -> int:
    stopped = await asyncio.to_thread(stop_leftovers, base)
    if stopped:
        print(f"abode up: stopped what an earlier abode up left running in {base}: "
              f"{', '.join(stopped)}", flush=True)
    state = UpState(pid=os.getpid(), data=str(base), cluster=cfg.cluster)
    state.save()
    print(f"abode up: starting etcd, {cfg.nodes} nodes and {cfg.routers} routers "
          f"(data and logs in {base})", flush=True)
    etcd: EtcdProcess = await start_etcd_async(
        base / "etcd", preexec_fn=die_with_parent(signal.SIGTERM)
    )
    state.etcd = etcd.url
    state.children["etcd"] = etcd.pid
    state.save()
    print(f"  etcd      {etcd.url}", flush=True)
    common = ["--app", cfg.app, "--etcd", etcd.url, "--cluster", cfg.cluster]
    children: list[Child] = []

    def started(child: Child) -> Child:
        children.append(child)
        state.children[child.name] = child.proc.pid
        state.save()
        return child

    try:
        nodes = [started(Child(f"node-{i}", [
            "node", *common, "--id", f"node-{i}", "--listen", "127.0.0.1:0",
            "--data", str(base / "nodes"), "--replicas", str(cfg.replicas),
            "--idle-timeout", str(cfg.idle_timeout), "--metrics-port", "0",
        ], base)) for i in range(1, cfg.nodes + 1)]
        for child in nodes:
            info = await child.wait_ready()
            print(f"  {child.name:<9} grpc {info['grpc']}  metrics "
                  f"http://127.0.0.1:{info['metrics_port']}/metrics", flush=True)
        routers = [started(Child(f"router-{i + 1}", [
            "router", *common, "--port", str(cfg.port + i if cfg.port else 0),
            "--metrics-port", "0",
        ], base)) for i in range(cfg.routers)]
        for child in routers:
            info = await child.wait_ready()
            state.routers.append(str(info["url"]))
            print(f"  {child.name:<9} {info['url']}  metrics "
                  f"http://127.0.0.1:{info['metrics_port']}/metrics", flush=True)
        state.save()
        print("abode up: ready. Ctrl-C stops the cluster.", flush=True)
        await _watch(children, stop)
        return 0
    except ChildFailed as exc:
        print(f"abode up: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        print("abode up: stopping", flush=True)
        for child in reversed(children):  # routers first, then nodes
            await asyncio.to_thread(child.stop)
        await asyncio.to_thread(etcd.stop)
        state.children.clear()
        state.save()


async def _watch(children: list[Child], stop: asyncio.Event) -> None:
    reported: set[str] = set()
    while not stop.is_set():
        # A child killed by a signal is reported, not restarted: the cluster is meant
        # to ride out a lost node (try `kill -9` on one and watch its objects move or
        # wait). One that exited non-zero by itself is restarted, as compose or systemd
        # would; one that exited 0 (removed) stays gone.
        for child in children:
            code = child.proc.poll()
            if code is None:
                continue
            if code > 0:
                if child.restart_when_due(code):
                    reported.discard(child.name)
            elif child.name not in reported:
                reported.add(child.name)
                print(f"abode up: {child.failure(f'exited with {code}')}"
                      "\nabode up: the rest keep running", file=sys.stderr, flush=True)
        try:
            async with asyncio.timeout(0.5):
                await stop.wait()
        except TimeoutError:
            pass
