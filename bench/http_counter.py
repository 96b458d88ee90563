"""HTTP against Counter objects through ``abode dev examples.app``.

- hot:    every client POSTs /Counter/hot/increment: one object, so one mailbox,
          one event at a time; measures the per-object ceiling.
- spread: each request increments one of 10,000 counters: many objects at once
          (and, the first time each is touched, an activation).

Then the check: every counter read back through GET must hold exactly the number
of increments that were answered 200. A lost or doubled write fails the bench.
"""

from __future__ import annotations

import argparse
import itertools
import time

import aiohttp

from bench.load import Result, drive, for_each
from bench.server import DevServer

APP = "examples.app"
SPREAD_KEYS = 10_000


async def main(opts: argparse.Namespace) -> bool:
    print(f"http_counter: abode dev {APP}; {opts.clients} clients, {opts.seconds:g} s per phase")
    async with DevServer(APP) as server, aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=opts.clients),
        timeout=aiohttp.ClientTimeout(total=60),
    ) as http:
        print(f"  server at {server.url}")
        base = server.url
        hot_before = await _read(http, f"{base}/Counter/hot")

        async def hot(_client: int) -> str:
            return await _post(http, f"{base}/Counter/hot/increment")

        hot_result = await drive("hot", hot, seconds=opts.seconds, clients=opts.clients)

        # Each request takes the next key, so all 10,000 get used (round-robin).
        keys = itertools.cycle(range(SPREAD_KEYS))
        sent: dict[int, int] = {}

        async def spread(_client: int) -> str:
            key = next(keys)
            outcome = await _post(http, f"{base}/Counter/spread-{key}/increment")
            if outcome == "ok":
                sent[key] = sent.get(key, 0) + 1
            return outcome

        spread_result = await drive("spread", spread, seconds=opts.seconds, clients=opts.clients)

        print()
        print(hot_result.summary())
        print(spread_result.summary())
        print()
        # Spread first: its objects are the ones still in memory.
        ok = await _check_spread(http, base, sent, spread_result, opts.clients)
        hot_total = await _read(http, f"{base}/Counter/hot") - hot_before
        ok &= _check("hot", hot_total, hot_result)
        return ok


async def _check_spread(
    http: aiohttp.ClientSession, base: str, sent: dict[int, int], result: Result, clients: int
) -> bool:
    """Every spread counter holds exactly the increments answered 200 for it."""
    got: dict[int, int] = {}

    async def read(key: str) -> None:
        got[int(key)] = await _read(http, f"{base}/Counter/spread-{key}")

    t0 = time.perf_counter()
    await for_each([str(k) for k in range(SPREAD_KEYS)], read, clients=clients)
    print(f"  (read back {SPREAD_KEYS:,} spread counters in {time.perf_counter() - t0:.1f} s)")
    wrong = [k for k in range(SPREAD_KEYS) if got[k] != sent.get(k, 0)]
    if wrong:
        k = wrong[0]
        print(f"  {len(wrong)} spread counters disagree, e.g. spread-{k}: "
              f"read {got[k]}, expected {sent.get(k, 0)}")
    return _check("spread", sum(got.values()), result) and not wrong


def _check(name: str, total: int, result: Result) -> bool:
    passed = total == result.ok
    verdict = "PASS" if passed else "FAIL"
    print(f"{verdict}  {name}: counters read back sum to {total:,}; {result.ok:,} increments "
          f"were answered 200")
    return passed


async def _post(http: aiohttp.ClientSession, url: str) -> str:
    async with http.post(url) as resp:
        await resp.read()
        return "ok" if resp.status == 200 else str(resp.status)


async def _read(http: aiohttp.ClientSession, url: str) -> int:
    async with http.get(url) as resp:
        resp.raise_for_status()
        return int((await resp.json())["value"])
