"""Hibernated WebSockets: what an idle socket costs, and how fast a sleeping room answers.

Through ``abode dev examples.app``, ``ChatRoom`` objects (examples/chat.py):

- open 10,000 WebSockets, 10 in each of 1,000 rooms (bounded concurrency, progress
  per second), then wait until the node reports 0 active objects over its Info RPC:
  every room evicted, every socket still open (hibernation);
- memory: the dev process's VmRSS (router and node share it) before the sockets and
  after hibernation, divided by the number of sockets;
- wake + fan-out: in 200 of the sleeping rooms, one at a time, a member sends a
  message and the clock stops when all 10 members have it. The room wakes (its
  constructor runs), stores the message (an fsync'd commit before anything leaves,
  the output gate) and sends it 10 times. A second message to the same, now awake,
  room gives the warm fan-out for comparison.

The checks: every socket opens and stays open through hibernation, every member of
every sampled room receives the message exactly once, under the sender's name (which
the room reads from the socket's attachment after waking).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import grpc

from abode.cluster.rpc.v1 import node_pb2 as pb
from abode.cluster.rpc.v1 import node_pb2_grpc as pb_grpc
from bench.load import Result
from bench.server import DevServer

APP = "examples.app"
ROOMS = 1000
PER_ROOM = 10
SAMPLE = 200  # rooms woken one at a time for the latency figures
OPEN_CONCURRENCY = 100  # upgrades in flight at once
IDLE_TIMEOUT = 2.0  # seconds; the node's --idle-timeout, so rooms hibernate quickly
HIBERNATE_WITHIN = 60.0  # seconds to wait for every room to leave memory
RECEIVE_WITHIN = 10.0  # seconds for one fan-out to reach every member


@dataclass
class Member:
    """One client socket and the messages it has been waiting for."""

    ws: aiohttp.ClientWebSocketResponse
    user: str  # the name the room keeps in the socket's attachment
    waiting: dict[str, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    unexpected: int = 0


async def main(opts: argparse.Namespace) -> bool:
    return await measure(ROOMS, PER_ROOM, SAMPLE)


async def measure(rooms: int, per_room: int, sample: int, *, quiet: bool = False) -> bool:
    say: Callable[..., None] = (lambda *a, **k: None) if quiet else print
    sockets = rooms * per_room
    _raise_fd_limit(2 * sockets + 1000)  # our clients, plus the server's (inherited)
    say(f"websockets: abode dev {APP}; {sockets:,} sockets in {rooms:,} ChatRooms, "
        f"--idle-timeout {IDLE_TIMEOUT:g}")
    async with DevServer(APP, "--idle-timeout", str(IDLE_TIMEOUT)) as server, aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=60),
    ) as http:
        assert server.proc is not None
        pid = server.proc.pid
        node = _ready_info(server)["grpc"]
        say(f"  server at {server.url} (pid {pid}, node gRPC {node})")

        # Warm up first (imports, first activation, pools), so the baseline is fair.
        warm = await http.ws_connect(f"{server.url}/ChatRoom/warm-up/ws?user=warm")
        await warm.close()
        await _until(lambda: _active_objects(node), 0, HIBERNATE_WITHIN)
        rss_before = _rss_bytes(pid)

        members: dict[int, list[Member]] = {r: [] for r in range(rooms)}
        readers: list[asyncio.Task[None]] = []
        failures: list[str] = []
        opened = 0
        gate = asyncio.Semaphore(OPEN_CONCURRENCY)

        async def open_one(room: int, i: int) -> None:
            nonlocal opened
            user = f"r{room}m{i}"
            async with gate:
                try:
                    ws = await http.ws_connect(f"{server.url}/ChatRoom/bench-{room}/ws?user={user}")
                except (aiohttp.ClientError, TimeoutError) as exc:
                    failures.append(f"open bench-{room}/{i}: {type(exc).__name__}: {exc}")
                    return
            member = Member(ws, user)
            members[room].append(member)
            readers.append(asyncio.create_task(_read(member)))
            opened += 1

        t0 = time.perf_counter()
        progress = asyncio.create_task(_progress(say, lambda: opened, sockets, t0))
        try:
            await asyncio.gather(*(open_one(r, i) for i in range(per_room) for r in range(rooms)))
        finally:
            progress.cancel()
        open_seconds = time.perf_counter() - t0
        say(f"  opened {opened:,} sockets in {open_seconds:.1f} s ({opened / open_seconds:,.0f}/s)")

        t1 = time.perf_counter()
        hibernated = await _until(lambda: _active_objects(node), 0, HIBERNATE_WITHIN)
        say(f"  all rooms evicted {time.perf_counter() - t1:.1f} s later" if hibernated else
            f"  rooms still active after {HIBERNATE_WITHIN:g} s")
        rss_after = _rss_bytes(pid)
        still_open = sum(1 for ms in members.values() for m in ms if not m.ws.closed)

        cold, warm_fanout = Result("cold"), Result("warm")
        for room in range(min(sample, rooms)):
            for result, text in ((cold, f"cold-{room}"), (warm_fanout, f"warm-{room}")):
                latency = await _fan_out(members[room], text, failures)
                if latency is not None:
                    result.latencies.append(latency)
                    result.outcomes["ok"] += 1
                else:
                    result.outcomes["lost"] += 1
        unexpected = sum(m.unexpected for ms in members.values() for m in ms)

        for task in readers:
            task.cancel()
        await asyncio.gather(*readers, return_exceptions=True)

    per_socket = (rss_after - rss_before) / max(1, opened)
    say()
    say(f"  node RSS {rss_before / 2**20:,.1f} MiB before, {rss_after / 2**20:,.1f} MiB with "
        f"{still_open:,} hibernated sockets: {per_socket / 1024:,.2f} KiB per socket "
        f"(router and node in one process)")
    for result in (cold, warm_fanout):
        label = "wake + fan-out to" if result is cold else "awake, fan-out to"
        say(f"  {label} {per_room} sockets: p50 {result.percentile(50):6.2f} ms   "
            f"p99 {result.percentile(99):6.2f} ms   ({result.ok} rooms, one at a time)")
    say()
    checks = [
        (opened == sockets, f"{opened:,} of {sockets:,} sockets opened"),
        (hibernated, "every room left memory (Info: 0 active objects)"),
        (still_open == opened, f"{still_open:,} sockets open through hibernation"),
        (cold.ok == warm_fanout.ok == min(sample, rooms) and unexpected == 0,
         f"every member of {cold.ok} rooms got each message once, from its sender "
         f"({cold.outcomes['lost'] + warm_fanout.outcomes['lost']} lost, {unexpected} unexpected)"),
    ]
    for message in failures[:5]:
        say(f"  {message}")
    for passed, what in checks:
        say(f"{'PASS' if passed else 'FAIL'}  websockets: {what}")
    return all(passed for passed, _ in checks)


async def _fan_out(room: list[Member], text: str, failures: list[str]) -> float | None:
    """Send ``text`` from the room's first member; seconds until every member has it."""
    loop = asyncio.get_running_loop()
    futures = []
    for member in room:
        fut: asyncio.Future[dict[str, Any]] = loop.create_future()
        member.waiting[text] = fut
        futures.append(fut)
    sender = room[0]
    t0 = time.perf_counter()
    await sender.ws.send_str(text)
    try:
        async with asyncio.timeout(RECEIVE_WITHIN):
            got = await asyncio.gather(*futures)
    except TimeoutError:
        failures.append(f"{text}: not every member received it within {RECEIVE_WITHIN:g} s")
        return None
    finally:
        for member in room:
            member.waiting.pop(text, None)
    latency = time.perf_counter() - t0
    if any(m["user"] != sender.user for m in got):
        failures.append(f"{text}: arrived under another name than {sender.user}")
        return None
    return latency


async def _read(member: Member) -> None:
    """Everything a socket receives: the awaited messages resolve their futures."""
    async for msg in member.ws:
        if msg.type != aiohttp.WSMsgType.TEXT:
            continue
        event = json.loads(msg.data)
        if event.get("type") != "message":
            continue  # history, join and leave notices
        fut = member.waiting.get(event["text"])
        if fut is None or fut.done():
            member.unexpected += 1
        else:
            fut.set_result(event)


async def _progress(say: Callable[..., None], done: Callable[[], int], total: int, t0: float) -> None:
    while True:
        await asyncio.sleep(1.0)
        n = done()
        say(f"  opening {time.perf_counter() - t0:5.1f} s  {n:7,} / {total:,} sockets", flush=True)


async def _active_objects(address: str) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await pb_grpc.NodeStub(channel).Info(pb.InfoRequest(), timeout=5)
        return int(reply.active_objects)


async def _until(read: Callable[[], Any], want: int, within: float) -> bool:
    """Poll ``await read()`` until it equals ``want``; False if ``within`` s pass first."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await read() == want:
            return True
        await asyncio.sleep(0.25)
    return False


def _ready_info(server: DevServer) -> dict[str, Any]:
    # DevServer keeps abode dev's ready file (url, grpc, pid) in its own directory.
    return json.loads((server._dir / "ready.json").read_text())  # type: ignore[no-any-return]


def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _raise_fd_limit(want: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        target = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, target), hard))
