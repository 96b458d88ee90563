"""Client-side load and checks for the replication tests.

``OpLoad`` applies operations with unique ids to ``Ledger`` objects through every
router and files each one by what its client learnt:

- acked: 200, with the counter value the operation got;
- refused: 503, the event never ran (it must not be in the final state);
- ambiguous: the connection broke, 502 (lost mid-call), 504 or a client timeout:
  it may or may not have been applied;
- definite: any other answer (it must not be in the final state either).

``check_ledger`` then compares each object's final state with that record.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from abode.cluster.membership import EtcdSession, MembershipSnapshot
from tests.cluster.harness import Cluster
from tests.harness import assert_eventually

AMBIGUOUS_STATUSES = {502, 504}
REQUEST_TIMEOUT = 15.0


async def snapshot(cluster: Cluster) -> MembershipSnapshot:
    session = await EtcdSession.connect(cluster.etcd.url, cluster.cluster, timeout=5.0)
    try:
        return await session.snapshot()
    finally:
        await session.close()


async def wait_caught_up(cluster: Cluster, nodes: Sequence[str], timeout: float = 45.0) -> float:
    """Until exactly `nodes` are live and none waits on a peer (catch-up done), read in
    etcd; returns the seconds it took."""
    t0 = time.monotonic()

    async def check() -> bool:
        snap = await snapshot(cluster)
        return set(snap.live) == set(nodes) and all(not n.waiting for n in snap.live.values())

    await assert_eventually(check, timeout=timeout, interval=0.1)
    return time.monotonic() - t0


async def wait_healthy(http: aiohttp.ClientSession, urls: Sequence[str], live: int,
                       timeout: float = 30.0) -> None:
    async def check() -> bool:
        for url in urls:
            async with http.get(f"{url}/_abode/health") as resp:
                if resp.status != 200 or (await resp.json())["live_nodes"] != live:
                    return False
        return True

    await assert_eventually(check, timeout=timeout, interval=0.1)


async def get_json(http: aiohttp.ClientSession, url: str, timeout: float = 30.0) -> Any:
    """GET, retried while the answer is not 200 (a home is moving), within `timeout`."""
    async def attempt() -> Any:
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=10)) as resp:
            if resp.status != 200:
                return None
            return await resp.json()

    return await assert_eventually(attempt, timeout=timeout, interval=0.1)


@dataclass
class OpLoad:
    """`workers` clients applying operations to `names` through `urls` until stopped."""

    http: aiohttp.ClientSession
    urls: Sequence[str]
    names: Sequence[str]
    workers: int = 8
    acked: dict[str, tuple[str, int, float]] = field(default_factory=dict)  # op -> name, value, sent
    answered_at: dict[str, float] = field(default_factory=dict)  # acked op -> when its 200 came
    acked_by: dict[str, int] = field(default_factory=dict)  # acked op -> pid of the node
    refused: dict[str, str] = field(default_factory=dict)
    ambiguous: dict[str, tuple[str, str]] = field(default_factory=dict)  # op -> name, why
    definite: dict[str, tuple[str, str]] = field(default_factory=dict)
    outcomes: Counter[str] = field(default_factory=Counter)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _tag: str = field(default_factory=lambda: os.urandom(3).hex())

    def start(self) -> OpLoad:
        for w in range(self.workers):
            self._tasks.append(asyncio.create_task(self._work(w)))
        return self

    @property
    def ok(self) -> int:
        return len(self.acked)

    def first_ack_after(self, name: str, t: float) -> float | None:
        """When the first acknowledgement came of an operation on `name` sent after
        monotonic time `t` (an answer sent before `t` may arrive after it)."""
        times = [self.answered_at[op] for op, (n, _, sent) in list(self.acked.items())
                 if n == name and sent > t]
        return min(times) if times else None

    async def _work(self, worker: int) -> None:
        # Half of every worker's operations go to the first name (the hot object).
        others = itertools.cycle(self.names[1:] or self.names)
        for seq in itertools.count():
            if self._stop.is_set():
                return
            name = self.names[0] if seq % 2 == 0 else next(others)
            url = self.urls[(seq + worker) % len(self.urls)]
            op = f"{self._tag}-{worker}-{seq}"
            sent = time.monotonic()
            try:
                async with self.http.post(
                    f"{url}/Ledger/{name}", params={"op": op},
                    timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
                ) as resp:
                    status = resp.status
                    text = await resp.text()
                    if status == 200:
                        body = await resp.json()
                        self.answered_at[op] = time.monotonic()
                        self.acked_by[op] = int(body["pid"])
                        self.acked[op] = (name, int(body["value"]), sent)
                    elif status == 503:
                        self.refused[op] = name
                    elif status in AMBIGUOUS_STATUSES:
                        self.ambiguous[op] = (name, f"{status} {text[:200]}")
                    else:
                        self.definite[op] = (name, f"{status} {text[:200]}")
                    self.outcomes[str(status)] += 1
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.ambiguous[op] = (name, f"{type(exc).__name__}: {exc}")
                self.outcomes[type(exc).__name__] += 1
            if op in self.refused:
                await asyncio.sleep(0.05)  # a refusal: back off a little

    async def until(self, more: int, timeout: float = 60.0) -> None:
        """Run until `more` further operations were acknowledged."""
        target = self.ok + more
        await assert_eventually(lambda: self.ok >= target, timeout=timeout, interval=0.05)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    def summary(self) -> str:
        return (f"acked {len(self.acked)}, refused {len(self.refused)}, ambiguous "
                f"{len(self.ambiguous)}, definite errors {len(self.definite)}; "
                f"outcomes {dict(self.outcomes)}")


async def read_ledgers(http: aiohttp.ClientSession, url: str,
                       names: Sequence[str]) -> dict[str, dict[str, Any]]:
    bodies = await asyncio.gather(*(get_json(http, f"{url}/Ledger/{n}/ops") for n in names))
    return dict(zip(names, bodies, strict=True))


def check_ledger(load: OpLoad, finals: dict[str, dict[str, Any]]) -> None:
    """Each object's final state is exactly the acknowledged operations, plus possibly
    some whose outcome was ambiguous, applied once each in one order."""
    for name, final in finals.items():
        ops: dict[str, int] = final["ops"]
        value = int(final["value"])
        # One history: the values the applied operations got are 1..value, each once.
        assert sorted(ops.values()) == list(range(1, value + 1)), (
            f"{name}: applied operations do not form one history: value {value}, "
            f"{len(ops)} operations, duplicated values "
            f"{[v for v, c in Counter(ops.values()).items() if c > 1][:10]}")
        acked = {op: v for op, (n, v, _) in load.acked.items() if n == name}
        missing = sorted(op for op in acked if op not in ops)
        assert not missing, f"{name}: {len(missing)} acknowledged operations lost: {missing[:10]}"
        wrong = {op: (v, ops[op]) for op, v in acked.items() if ops[op] != v}
        assert not wrong, f"{name}: acknowledged value differs from the stored one: " \
                          f"{list(wrong.items())[:10]}"
        assert max(acked.values(), default=0) <= value
        extra = set(ops) - set(acked)
        unexplained = sorted(op for op in extra if op not in load.ambiguous)
        assert not unexplained, (
            f"{name}: applied operations that were refused or failed definitely: "
            f"{[(op, load.refused.get(op) or load.definite.get(op)) for op in unexplained[:10]]}")
    values = Counter((n, v) for n, v, _ in load.acked.values())
    twice = [k for k, c in values.items() if c > 1]
    assert not twice, f"values acknowledged twice: {twice[:10]}"
