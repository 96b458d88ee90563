"""A node whose disk fills (DESIGN §3: nothing fails silently): its writes answer
503 with a reason and Retry-After, the routers' health names it, and once space
returns it writes again by itself, with every acknowledged write intact.

The disk is real: a small tmpfs mounted as the node's --data, filled with a junk file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.cluster.harness import Cluster
from tests.harness import assert_eventually, fill_filesystem, small_filesystem

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with small_filesystem(tmp_path / "disk") as mount:
        yield mount


async def post(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, object], str]:
    async with http.post(url) as r:
        return r.status, await r.json(content_type=None), r.headers.get("Retry-After", "")


async def test_a_full_disk_answers_503_says_so_and_resumes_by_itself(
    small_disk: Path, cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    cluster.start_node("n1", data=small_disk)
    cluster.start_router()
    router = cluster.router_urls[0]
    url = f"{router}/Tally/disk-full-counter"
    acked = 0
    for expected in range(1, 6):
        status, body, _ = await post(http, url)
        assert (status, body["value"]) == (200, expected), body
        acked = expected

    junk = small_disk / "junk"
    fill_filesystem(junk)
    # Small writes still fit in the last page the log already has; the first that
    # needs a new one fails (each POST appends a few dozen bytes).
    for _ in range(1000):
        status, body, retry_after = await post(http, url)
        if status != 200:
            break
        assert body["value"] == acked + 1, body
        acked += 1
    assert status == 503, body
    assert "disk is full" in str(body["error"]), body
    assert float(retry_after) > 0

    async def health_names_it() -> dict[str, object] | None:
        async with http.get(f"{router}/_abode/health") as r:
            state = await r.json(content_type=None)
        return state if "n1" in state.get("disk_full", {}) else None

    await assert_eventually(health_names_it, timeout=15.0)
    status, body, _ = await post(http, url)  # still full: still refused, not a 500
    assert status == 503, body

    os.remove(junk)

    async def writes_again() -> dict[str, object] | None:
        status, body, _ = await post(http, url)
        return body if status == 200 else None

    body = await assert_eventually(writes_again, timeout=20.0)
    # Every acknowledged write is there; none of the refused ones is.
    assert body["value"] == acked + 1, body
    async with http.get(url) as r:
        assert (await r.json(content_type=None))["value"] == acked + 1

    async def health_is_clear() -> bool:
        async with http.get(f"{router}/_abode/health") as r:
            return r.status == 200 and "disk_full" not in await r.json(content_type=None)

    await assert_eventually(health_is_clear, timeout=15.0)
    assert "disk full" in cluster.logs("n1") and "writes resume" in cluster.logs("n1")
