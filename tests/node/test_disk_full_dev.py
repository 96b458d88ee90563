"""``abode dev`` on a disk that fills: writes answer 503 with a reason, health says
so, and writing resumes by itself once space returns, acknowledged writes intact."""

from __future__ import annotations

import os
from pathlib import Path

import aiohttp
import pytest

from tests.harness import DevProcess, assert_eventually, fill_filesystem, small_filesystem
from tests.metrics.helpers import scrape

pytestmark = pytest.mark.timeout(90)


async def test_dev_on_a_full_disk_refuses_writes_and_resumes(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    with small_filesystem(tmp_path / "disk") as disk:
        dev = DevProcess("tests.apps.cluster_app", disk, "--metrics-port", "0").start()
        metrics_port = int(dev.info["metrics_port"])
        try:
            url = f"{dev.url}/Tally/dev-disk-full"
            acked = 0
            for _ in range(3):
                async with http.post(url) as r:
                    assert r.status == 200
                    acked = (await r.json())["value"]
            fill_filesystem(disk / "junk")
            for _ in range(1000):  # small writes fit the log's last page for a while
                async with http.post(url) as r:
                    status, body = r.status, await r.json(content_type=None)
                    retry_after = r.headers.get("Retry-After", "")
                if status != 200:
                    break
                acked = body["value"]
            assert status == 503 and "disk is full" in body["error"], body
            assert float(retry_after) > 0
            async with http.get(f"{dev.url}/_abode/health") as r:
                assert r.status == 200
                assert "dev" in (await r.json())["disk_full"]
            assert (await scrape(http, metrics_port)).value("abode_node_disk_full") == 1

            os.remove(disk / "junk")

            async def writes_again() -> int | None:
                async with http.post(url) as r:
                    return (await r.json())["value"] if r.status == 200 else None

            assert await assert_eventually(writes_again, timeout=20.0) == acked + 1
            async with http.get(f"{dev.url}/_abode/health") as r:
                assert "disk_full" not in await r.json()
            assert (await scrape(http, metrics_port)).value("abode_node_disk_full") == 0
        finally:
            code = dev.stop()
            assert code == 0, dev.logs()
