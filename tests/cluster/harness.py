"""A real cluster for tests: etcd plus ``abode node`` / ``abode router`` child processes.

Every child binds port 0 on loopback and writes a ready file with its ports, so there
are no free-port races. Every wait has a deadline. Teardown sends SIGTERM, then
SIGKILL to whatever is left; the fixture prints the children's logs when a test fails.

    cluster = Cluster(tmp_path, etcd, "tests.apps.cluster_app")
    cluster.start_nodes("n1", "n2", "n3")
    cluster.start_router()
    url = cluster.router_urls[0]
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from abode.cluster.env import Env
from abode.cluster.peer import CHANNEL_OPTIONS, PeerClient
from abode.cluster.rpc.v1 import node_pb2 as pb
from abode.cluster.rpc.v1 import node_pb2_grpc as pb_grpc
from tests.cluster.etcd import EtcdProcess
from tests.harness import ROOT

APP = "tests.apps.cluster_app"
NAMESPACES = ["Recorder", "Tally", "Tickets"]
LEASE_TTL = 2.0


def abode_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "abode", *args]


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    # A test's ABODE_* variables would leak into every child: start from a clean slate.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABODE_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


@dataclass
class Child:
    """One ``abode node`` or ``abode router`` process (restartable with the same args)."""

    name: str
    kind: str  # "node" | "router"
    args: list[str]
    env: dict[str, str]
    log_path: Path
    ready_path: Path
    proc: subprocess.Popen[bytes] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def launch(self) -> None:
        self.ready_path.unlink(missing_ok=True)
        self.info = {}
        with open(self.log_path, "ab") as log:
            log.write(f"---- start {' '.join(self.args)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                abode_command(*self.args, "--ready-file", str(self.ready_path)),
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def wait_ready(self, deadline: float) -> None:
        assert self.proc is not None
        while not self.ready_path.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode} before it was ready:\n"
                    f"{self.logs()[-4000:]}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready in time:\n{self.logs()[-4000:]}")
            time.sleep(0.05)  # polling interval of a deadline-bounded wait
        self.info = json.loads(self.ready_path.read_text())

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def send(self, sig: int) -> None:
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit; returns its exit code (raises on timeout)."""
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        """Send `sig`, wait up to `timeout` s, then SIGKILL. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                return self.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


class Cluster:
    """etcd (started by the caller) plus node and router processes on loopback."""

    def __init__(
        self,
        base: Path,
        etcd: EtcdProcess,
        app: str = APP,
        *,
        lease_ttl: float = LEASE_TTL,
        cluster: str = "abode",
        env: dict[str, str] | None = None,
    ) -> None:
        self.base = base
        self.etcd = etcd
        self.app = app
        self.lease_ttl = lease_ttl
        self.cluster = cluster
        self.records = base / "records"  # where Recorder objects write (one file per pid)
        for sub in ("logs", "run", "nodes", "records"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        self.env = child_env({"ABODE_TEST_RECORD_DIR": str(self.records), **(env or {})})
        self.children: dict[str, Child] = {}
        self._routers = 0

    # -- starting -------------------------------------------------------------------
    def _common(self, etcd_url: str | None = None) -> list[str]:
        return ["--app", self.app, "--etcd", etcd_url or self.etcd.url, "--cluster",
                self.cluster, "--lease-ttl", f"{self.lease_ttl:g}"]

    def _child(self, name: str, kind: str, args: list[str]) -> Child:
        if name in self.children:
            raise ValueError(f"{name} already exists; use restart()")
        child = Child(name, kind, args, self.env, self.base / "logs" / f"{name}.log",
                      self.base / "run" / f"{name}.json")
        self.children[name] = child
        return child

    @staticmethod
    def _flags(flags: dict[str, Any]) -> list[str]:
        out: list[str] = []
        for key, value in flags.items():
            out += [f"--{key.replace('_', '-')}", str(value)]
        return out

    def start_nodes(
        self, *node_ids: str, timeout: float = 60.0, etcd_url: str | None = None, **flags: Any
    ) -> list[Child]:
        """Start nodes in parallel (each with the same extra flags) and wait for all.

        `etcd_url` overrides where they reach etcd (an `EtcdProxy`, to cut them off)."""
        children = []
        for node_id in node_ids:
            child = self._child(node_id, "node", [
                "node", *self._common(etcd_url), "--id", node_id, "--listen", "127.0.0.1:0",
                "--data", str(self.base / "nodes"), *self._flags(flags),
            ])
            child.launch()
            children.append(child)
        deadline = time.monotonic() + timeout
        for child in children:
            child.wait_ready(deadline)
        return children

    def start_node(self, node_id: str, **flags: Any) -> Child:
        return self.start_nodes(node_id, **flags)[0]

    def start_routers(
        self, count: int, timeout: float = 60.0, etcd_url: str | None = None, **flags: Any
    ) -> list[Child]:
        children = []
        for _ in range(count):
            self._routers += 1
            child = self._child(f"router-{self._routers}", "router", [
                "router", *self._common(etcd_url), "--port", "0", *self._flags(flags),
            ])
            child.launch()
            children.append(child)
        deadline = time.monotonic() + timeout
        for child in children:
            child.wait_ready(deadline)
        return children

    def start_router(self, etcd_url: str | None = None, **flags: Any) -> Child:
        return self.start_routers(1, etcd_url=etcd_url, **flags)[0]

    # -- controlling ----------------------------------------------------------------
    def __getitem__(self, name: str) -> Child:
        return self.children[name]

    def kill(self, name: str, sig: int = signal.SIGKILL, timeout: float = 30.0) -> int:
        """Send `sig` to a child and wait for it to exit; returns its exit code."""
        child = self.children[name]
        child.send(sig)
        return child.wait(timeout)

    def restart(self, name: str, timeout: float = 60.0) -> Child:
        """Start a stopped (or running: SIGKILL first) child again with the same args."""
        child = self.children[name]
        if child.running:
            self.kill(name)
        child.launch()
        child.wait_ready(time.monotonic() + timeout)
        return child

    def stop_all(self, timeout: float = 15.0) -> list[str]:
        """SIGTERM every child (routers first, in parallel), then SIGKILL stragglers.

        Returns what went wrong: children that did not exit 0 on SIGTERM, and any
        child whose log holds a traceback.
        """
        problems = []
        for kind in ("router", "node"):
            group = [c for c in self.children.values() if c.kind == kind and c.running]
            for child in group:
                child.send(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            for child in group:
                try:
                    code = child.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    child.stop(signal.SIGKILL, timeout=5)
                    code = -signal.SIGKILL
                if code != 0:
                    problems.append(f"{child.name} exited with {code} on SIGTERM")
        for child in self.children.values():
            if "Traceback" in child.logs():
                problems.append(f"{child.name} logged a traceback")
        return problems

    # -- looking --------------------------------------------------------------------
    @property
    def router_urls(self) -> list[str]:
        return [c.info["url"] for c in self.children.values()
                if c.kind == "router" and c.running and c.info]

    @property
    def nodes(self) -> list[Child]:
        return [c for c in self.children.values() if c.kind == "node"]

    def grpc_address(self, name: str) -> str:
        return str(self.children[name].info["grpc"])

    def node_by_pid(self, pid: int) -> str:
        for child in self.nodes:
            if child.info.get("pid") == pid:
                return child.name
        raise KeyError(f"no node with pid {pid}")

    def logs(self, name: str) -> str:
        return self.children[name].logs()

    def all_logs(self, tail: int = 6000) -> str:
        parts = [f"---- etcd ----\n{self.etcd.logs()[-2000:]}"]
        for child in self.children.values():
            code = child.proc.poll() if child.proc else None
            parts.append(f"---- {child.name} (exit code {code}) ----\n"
                         f"{child.logs()[-tail:]}")
        return "\n".join(parts)

    def cli(self, *args: str, env: dict[str, str] | None = None,
            timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run an ``abode`` command (status, remove...) to completion."""
        return subprocess.run(
            abode_command(*args), cwd=ROOT, env=child_env(env), capture_output=True,
            text=True, timeout=timeout, check=False,
        )

    def status(self) -> dict[str, dict[str, str]]:
        """``abode status`` parsed: node id -> {live, weight, share, objects}."""
        result = self.cli("status", "--etcd", self.etcd.url, "--cluster", self.cluster)
        assert result.returncode == 0, result.stderr
        return parse_status(result.stdout)

    # -- gRPC -----------------------------------------------------------------------
    async def info(self, name: str, timeout: float = 5.0) -> pb.InfoReply:
        """The node's Info RPC: revision, active_objects, pending_ranges..."""
        async with grpc.aio.insecure_channel(self.grpc_address(name),
                                             options=CHANNEL_OPTIONS) as channel:
            reply: pb.InfoReply = await pb_grpc.NodeStub(channel).Info(
                pb.InfoRequest(), timeout=timeout)
            return reply

    def direct_env(self, name: str) -> tuple[Env, PeerClient]:
        """An ``env`` whose every call goes straight to node `name`'s Exchange stream,
        with revision 0 (the stalest view there is). Close the PeerClient after."""
        peer = PeerClient(self.grpc_address(name))
        return Env(NAMESPACES, peer, call_timeout=10.0), peer


class EtcdProxy:
    """A TCP proxy to etcd for one process, to cut that process alone off from etcd.

    `cut()` freezes both directions of every connection (bytes wait; connections stay
    open), exactly what a partition or a hung switch looks like to the process;
    `heal()` lets them flow again. It runs on a thread of its own, so it keeps
    forwarding while the test blocks (starting processes, say).
    """

    def __init__(self, target_port: int) -> None:
        self._target = target_port
        self._loop = asyncio.new_event_loop()
        self._flowing: asyncio.Event | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.port = self._call(self._start())

    def _call(self, coro: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _start(self) -> int:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer),
                             return_exceptions=True)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        try:
            while data := await reader.read(65536):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    def cut(self) -> None:
        assert self._flowing is not None
        self._loop.call_soon_threadsafe(self._flowing.clear)

    def heal(self) -> None:
        assert self._flowing is not None
        self._loop.call_soon_threadsafe(self._flowing.set)

    def close(self) -> None:
        async def stop() -> None:
            assert self._server is not None and self._flowing is not None
            self._flowing.set()
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        self._call(stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


_STATUS_ROW = re.compile(
    r"^(?P<node>\S+)\s+(?P<address>\S+)\s+(?P<live>yes|no)\s+(?P<weight>\d+)\s+"
    r"(?P<share>[\d.]+)%\s+(?P<objects>\S+)", re.MULTILINE)


def parse_status(text: str) -> dict[str, dict[str, str]]:
    return {m["node"]: m.groupdict() for m in _STATUS_ROW.finditer(text)}


def overlaps(lines: Iterable[str]) -> list[tuple[str, tuple[float, float, str], tuple[float, float, str]]]:
    """From Recorder lines, every pair of executions of one object by different
    processes or activations whose [start, end] intervals intersect."""
    open_: dict[tuple[str, str, str], list[float]] = {}
    intervals: dict[str, list[tuple[float, float, str]]] = {}
    for line in lines:
        parts = line.split()
        if len(parts) != 5:
            continue
        kind, oid, pid, activation, at = parts
        key = (oid, pid, activation)
        if kind == "start":
            open_.setdefault(key, []).append(float(at))
        elif kind == "end" and open_.get(key):
            start = open_[key].pop(0)
            intervals.setdefault(oid, []).append((start, float(at), f"{pid}/{activation}"))
    # An event that never ended (its process was killed) runs until the end of time.
    for (oid, pid, activation), starts in open_.items():
        for start in starts:
            intervals.setdefault(oid, []).append((start, float("inf"), f"{pid}/{activation}"))
    found = []
    for oid, spans in intervals.items():
        spans.sort()
        for i, a in enumerate(spans):
            for b in spans[i + 1:]:
                if b[0] >= a[1]:
                    break
                if a[2] != b[2]:
                    found.append((oid, a, b))
    return found


def record_lines(directory: Path) -> list[str]:
    lines: list[str] = []
    for path in sorted(directory.glob("*.log")):
        lines += path.read_text().splitlines()
    return lines


def spread(pids: Sequence[int]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for pid in pids:
        counts[pid] = counts.get(pid, 0) + 1
    return counts
