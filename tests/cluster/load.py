"""Client-side load for cluster tests: counters incremented through every router.

Each worker POSTs to ``/{namespace}/{name}`` (``Tally`` or ``Recorder``) through the routers in turn and records what
came back. An acknowledged increment (200) carries the counter's new value; a 503
means the event never ran (safe to retry); anything else is kept as an error sample.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp

from tests.harness import assert_eventually


async def wait_healthy(
    http: aiohttp.ClientSession, urls: Sequence[str], *, live: int, timeout: float = 30.0
) -> None:
    """Every router answers /_abode/health with `live` live nodes."""

    async def check() -> bool:
        for url in urls:
            async with http.get(f"{url}/_abode/health") as resp:
                if resp.status != 200 or (await resp.json())["live_nodes"] != live:
                    return False
        return True

    await assert_eventually(check, timeout=timeout, interval=0.1)


async def get_json(
    http: aiohttp.ClientSession, method: str, url: str, *, attempts_for: float = 20.0
) -> dict[str, object]:
    """One request, retried on 503 (the event never ran) within `attempts_for` s."""

    async def attempt() -> dict[str, object] | None:
        async with http.request(method, url) as resp:
            if resp.status == 503:
                return None
            assert resp.status == 200, f"{method} {url}: {resp.status} {await resp.text()}"
            body: dict[str, object] = await resp.json()
            return body

    result: dict[str, object] = await assert_eventually(attempt, timeout=attempts_for, interval=0.1)
    return result


@dataclass
class CounterLoad:
    """Increment `names` through `urls` with `workers` concurrent clients until stopped."""

    http: aiohttp.ClientSession
    urls: Sequence[str]
    names: Sequence[str]
    workers: int = 8
    namespace: str = "Tally"
    acked: dict[str, list[int]] = field(default_factory=dict)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> CounterLoad:
        for name in self.names:
            self.acked.setdefault(name, [])
        for w in range(self.workers):
            self._tasks.append(asyncio.create_task(self._work(w)))
        return self

    @property
    def ok(self) -> int:
        return self.statuses[200]

    async def _work(self, worker: int) -> None:
        names = itertools.cycle(self.names[worker::self.workers] or self.names)
        routers = itertools.cycle(range(len(self.urls)))
        for name in names:
            if self._stop.is_set():
                return
            router = self.urls[(next(routers) + worker) % len(self.urls)]
            url = f"{router}/{self.namespace}/{name}"
            try:
                async with self.http.post(url) as resp:
                    self.statuses[resp.status] += 1
                    if resp.status == 200:
                        self.acked[name].append(int((await resp.json())["value"]))
                    elif resp.status == 503:
                        await asyncio.sleep(0.05)  # a refusal: back off a little, retry
                    else:
                        self.errors.append(f"{resp.status} {name}: {await resp.text()}")
            except aiohttp.ClientError as exc:
                self.statuses[0] += 1
                self.errors.append(f"{type(exc).__name__} {name}: {exc}")

    async def until(self, ok_more: int, timeout: float = 30.0) -> None:
        """Run until `ok_more` further increments were acknowledged."""
        target = self.ok + ok_more
        await assert_eventually(lambda: self.ok >= target, timeout=timeout, interval=0.05)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    def assert_acked_unique(self) -> None:
        """Each acknowledged value of a counter came back exactly once."""
        for name, values in self.acked.items():
            dupes = [v for v, n in Counter(values).items() if n > 1]
            assert not dupes, f"{name}: values acknowledged twice: {dupes[:10]}"
