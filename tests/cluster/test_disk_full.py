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


async def test_with_replicas_a_full_node_steps_out_and_its_copies_serve(
    small_disk: Path, cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    """With --replicas 2 a node whose disk fills leaves liveness: its objects move to
    their other copy and homes stop waiting for it as a replica; once it has space it
    rejoins and catches up. No acknowledged write is lost across both changes."""
    cluster.start_node("n1", replicas=2)
    cluster.start_node("n2", replicas=2, data=small_disk)
    cluster.start_router()
    router = cluster.router_urls[0]
    names = [f"replicated-disk-{i}" for i in range(8)]
    acked = dict.fromkeys(names, 0)
    uncertain = dict.fromkeys(names, 0)  # 502s: their write may or may not have landed

    async def write_all(allowed: set[int]) -> set[int]:
        statuses = set()
        for name in names:
            async with http.post(f"{router}/Tally/{name}") as r:
                status, body = r.status, await r.json(content_type=None)
            assert status in allowed, (name, status, body)
            statuses.add(status)
            if status == 200:
                # Every acknowledged write is there, each once.
                assert acked[name] < body["value"] <= acked[name] + 1 + uncertain[name], body
                acked[name], uncertain[name] = body["value"], 0
            elif status == 502:
                uncertain[name] += 1
        return statuses

    assert await write_all({200}) == {200}
    fill_filesystem(small_disk / "junk")

    async def served_without_n2() -> bool:
        statuses = await write_all({200, 502, 503})
        return statuses == {200} and "n2" not in (await cluster.info("n1")).waiting \
            and cluster.status()["n2"]["live"] == "no"

    await assert_eventually(served_without_n2, timeout=45.0, interval=0.2)
    assert "leaves liveness until its disk has space again" in cluster.logs("n2")

    os.remove(small_disk / "junk")

    async def n2_back() -> bool:
        return cluster.status()["n2"]["live"] == "yes" and not (await cluster.info("n2")).waiting

    await assert_eventually(n2_back, timeout=45.0, interval=0.2)
    assert await write_all({200}) == {200}
