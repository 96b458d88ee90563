"""Closed-loop load: N clients, each sending its next request when the last one ends.

``drive`` runs the clients for a fixed time, prints a progress line per second,
and returns every latency and every outcome, so a scenario can both report speed
and check what the server claims to have done.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

# One request: returns an outcome label ("ok" for success, else e.g. "503").
Request = Callable[[int], Awaitable[str]]


@dataclass
class Result:
    name: str
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # of "ok" requests, seconds
    outcomes: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> int:
        return self.outcomes["ok"]

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        """Nearest-rank percentile of successful latencies, in milliseconds."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered)) - 1))
        return ordered[rank] * 1000

    def summary(self) -> str:
        errors = {k: v for k, v in self.outcomes.items() if k != "ok"}
        return (
            f"{self.name:<8} {self.rate:9,.0f} req/s   p50 {self.percentile(50):7.2f} ms   "
            f"p99 {self.percentile(99):7.2f} ms   ({self.ok:,} ok in {self.seconds:.1f} s"
            f"{', errors ' + str(errors) if errors else ''})"
        )


async def drive(name: str, request: Request, *, seconds: float, clients: int) -> Result:
    """Run ``clients`` loops of ``request(client_index)`` for ``seconds``."""
    result = Result(name)
    start = time.perf_counter()
    deadline = start + seconds

    async def client(index: int) -> None:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            try:
                outcome = await request(index)
            except Exception as exc:  # counted, not raised: one failure must not stop the run
                outcome = f"exception:{type(exc).__name__}"
            if outcome == "ok":
                result.latencies.append(time.perf_counter() - t0)
            result.outcomes[outcome] += 1

    async def progress() -> None:
        last_ok, last_t = 0, start
        while True:
            await asyncio.sleep(1.0)
            now = time.perf_counter()
            ok = result.ok
            errors = sum(result.outcomes.values()) - ok
            print(
                f"  {name:<8} {now - start:5.1f} s  {ok:9,} ok  {ok / (now - start):8,.0f} req/s"
                f"  (last 1 s: {(ok - last_ok) / (now - last_t):7,.0f}/s)  errors {errors}",
                flush=True,
            )
            last_ok, last_t = ok, now

    reporter = asyncio.create_task(progress())
    try:
        await asyncio.gather(*(client(i) for i in range(clients)))
    finally:
        reporter.cancel()
        await asyncio.gather(reporter, return_exceptions=True)
    # Clients finish the request in flight at the deadline; count that time too.
    result.seconds = time.perf_counter() - start
    return result


async def for_each(items: list[str], work: Callable[[str], Awaitable[None]], *, clients: int) -> None:
    """Run ``work(item)`` for every item with ``clients`` running at once."""
    queue = iter(items)

    async def worker() -> None:
        for item in queue:
            await work(item)

    await asyncio.gather(*(worker() for _ in range(clients)))
