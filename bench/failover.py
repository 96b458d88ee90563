"""Crash failover: how long a SIGKILLed node's objects, and their replicas' homes, stall.

``python -m bench.failover [--kills 10] [--clients 16] [--checkout DIR]``

A local cluster of etcd, 3 nodes and 2 routers (processes on loopback, ``--replicas
2``, lease TTL 3 s, the default) runs ``Counter`` objects of ``examples.app`` under
closed-loop load through both routers. Each node is the home of one hot counter and
of a few others. Then ``--kills`` times, in turn: SIGKILL the home of a hot counter,
measure, restart it, wait until it has caught up. Per kill:

- failover: for each object whose home was killed, the time from the kill until a
  request sent after the kill is answered 200; the kill's figure is the slowest.
- replica stall: for each object homed elsewhere whose replica was killed, the longest
  gap between two consecutive 200 answers around the kill (its commits wait for the
  dead replica's ack until the replica is known dead); the kill's figure is the
  largest.

Printed: every kill, then p50 and max of both. ``--checkout DIR`` runs the cluster
from another checkout of abode (its ``.venv``), e.g. to measure the code before a
change with the same script. The checks: no value is acknowledged twice and every
counter ends at least at its highest acknowledged value.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import uvloop

from abode.cluster import ids
from abode.cluster.cli.etcd import EtcdProcess, start_etcd
from abode.cluster.membership import EtcdSession
from abode.cluster.ring import Ring

APP = "examples.app"
NODES = ("n1", "n2", "n3")
ROUTERS = 2
REPLICAS = 2
LEASE_TTL = 3.0
PER_NODE = 4  # objects homed on each node (the first is its hot one)
RECOVER_WITHIN = 30.0
READY_WITHIN = 60.0
ROOT = Path(__file__).resolve().parent.parent


class Process:
    """One ``abode`` child run by a given checkout's interpreter, from that checkout."""

    def __init__(self, checkout: Path, name: str, args: list[str], base: Path) -> None:
        self.name = name
        self.ready = base / "run" / f"{name}.json"
        self.ready.unlink(missing_ok=True)
        python = checkout / ".venv" / "bin" / "python"
        with open(base / "logs" / f"{name}.log", "ab") as out:
            # cwd is the checkout: `-m abode` then imports that checkout's code.
            self.proc = subprocess.Popen(
                [str(python if python.exists() else sys.executable), "-m", "abode", *args,
                 "--ready-file", str(self.ready)],
                cwd=checkout, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    async def wait_ready(self, timeout: float = READY_WITHIN) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        while not self.ready.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready within {timeout:g} s")
            await asyncio.sleep(0.05)
        info: dict[str, object] = json.loads(self.ready.read_text())
        return info

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@dataclass
class Kill:
    victim: str
    failover: float  # seconds until every object of the killed home answered again
    stall: float  # longest answer gap of an object whose replica was killed
    revoked: bool  # whether a peer revoked the lease (a log line says so)


@dataclass
class Load:
    """Clients incrementing counters; every 200 is kept with its send/answer times."""

    http: aiohttp.ClientSession
    urls: list[str]
    names: list[str]
    acked: dict[str, list[int]] = field(default_factory=dict)
    answered: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    outcomes: Counter[str] = field(default_factory=Counter)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def client(self, index: int) -> None:
        for i in itertools.count(index):
            if self.stop.is_set():
                return
            name = self.names[i % len(self.names)]
            url = f"{self.urls[i % len(self.urls)]}/Counter/{name}/increment"
            sent = time.monotonic()
            try:
                async with self.http.post(url) as resp:
                    body = await resp.read()
                    outcome = "200" if resp.status == 200 else str(resp.status)
                    if resp.status == 200:
                        self.acked.setdefault(name, []).append(int(json.loads(body)["value"]))
                        self.answered.setdefault(name, []).append((sent, time.monotonic()))
            except (aiohttp.ClientError, TimeoutError) as exc:
                outcome = type(exc).__name__
            self.outcomes[outcome] += 1
            if outcome == "503":
                await asyncio.sleep(0.02)

    def back_after(self, name: str, t: float) -> float | None:
        """When a request on `name` sent after `t` was first answered 200."""
        times = [done for sent, done in list(self.answered.get(name, ())) if sent > t]
        return min(times) if times else None

    def longest_gap(self, name: str, t0: float, t1: float) -> float:
        """The longest time between two consecutive 200 answers of `name` in [t0, t1]."""
        done = sorted(d for _, d in list(self.answered.get(name, ())) if t0 <= d <= t1)
        return max((b - a for a, b in itertools.pairwise(done)), default=0.0)


class Cluster:
    def __init__(self, checkout: Path) -> None:
        self.checkout = checkout
        self.base = Path(tempfile.mkdtemp(prefix="abode-bench-failover-"))
        self.etcd: EtcdProcess | None = None
        self.nodes: dict[str, Process] = {}
        self.routers: list[Process] = []
        self.urls: list[str] = []

    def _node_args(self, node_id: str) -> list[str]:
        assert self.etcd is not None
        return ["node", "--app", APP, "--etcd", self.etcd.url, "--id", node_id,
                "--listen", "127.0.0.1:0", "--data", str(self.base / "nodes"),
                "--replicas", str(REPLICAS), "--lease-ttl", f"{LEASE_TTL:g}"]

    async def start(self) -> None:
        for sub in ("logs", "run", "nodes"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        self.etcd = await asyncio.to_thread(start_etcd, self.base / "etcd")
        for node_id in NODES:
            self.nodes[node_id] = Process(self.checkout, node_id, self._node_args(node_id),
                                          self.base)
        for child in self.nodes.values():
            await child.wait_ready()
        for i in range(ROUTERS):
            self.routers.append(Process(self.checkout, f"router-{i + 1}", [
                "router", "--app", APP, "--etcd", self.etcd.url, "--port", "0",
                "--lease-ttl", f"{LEASE_TTL:g}"], self.base))
        for router in self.routers:
            self.urls.append(str((await router.wait_ready())["url"]))
        await self.caught_up()

    def stop(self, keep: bool) -> None:
        for child in [*self.routers, *self.nodes.values()]:
            child.stop()
        if self.etcd is not None:
            self.etcd.stop()
        if keep:
            print(f"  (cluster logs kept in {self.base / 'logs'})")
        else:
            shutil.rmtree(self.base, ignore_errors=True)

    async def caught_up(self) -> float:
        """Until every node is live and waits on no peer; returns the seconds."""
        assert self.etcd is not None
        t0 = time.monotonic()
        session = await EtcdSession.connect(self.etcd.url, timeout=5.0)
        try:
            while True:
                snap = await session.snapshot()
                if set(snap.live) == set(NODES) and not any(
                        n.waiting for n in snap.live.values()):
                    return time.monotonic() - t0
                if time.monotonic() - t0 > READY_WITHIN:
                    raise TimeoutError(f"cluster not caught up within {READY_WITHIN:g} s")
                await asyncio.sleep(0.05)
        finally:
            await session.close()

    async def preferences(self, names: list[str]) -> dict[str, list[str]]:
        assert self.etcd is not None
        session = await EtcdSession.connect(self.etcd.url, timeout=5.0)
        try:
            ring = Ring((await session.snapshot()).members.values())
        finally:
            await session.close()
        return {n: ring.preference_list(ids.ring_position(ids.id_from_name("Counter", n).raw),
                                        REPLICAS) for n in names}

    def revocations(self) -> int:
        return sum((self.base / "logs" / f"{c}.log").read_text(errors="replace")
                   .count("refuses connections: revoked its lease")
                   for c in [*NODES, *(f"router-{i + 1}" for i in range(ROUTERS))])

    async def restart(self, node_id: str) -> None:
        self.nodes[node_id] = Process(self.checkout, node_id, self._node_args(node_id), self.base)
        await self.nodes[node_id].wait_ready()


async def pick_objects(cluster: Cluster) -> dict[str, list[str]]:
    """Object names, PER_NODE homed on each node (the first one its hot one)."""
    tag = os.urandom(2).hex()
    candidates = [f"fo{i}-{tag}" for i in range(400)]
    prefs = await cluster.preferences(candidates)
    by_home: dict[str, list[str]] = {n: [] for n in NODES}
    for name in candidates:
        home = prefs[name][0]
        if len(by_home[home]) < PER_NODE:
            by_home[home].append(name)
    return by_home


async def run(opts: argparse.Namespace) -> bool:
    checkout = Path(opts.checkout).resolve()
    print(f"failover: {len(NODES)} nodes, {ROUTERS} routers, --replicas {REPLICAS}, lease TTL "
          f"{LEASE_TTL:g} s, {APP} Counter; {opts.clients} clients, {opts.kills} SIGKILLs; "
          f"code from {checkout}", flush=True)
    cluster = Cluster(checkout)
    ok = False
    try:
        await cluster.start()
        ok = await _kills(cluster, opts)
    finally:
        cluster.stop(keep=not ok)
    return ok


async def _kills(cluster: Cluster, opts: argparse.Namespace) -> bool:
    by_home = await pick_objects(cluster)
    names = [n for group in by_home.values() for n in group]
    prefs = await cluster.preferences(names)
    kills: list[Kill] = []
    failed = 0
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=opts.clients + 8),
        timeout=aiohttp.ClientTimeout(total=30),
    ) as http:
        load = Load(http, cluster.urls, names)
        clients = [asyncio.create_task(load.client(i)) for i in range(opts.clients)]
        try:
            await asyncio.sleep(2.0)  # warm: every object active on its home
            for k in range(opts.kills):
                victim = NODES[k % len(NODES)]
                homed = by_home[victim]
                replicated = [n for n in names if prefs[n][0] != victim and victim in prefs[n]]
                await asyncio.sleep(1.0)  # steady load first
                revoked_before = cluster.revocations()
                killed_at = time.monotonic()
                cluster.nodes[victim].kill()
                deadline = killed_at + RECOVER_WITHIN
                while time.monotonic() < deadline and not all(
                        load.back_after(n, killed_at) for n in homed + replicated):
                    await asyncio.sleep(0.01)
                backs = [load.back_after(n, killed_at) for n in homed]
                if not all(backs) or not all(load.back_after(n, killed_at) for n in replicated):
                    failed += 1
                    print(f"  kill {k + 1:>2}: {victim}: FAILED, its objects did not all answer "
                          f"within {RECOVER_WITHIN:g} s", flush=True)
                else:
                    end = time.monotonic()
                    kill = Kill(
                        victim,
                        max(b for b in backs if b is not None) - killed_at,
                        max((load.longest_gap(n, killed_at - 1.0, end) for n in replicated),
                            default=0.0),
                        cluster.revocations() > revoked_before,
                    )
                    kills.append(kill)
                    print(f"  kill {k + 1:>2}: {victim}: failover {kill.failover:.2f} s, "
                          f"replica stall {kill.stall:.2f} s "
                          f"({len(homed)} objects homed there, {len(replicated)} replicated "
                          f"there){'; lease revoked by a peer' if kill.revoked else ''}",
                          flush=True)
                await cluster.restart(victim)
                await cluster.caught_up()
        finally:
            load.stop.set()
            await asyncio.gather(*clients)
        finals = {}
        for name in names:
            async with http.get(f"{cluster.urls[0]}/Counter/{name}") as resp:
                finals[name] = int((await resp.json())["value"])
    twice = [n for n, values in load.acked.items() if len(values) != len(set(values))]
    lost = [n for n, values in load.acked.items() if values and finals[n] < max(values)]
    print(f"  outcomes: {dict(load.outcomes)}")
    if kills:
        fo = [k.failover for k in kills]
        st = [k.stall for k in kills]
        print(f"\nfailover over {len(kills)} kills: p50 {statistics.median(fo):.2f} s, "
              f"max {max(fo):.2f} s")
        print(f"replica stall over {len(kills)} kills: p50 {statistics.median(st):.2f} s, "
              f"max {max(st):.2f} s")
        print(f"leases revoked by a peer: {sum(k.revoked for k in kills)} of {len(kills)} kills")
    checks = [
        (not failed, f"{opts.kills - failed} of {opts.kills} kills recovered within "
                     f"{RECOVER_WITHIN:g} s"),
        (not twice, f"no value acknowledged twice ({len(twice)} counters with repeats)"),
        (not lost, f"every counter at or above its highest acknowledged value ({len(lost)} below)"),
    ]
    for ok, what in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {what}")
    return all(ok for ok, _ in checks)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.failover", description=__doc__
                                     .split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--checkout", default=str(ROOT),
                        help="run the cluster from this checkout of abode (default: this one)")
    opts = parser.parse_args(argv)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return 0 if runner.run(run(opts)) else 1


if __name__ == "__main__":
    sys.exit(main())
