"""Replication: what synchronous copies cost, and how fast a killed home's objects answer.

A local cluster of etcd, 3 nodes and 2 routers (processes on loopback, lease TTL
3 s, the default), once per ``--replicas`` of 1, 2 and 3, driving ``Counter``
objects of ``examples.app`` through both routers:

- hot:    every client POSTs /Counter/hot-R/increment (one object: one mailbox);
- spread: each request increments one of 2,000 counters.

Then, on the 2-replica cluster, failover: 10 times, SIGKILL the home of a few
counters (computed from the ring) while clients keep incrementing them, and time
from the kill to the first successful response of each to a request sent after the
kill; the killed node is
restarted and caught up before the next kill. A kill's failover time is the time
until *all* of its watched objects answered again.

The checks: after each throughput phase every counter read back holds exactly the
increments answered 200; across the kills no value is acknowledged twice, every
counter ends at least at its highest acknowledged value, and every kill recovers
within its bound.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import shutil
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from types import TracebackType

import aiohttp

from abode.cluster import ids
from abode.cluster.cli.etcd import EtcdProcess, start_etcd
from abode.cluster.cli.up import Child
from abode.cluster.membership import EtcdSession
from abode.cluster.ring import Ring
from bench.load import Result, drive, for_each

APP = "examples.app"
NODES = ("n1", "n2", "n3")
ROUTERS = 2
LEASE_TTL = 3.0
SPREAD_KEYS = 2000
KILLS = 10
WATCHED = 4  # objects of the killed home whose first answer is timed
FAILOVER_WITHIN = 30.0  # seconds a kill may take to recover before it counts as failed
READY_WITHIN = 60.0


class LocalCluster:
    """etcd plus node and router processes in a throwaway directory."""

    def __init__(self, replicas: int) -> None:
        self.replicas = replicas
        self.base = Path(tempfile.mkdtemp(prefix=f"abode-bench-r{replicas}-"))
        self.etcd: EtcdProcess | None = None
        self.nodes: dict[str, Child] = {}
        self.pids: dict[str, int] = {}
        self.routers: list[Child] = []
        self.urls: list[str] = []

    def _node_args(self, node_id: str) -> list[str]:
        assert self.etcd is not None
        return ["node", "--app", APP, "--etcd", self.etcd.url, "--id", node_id,
                "--listen", "127.0.0.1:0", "--data", str(self.base / "nodes"),
                "--replicas", str(self.replicas), "--lease-ttl", f"{LEASE_TTL:g}"]

    async def __aenter__(self) -> LocalCluster:
        for sub in ("logs", "run", "nodes"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        self.etcd = await asyncio.to_thread(start_etcd, self.base / "etcd")
        for node_id in NODES:
            self.nodes[node_id] = Child(node_id, self._node_args(node_id), self.base)
        for node_id, child in self.nodes.items():
            self.pids[node_id] = int((await child.wait_ready(READY_WITHIN))["pid"])  # type: ignore[call-overload]
        for i in range(ROUTERS):
            self.routers.append(Child(f"router-{i + 1}", [
                "router", "--app", APP, "--etcd", self.etcd.url, "--port", "0",
                "--lease-ttl", f"{LEASE_TTL:g}"], self.base))
        for router in self.routers:
            self.urls.append(str((await router.wait_ready(READY_WITHIN))["url"]))
        await self.caught_up(READY_WITHIN)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        for child in [*self.routers, *self.nodes.values()]:
            await asyncio.to_thread(child.stop)
        if self.etcd is not None:
            self.etcd.stop()
        if exc_type is None:
            shutil.rmtree(self.base, ignore_errors=True)
        else:
            print(f"  (cluster logs kept in {self.base / 'logs'})")

    async def session(self) -> EtcdSession:
        assert self.etcd is not None
        return await EtcdSession.connect(self.etcd.url, timeout=5.0)

    async def caught_up(self, within: float) -> float:
        """Wait until every node is live and waits on no peer; returns the seconds."""
        t0 = time.monotonic()
        session = await self.session()
        try:
            while True:
                snap = await session.snapshot()
                if set(snap.live) == set(NODES) and not any(
                        n.waiting for n in snap.live.values()):
                    return time.monotonic() - t0
                if time.monotonic() - t0 > within:
                    raise TimeoutError(f"cluster not caught up within {within:g} s: "
                                       f"{ {k: sorted(v.waiting) for k, v in snap.live.items()} }")
                await asyncio.sleep(0.05)
        finally:
            await session.close()

    async def homes(self, names: list[str]) -> dict[str, str]:
        """Each Counter's home when every node is live and caught up: the first node
        of its preference list."""
        session = await self.session()
        try:
            ring = Ring((await session.snapshot()).members.values())
        finally:
            await session.close()
        return {n: ring.preference_list(
            ids.ring_position(ids.id_from_name("Counter", n).raw), self.replicas)[0]
            for n in names}

    def kill(self, node_id: str) -> None:
        child = self.nodes[node_id]
        child.proc.kill()
        child.proc.wait(10)

    async def restart(self, node_id: str) -> None:
        child = Child(node_id, self._node_args(node_id), self.base)
        self.nodes[node_id] = child
        self.pids[node_id] = int((await child.wait_ready(READY_WITHIN))["pid"])  # type: ignore[call-overload]


async def main(opts: argparse.Namespace) -> bool:
    print(f"replication: {len(NODES)} nodes, {ROUTERS} routers, etcd, lease TTL {LEASE_TTL:g} s, "
          f"{APP} Counter; {opts.clients} clients, {opts.seconds:g} s per phase")
    rows: dict[int, tuple[Result, Result]] = {}
    passed = True
    failover: list[float] = []
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=opts.clients + 16),
        timeout=aiohttp.ClientTimeout(total=30),
    ) as http:
        for replicas in (1, 2, 3):
            print(f"\n-- replicas = {replicas}: starting the cluster", flush=True)
            async with LocalCluster(replicas) as cluster:
                print(f"  routers at {', '.join(cluster.urls)}", flush=True)
                hot, spread, ok = await _throughput(http, cluster, replicas, opts)
                rows[replicas] = (hot, spread)
                passed &= ok
                if replicas == 2:
                    ok, failover = await _failovers(http, cluster, opts)
                    passed &= ok
    print("\nreplicas   hot req/s  (vs 1)   p50 ms   p99 ms    spread req/s  (vs 1)   p50 ms   "
          "p99 ms")
    base_hot, base_spread = rows[1][0].rate, rows[1][1].rate
    for replicas, (hot, spread) in rows.items():
        print(f"{replicas:>8} {hot.rate:11,.0f} {hot.rate / base_hot:7.2f}x {hot.percentile(50):8.2f} "
              f"{hot.percentile(99):8.2f}   {spread.rate:12,.0f} {spread.rate / base_spread:7.2f}x "
              f"{spread.percentile(50):8.2f} {spread.percentile(99):8.2f}")
    if failover:
        print(f"\nfailover (replicas = 2, SIGKILL -> every watched object of the killed home "
              f"answers again), {len(failover)} kills: p50 {statistics.median(failover):.2f} s, "
              f"max {max(failover):.2f} s, min {min(failover):.2f} s "
              f"(lease TTL {LEASE_TTL:g} s)")
    return passed


async def _post(http: aiohttp.ClientSession, url: str) -> tuple[str, int | None]:
    async with http.post(url) as resp:
        if resp.status != 200:
            await resp.read()
            return str(resp.status), None
        return "ok", int((await resp.json())["value"])


async def _read(http: aiohttp.ClientSession, url: str, within: float = 30.0) -> int:
    deadline = time.monotonic() + within
    while True:
        async with http.get(url) as resp:
            if resp.status == 200:
                return int((await resp.json())["value"])
            await resp.read()
        if time.monotonic() > deadline:
            raise TimeoutError(f"GET {url} kept failing ({resp.status})")
        await asyncio.sleep(0.1)


async def _throughput(http: aiohttp.ClientSession, cluster: LocalCluster, replicas: int,
                      opts: argparse.Namespace) -> tuple[Result, Result, bool]:
    urls = cluster.urls
    hot_name = f"hot-r{replicas}"

    async def hot(client: int) -> str:
        return (await _post(http, f"{urls[client % len(urls)]}/Counter/{hot_name}/increment"))[0]

    hot_result = await drive("hot", hot, seconds=opts.seconds, clients=opts.clients)
    print(f"  {hot_result.summary()}", flush=True)

    keys = itertools.cycle(range(SPREAD_KEYS))
    sent: Counter[int] = Counter()

    async def spread(client: int) -> str:
        key = next(keys)
        outcome, _ = await _post(http, f"{urls[client % len(urls)]}/Counter/s{replicas}-{key}/increment")
        if outcome == "ok":
            sent[key] += 1
        return outcome

    spread_result = await drive("spread", spread, seconds=opts.seconds, clients=opts.clients)
    print(f"  {spread_result.summary()}", flush=True)

    got: dict[int, int] = {}

    async def read(key: str) -> None:
        got[int(key)] = await _read(http, f"{urls[int(key) % len(urls)]}/Counter/s{replicas}-{key}")

    await for_each([str(k) for k in range(SPREAD_KEYS)], read, clients=opts.clients)
    hot_total = await _read(http, f"{urls[0]}/Counter/{hot_name}")
    wrong = [k for k in range(SPREAD_KEYS) if got[k] != sent[k]]
    checks = [
        (hot_total == hot_result.ok,
         f"hot counter reads {hot_total:,}; {hot_result.ok:,} increments were answered 200"),
        (not wrong, f"{SPREAD_KEYS - len(wrong):,} of {SPREAD_KEYS:,} spread counters hold "
                    f"exactly their acknowledged increments"),
    ]
    for ok, what in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  replicas {replicas}: {what}")
    return hot_result, spread_result, all(ok for ok, _ in checks)


async def _failovers(http: aiohttp.ClientSession, cluster: LocalCluster,
                     opts: argparse.Namespace) -> tuple[bool, list[float]]:
    print(f"\n  failover: {KILLS} SIGKILLs of a home under load, each followed by a restart "
          f"and catch-up", flush=True)
    tag = os.urandom(2).hex()
    names = [f"fo{i}-{tag}" for i in range(60)]
    homes = await cluster.homes(names)
    acked: dict[str, list[int]] = {n: [] for n in names}
    # (sent, answered) monotonic times of each 200, per counter
    answered: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    outcomes: Counter[str] = Counter()
    stop = asyncio.Event()
    watched: list[str] = []

    async def client(index: int) -> None:
        for i in itertools.count(index):
            if stop.is_set():
                return
            # Mostly the watched objects (the victim's), so their first answer is timely.
            pool = watched if watched and i % 4 else names
            name = pool[(i // 4 + index) % len(pool)]
            url = f"{cluster.urls[i % len(cluster.urls)]}/Counter/{name}/increment"
            sent = time.monotonic()
            try:
                outcome, value = await _post(http, url)
            except (aiohttp.ClientError, TimeoutError) as exc:
                outcome, value = type(exc).__name__, None
            outcomes[outcome] += 1
            if value is not None:
                acked[name].append(value)
                answered[name].append((sent, time.monotonic()))
            elif outcome == "503":
                await asyncio.sleep(0.02)

    clients = [asyncio.create_task(client(i)) for i in range(min(opts.clients, 16))]
    times: list[float] = []
    failed = 0
    try:
        for kill in range(KILLS):
            victim = NODES[kill % len(NODES)]
            watched[:] = [n for n in names if homes[n] == victim][:WATCHED]
            await asyncio.sleep(1.0)  # steady load on the watched objects first
            killed_at = time.monotonic()
            cluster.kill(victim)
            deadline = killed_at + FAILOVER_WITHIN
            firsts: dict[str, float] = {}
            while len(firsts) < len(watched) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
                for name in watched:
                    # Sent after the kill: an answer the old home sent just before it
                    # died may still arrive after it.
                    after = [done for sent, done in answered[name] if sent > killed_at]
                    if name not in firsts and after:
                        firsts[name] = min(after) - killed_at
            if len(firsts) < len(watched):
                failed += 1
                print(f"  kill {kill + 1:>2}: {victim}: FAILED, {len(watched) - len(firsts)} "
                      f"objects did not answer within {FAILOVER_WITHIN:g} s", flush=True)
            else:
                times.append(max(firsts.values()))
                print(f"  kill {kill + 1:>2}: {victim}: its objects answer again after "
                      f"{min(firsts.values()):.2f}-{max(firsts.values()):.2f} s", flush=True)
            await cluster.restart(victim)
            caught = await cluster.caught_up(READY_WITHIN)
            print(f"           {victim} restarted and caught up in {caught:.1f} s", flush=True)
    finally:
        stop.set()
        await asyncio.gather(*clients)
    finals = {n: await _read(http, f"{cluster.urls[0]}/Counter/{n}") for n in names}
    twice = [n for n, values in acked.items() if len(values) != len(set(values))]
    lost = [n for n, values in acked.items() if values and finals[n] < max(values)]
    print(f"  outcomes: {dict(outcomes)}")
    checks = [
        (not failed, f"{KILLS - failed} of {KILLS} kills recovered within {FAILOVER_WITHIN:g} s"),
        (not twice, f"no value acknowledged twice ({len(twice)} counters with repeats)"),
        (not lost, f"every counter at or above its highest acknowledged value "
                   f"({len(lost)} below)"),
    ]
    for ok, what in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  failover: {what}")
    return all(ok for ok, _ in checks), times
