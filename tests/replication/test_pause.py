"""A home paused past its lease (SIGSTOP, then SIGCONT) commits and answers nothing
stale (DESIGN §3, "Changes under load"; node._ownership, fencing tickets).

While the node is stopped its lease lapses and its replica becomes the objects' home
and takes writes. When it resumes it fences itself, takes a new lease, catches up and
is home again within seconds. An event that read an object before the pause and
ends after the node is home again must not commit (what it read is stale), and
events queued meanwhile run on a fresh instance that reads storage again.

Real etcd and real node/router processes, ``--replicas 2``, the default TTL of 3 s;
load applies operations with unique ids through both routers (an operation ledger).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import aiohttp
import pytest

from tests.cluster.harness import Cluster
from tests.harness import assert_eventually
from tests.replication.helpers import (
    AMBIGUOUS_STATUSES,
    OpLoad,
    check_ledger,
    get_json,
    read_ledgers,
    snapshot,
    wait_caught_up,
    wait_healthy,
)

pytestmark = pytest.mark.timeout(180)

NODES = ("n1", "n2", "n3")
TTL = 3.0
# Longer than the pause (a lease TTL, until the replica answers as home) plus the
# node's return (new lease, catch-up): the event ends with its node home again.
HOLD_MS = 9000


@pytest.fixture
def lease_ttl() -> float:
    return TTL


async def home_pid(http: aiohttp.ClientSession, url: str, name: str) -> int:
    return int((await get_json(http, f"{url}/Ledger/{name}"))["pid"])


async def post_op(load: OpLoad, url: str, name: str, op: str, hold_ms: int = 0) -> int:
    """One operation, filed in `load`'s books like the load's own; returns its status
    (0: no answer)."""
    sent = time.monotonic()
    try:
        async with load.http.post(
            f"{url}/Ledger/{name}", params={"op": op, "hold_ms": str(hold_ms)},
            timeout=aiohttp.ClientTimeout(total=hold_ms / 1000 + 15),
        ) as resp:
            text = await resp.text()
            if resp.status == 200:
                body = await resp.json()
                load.answered_at[op] = time.monotonic()
                load.acked_by[op] = int(body["pid"])
                load.acked[op] = (name, int(body["value"]), sent)
            elif resp.status == 503:
                load.refused[op] = name
            elif resp.status in AMBIGUOUS_STATUSES:
                load.ambiguous[op] = (name, f"{resp.status} {text[:200]}")
            else:
                load.definite[op] = (name, f"{resp.status} {text[:200]}")
            return resp.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        load.ambiguous[op] = (name, f"{type(exc).__name__}: {exc}")
        return 0


async def get_held(http: aiohttp.ClientSession, url: str, name: str,
                   op: str) -> tuple[int, int | None]:
    """A read of the counter that holds the object for HOLD_MS before answering."""
    async with http.get(f"{url}/Ledger/{name}", params={"op": op, "hold_ms": str(HOLD_MS)},
                        timeout=aiohttp.ClientTimeout(total=HOLD_MS / 1000 + 15)) as resp:
        return resp.status, int((await resp.json())["value"]) if resp.status == 200 else None


async def test_a_home_paused_past_its_lease_commits_and_answers_nothing_stale(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    cluster.start_nodes(*NODES, replicas=2)
    cluster.start_routers(2)
    urls = cluster.router_urls
    await wait_healthy(http, urls, live=3)
    await wait_caught_up(cluster, NODES)
    tag = os.urandom(3).hex()
    names = [f"hot-{tag}"] + [f"cold{i}-{tag}" for i in range(8)]
    hot = names[0]
    pid = await home_pid(http, urls[0], hot)
    victim = cluster.node_by_pid(pid)
    load = OpLoad(http, urls, names).start()
    held, read = f"held-{tag}", f"read-{tag}"
    # Another object of the same home, for a read held across the pause.
    readers = (f"reader{i}-{tag}" for i in range(60))

    async def homed_there() -> str | None:
        name = next(readers)
        return name if await home_pid(http, urls[0], name) == pid else None

    reader = await assert_eventually(homed_there, timeout=30, interval=0)
    try:
        await load.until(200)
        # Events that read a counter, then hold across the pause: one writes, one answers.
        holding = asyncio.create_task(post_op(load, urls[1], hot, held, HOLD_MS))
        reading = asyncio.create_task(get_held(http, urls[0], reader, read))
        for op in (held, read):
            marker = cluster.records / f"hold-{op}"
            await assert_eventually(marker.exists, timeout=15)
            assert int(marker.read_text()) == pid, "the held events run on the objects' home"
        paused_at = time.monotonic()
        cluster[victim].send(signal.SIGSTOP)
        try:
            async def lapsed() -> bool:
                return victim not in (await snapshot(cluster)).live

            await assert_eventually(lapsed, timeout=TTL + 10, interval=0.1)

            # The replica is home now and takes writes the paused node never sees. (The
            # load's clients may all be waiting on the paused node: write directly.)
            ops = (f"during-{tag}-{i}" for i in range(1000))

            async def new_home_writes(name: str) -> bool:
                op = next(ops)
                return await post_op(load, urls[0], name, op) == 200 and load.acked_by[op] != pid

            await assert_eventually(lambda: new_home_writes(hot), timeout=20)
            await assert_eventually(lambda: new_home_writes(reader), timeout=20)
        finally:
            resumed_at = time.monotonic()
            cluster[victim].send(signal.SIGCONT)
        print(f"\n{victim} paused {resumed_at - paused_at:.2f} s (lease TTL {TTL:g} s)")

        async def home_again() -> bool:
            return await home_pid(http, urls[0], hot) == pid

        await wait_caught_up(cluster, NODES, timeout=60)
        await assert_eventually(home_again, timeout=30, interval=0.1)
        back = time.monotonic() - resumed_at
        print(f"{victim} is the hot object's home again {back:.2f} s after SIGCONT")
        status = await holding
        print(f"the event held across the pause ended with {status}")
        # It read the counter before the pause: committing would overwrite the writes
        # the replica took meanwhile.
        assert held not in load.acked, f"a stale event committed: {load.acked[held]}"
        status, seen = await reading
        newest = max(v for op, (n, v, _) in load.acked.items() if n == reader)
        print(f"the read held across the pause ended with {status} {seen} (the replica, "
              f"home meanwhile, wrote up to {newest})")
        assert status != 200 or (seen is not None and seen >= newest), "a stale read answered"
        await load.until(200)
    finally:
        await load.stop()
    print(load.summary())
    finals = await read_ledgers(http, urls[0], names)
    check_ledger(load, finals)
    assert held not in finals[hot]["ops"]

    # Nothing from the paused node while it was not home: each value it acknowledged
    # comes before every write the replica took as home meanwhile (committed before
    # the pause) or after all of them (once it was home again).
    for name in names:
        theirs = [v for op, (n, v, _) in load.acked.items()
                  if n == name and load.acked_by[op] != pid and paused_at < load.answered_at[op]
                  < resumed_at]
        if not theirs:
            continue
        inside = [(op, v) for op, (n, v, _) in load.acked.items()
                  if n == name and load.acked_by[op] == pid and min(theirs) <= v <= max(theirs)]
        assert not inside, f"{name}: the paused node acknowledged writes while its " \
                           f"replica was home ({min(theirs)}..{max(theirs)}): {inside[:5]}"
