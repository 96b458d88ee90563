"""Activation and eviction through a real ``abode dev``: idle timeout and LRU (DESIGN §3)."""

from __future__ import annotations

import asyncio

import pytest

from tests.harness import assert_eventually
from tests.node.helpers import fetch_json, hex_of

APP = "tests.apps.runtime"
MAX_ACTIVE = 3


@pytest.fixture(scope="module")
def idle_dev(module_dev):
    return module_dev(APP, "--idle-timeout", "0.5")


@pytest.fixture(scope="module")
def lru_dev(module_dev):
    return module_dev(APP, "--max-active-objects", str(MAX_ACTIVE))


async def _evicted(http, dev, name: str) -> None:
    """Wait until the Box ``name`` has no live instance (asked of another object)."""

    async def gone() -> bool:
        _, body = await fetch_json(http, "GET", f"{dev.url}/Probe/probe/?hex={hex_of('Box', name)}")
        return not body["live"]

    await assert_eventually(gone, timeout=10)


async def test_idle_object_is_evicted_and_activated_again(idle_dev, http):
    base = f"{idle_dev.url}/Box/idle-1"
    assert (await fetch_json(http, "POST", f"{base}/put?key=k&value=kept"))[0] == 200
    _, first = await fetch_json(http, "GET", f"{base}/info")
    await _evicted(http, idle_dev, "idle-1")
    _, second = await fetch_json(http, "GET", f"{base}/info")
    assert second["activations"] == first["activations"] + 1
    assert second["instance"] != first["instance"]
    # Its state came back from disk.
    assert await fetch_json(http, "GET", f"{base}/get?key=k") == (200, {"value": "kept"})


async def test_object_is_not_evicted_while_its_wait_until_runs(idle_dev, http):
    base = f"{idle_dev.url}/Box/idle-task"
    _, first = await fetch_json(http, "GET", f"{base}/info")
    # The task outlives the idle timeout three times over.
    assert (await fetch_json(http, "POST", f"{base}/wait-until?sleep=1.5"))[0] == 200
    _, order = await fetch_json(http, "GET", f"{base}/order")  # queued behind the task
    assert order == {"order": ["event", "task"]}
    _, again = await fetch_json(http, "GET", f"{base}/info")
    assert again["instance"] == first["instance"]


async def test_lru_evicts_the_least_recently_used_idle_object(lru_dev, http):
    names = [f"lru-{i}" for i in range(MAX_ACTIVE + 1)]
    firsts = {}
    for name in names:  # one past the limit: the first is evicted
        _, firsts[name] = await fetch_json(http, "GET", f"{lru_dev.url}/Box/{name}/info")
    _, again = await fetch_json(http, "GET", f"{lru_dev.url}/Box/{names[0]}/info")
    assert again["activations"] == firsts[names[0]]["activations"] + 1
    # The most recently used one stayed active.
    _, last = await fetch_json(http, "GET", f"{lru_dev.url}/Box/{names[-1]}/info")
    assert last["instance"] == firsts[names[-1]]["instance"]


async def test_lru_never_evicts_busy_objects_nor_splits_a_new_one(lru_dev, http):
    """With every active object busy, a newly activated object must still be a single
    instance: two events to it run one at a time, not on two instances."""
    url = lru_dev.url
    busy = [f"busy-{i}" for i in range(MAX_ACTIVE)]
    holders = [
        asyncio.ensure_future(fetch_json(http, "POST", f"{url}/Box/{name}/slow?ms=1500"))
        for name in busy
    ]

    async def all_busy() -> bool:
        for name in busy:
            _, body = await fetch_json(http, "GET", f"{url}/Probe/probe/?hex={hex_of('Box', name)}")
            if not body["live"]:
                return False
        return True

    await assert_eventually(all_busy, timeout=10)
    results = await asyncio.gather(
        fetch_json(http, "POST", f"{url}/Box/newcomer/slow?ms=200"),
        fetch_json(http, "POST", f"{url}/Box/newcomer/slow?ms=200"),
    )
    held = await asyncio.gather(*holders)
    assert sorted(body["ran"] for _, body in results) == [1, 2], results
    assert held == [(200, {"ran": 1})] * MAX_ACTIVE
