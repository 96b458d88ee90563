"""Alarms through a real ``abode dev``: set/get/delete, firing, retries, restarts (DESIGN §3, §5)."""

from __future__ import annotations

import pytest

from tests.harness import assert_eventually
from tests.node.helpers import fetch_json

APP = "tests.apps.runtime"
RETRY_BASE_MS = 200


@pytest.fixture(scope="module")
def dev(module_dev):
    return module_dev(APP, "--alarm-retry-base", str(RETRY_BASE_MS / 1000))


async def _state(http, base: str) -> dict:
    status, body = await fetch_json(http, "GET", f"{base}/alarm/state")
    assert status == 200, body
    return body


async def _fired(http, base: str, times: int = 1, timeout: float = 10.0) -> dict:
    async def check() -> dict | None:
        state = await _state(http, base)
        return state if state["fired"] >= times else None

    return await assert_eventually(check, timeout=timeout)


async def test_set_get_delete(dev, http):
    base = f"{dev.url}/Box/alarm-sgd"
    assert (await _state(http, base))["alarm"] is None
    _, body = await fetch_json(http, "POST", f"{base}/alarm/set?in_ms=600000")
    assert (await _state(http, base))["alarm"] == body["when"]
    await fetch_json(http, "POST", f"{base}/alarm/delete")
    assert (await _state(http, base))["alarm"] is None


async def test_alarm_fires_at_or_after_its_time_and_clears(dev, http):
    base = f"{dev.url}/Box/alarm-fires"
    _, set_ = await fetch_json(http, "POST", f"{base}/alarm/set?in_ms=300")
    state = await _fired(http, base)
    assert state["fired"] == 1
    assert state["fired_at"] >= set_["when"]
    assert state["alarm"] is None  # a successful alarm() clears it
    assert [(c["retry_count"], c["is_retry"]) for c in state["calls"]] == [(0, False)]


async def test_raising_alarm_is_retried_with_backoff(dev, http):
    base = f"{dev.url}/Box/alarm-retries"
    await fetch_json(http, "POST", f"{base}/alarm/set?in_ms=100&fail=2")
    state = await _fired(http, base)
    calls = state["calls"]
    assert [(c["retry_count"], c["is_retry"]) for c in calls] == [(0, False), (1, True), (2, True)]
    # Exponential backoff from the base: each retry waits at least base * 2**(n-1).
    assert calls[1]["at"] - calls[0]["at"] >= RETRY_BASE_MS
    assert calls[2]["at"] - calls[1]["at"] >= 2 * RETRY_BASE_MS
    # The failed tries' writes were discarded (each event is atomic).
    assert state["fired"] == 1
    assert state["alarm"] is None


async def test_deleted_alarm_does_not_fire(dev, http):
    deleted, sentinel = f"{dev.url}/Box/alarm-deleted", f"{dev.url}/Box/alarm-sentinel-1"
    await fetch_json(http, "POST", f"{deleted}/alarm/set?in_ms=300")
    await fetch_json(http, "POST", f"{deleted}/alarm/delete")
    await fetch_json(http, "POST", f"{sentinel}/alarm/set?in_ms=700")
    await _fired(http, sentinel)  # alarms fire in time order: the deleted one's time passed
    state = await _state(http, deleted)
    assert state["fired"] == 0 and state["calls"] == [] and state["alarm"] is None


async def test_alarm_moved_while_its_old_time_waits_in_the_mailbox_still_fires(dev, http):
    """The old alarm falls due while the object is busy, so its event waits in the mailbox
    behind the event that moves the alarm (to a time past when that event ends) and a
    wait_until task after it. The moved alarm must still fire."""
    base = f"{dev.url}/Box/alarm-moved"
    await fetch_json(http, "POST", f"{base}/alarm/set?in_ms=100")
    move = f"{base}/alarm/set-then-sleep?in_ms=150&sleep_ms=300&task_ms=500"
    assert (await fetch_json(http, "POST", move))[0] == 200
    state = await _fired(http, base)
    assert state["fired"] == 1 and state["alarm"] is None


async def test_alarm_set_in_a_raising_event_is_not_set(dev, http):
    failed, sentinel = f"{dev.url}/Box/alarm-in-failed", f"{dev.url}/Box/alarm-sentinel-2"
    status, _ = await fetch_json(
        http, "POST", f"{failed}/put-then-raise?key=k&value=v&alarm_in_ms=200"
    )
    assert status == 500
    assert (await _state(http, failed))["alarm"] is None
    await fetch_json(http, "POST", f"{sentinel}/alarm/set?in_ms=600")
    await _fired(http, sentinel)
    state = await _state(http, failed)
    assert state["fired"] == 0 and state["calls"] == []


async def test_alarm_set_while_activating_fires(dev, http):
    base = f"{dev.url}/Early/early-1"

    async def fired() -> bool:
        _, body = await fetch_json(http, "GET", f"{base}/")
        return body["fired"] == 1 and body["alarm"] is None

    await assert_eventually(fired, timeout=10)


async def test_pending_alarm_survives_sigkill(dev_factory, http):
    node = dev_factory(APP)
    base = f"{node.url}/Box/alarm-kill"
    status, set_ = await fetch_json(http, "POST", f"{base}/alarm/set?in_ms=1000")
    assert status == 200  # acknowledged: the alarm is durable
    node.kill()
    node.start()
    base = f"{node.url}/Box/alarm-kill"
    state = await _fired(http, base)
    assert state["fired"] == 1
    assert state["fired_at"] >= set_["when"]
    assert state["alarm"] is None


async def test_an_alarm_that_always_raises_is_dropped_after_six_retries(dev_factory, http):
    # A short base keeps the whole backoff (base * (1 + 2 + ... + 32)) near a second.
    dev = dev_factory(APP, "--alarm-retry-base", "0.02", name="retries")
    base = f"{dev.url}/Box/alarm-gives-up"
    await fetch_json(http, "POST", f"{base}/alarm/set?in_ms=50&fail=100")

    async def dropped() -> dict | None:
        state = await _state(http, base)
        return state if state["alarm"] is None else None

    state = await assert_eventually(dropped, timeout=20)
    # The first try and six retries, then the alarm is deleted; none of them succeeded.
    assert [c["retry_count"] for c in state["calls"]] == list(range(7))
    assert state["fired"] == 0
