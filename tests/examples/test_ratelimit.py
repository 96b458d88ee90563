"""examples/ratelimit.py: a fixed window per client, closed by the object's alarm."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from tests.examples.helpers import call, rpc
from tests.harness import assert_eventually


async def hit(http, url):
    async with http.post(url) as resp:
        return resp.status, await resp.json(), resp.headers.get("Retry-After")


async def test_allows_exactly_the_limit_under_concurrency(app, http):
    # A window far longer than the test, so it cannot end mid-burst.
    url = f"{app.url}/RateLimiter/burst?limit=10&window=60"
    results = await asyncio.gather(*(hit(http, url) for _ in range(40)))
    assert Counter(status for status, _, _ in results) == {200: 10, 429: 30}
    remaining = sorted(body["remaining"] for status, body, _ in results if status == 200)
    assert remaining == list(range(10))
    for status, body, retry_after in results:
        if status == 429:
            assert body["allowed"] is False and 0 < body["retry_after"] <= 60
            assert retry_after is not None and 1 <= int(retry_after) <= 60
    # Another client has a window of its own.
    status, body, _ = await hit(http, f"{app.url}/RateLimiter/other?limit=10&window=60")
    assert (status, body) == (200, {"allowed": True, "remaining": 9})


async def test_the_alarm_closes_the_window_and_the_limit_applies_again(app, http):
    url = f"{app.url}/RateLimiter/steady?limit=3&window=1"
    status_url = f"{app.url}/RateLimiter/steady/status"
    started = time.time() * 1000
    for remaining in (2, 1, 0):
        assert (await hit(http, url))[:2] == (200, {"allowed": True, "remaining": remaining})
    status, body, retry_after = await hit(http, url)
    assert (status, retry_after) == (429, "1")
    _, state = await call(http, "GET", status_url)
    assert state["count"] == 3
    assert state["alarm"] == state["window_end"]
    assert started + 1000 <= state["window_end"] <= time.time() * 1000 + 1000

    # With no request in between, the alarm alone resets the window.
    async def reset():
        _, s = await call(http, "GET", status_url)
        return s == {"count": 0, "window_end": None, "alarm": None}

    await assert_eventually(reset, timeout=8)
    assert time.time() * 1000 >= state["window_end"]  # not before the window's end
    for remaining in (2, 1, 0):
        assert (await hit(http, url))[:2] == (200, {"allowed": True, "remaining": remaining})
    assert (await hit(http, url))[0] == 429


async def test_rpc_and_bad_parameters(app, http):
    assert await rpc(http, app.url, "RateLimiter/api/hit", 2, 60.0) == {
        "allowed": True, "remaining": 1}
    assert await rpc(http, app.url, "RateLimiter/api/hit", 2, 60.0) == {
        "allowed": True, "remaining": 0}
    verdict = await rpc(http, app.url, "RateLimiter/api/hit", 2, 60.0)
    assert verdict["allowed"] is False and verdict["remaining"] == 0
    for query in ("limit=0", "limit=x", "window=0", "window=nan", "window=1e9"):
        status, body, _ = await hit(http, f"{app.url}/RateLimiter/bad?{query}")
        assert status == 400 and "error" in body, query


async def test_the_alarm_wakes_an_evicted_limiter(dev_factory, http):
    # Objects idle for 0.1 s are evicted, long before the 1.5 s window ends: the
    # alarm must activate the object again to close the window.
    dev = dev_factory("tests.examples.rpc_app", "--idle-timeout", "0.1")
    url = f"{dev.url}/RateLimiter/sleepy?limit=1&window=1.5"
    assert (await hit(http, url))[0] == 200
    assert (await hit(http, url))[0] == 429

    async def allowed_again():
        return (await hit(http, url))[0] == 200

    await assert_eventually(allowed_again, timeout=10, interval=0.2)


async def test_a_window_survives_a_crash_and_its_alarm_still_fires(app, http):
    url = f"{app.url}/RateLimiter/crashy?limit=2&window=3"
    assert (await hit(http, url))[0] == 200
    assert (await hit(http, url))[0] == 200
    app.restart()  # SIGKILL and start again on the same data
    url = f"{app.url}/RateLimiter/crashy?limit=2&window=3"
    assert (await hit(http, url))[0] == 429  # the count was durable
    status_url = f"{app.url}/RateLimiter/crashy/status"

    async def reset():
        return (await call(http, "GET", status_url))[1]["count"] == 0

    await assert_eventually(reset, timeout=10)
    assert (await hit(http, url))[:2] == (200, {"allowed": True, "remaining": 1})
