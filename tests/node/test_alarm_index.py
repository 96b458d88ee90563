"""The alarm scheduler's heap against the node-wide index on a real RocksDB
(node/_alarms.py): reloads, which run on every membership change, add nothing that is
already scheduled and reset no retries."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from abode.node._alarms import now_ms
from abode.testing import ObjectTestbed
from tests.harness import assert_eventually
from tests.testing.objects import Reminder


@pytest.fixture
async def tb(tmp_path: Path) -> AsyncIterator[ObjectTestbed]:
    async with ObjectTestbed(Reminder, data_dir=tmp_path, alarm_retry_base=30.0) as bed:
        yield bed


async def test_reloading_the_index_keeps_each_object_once_in_the_heap(tb: ObjectTestbed) -> None:
    names = [f"heap-{i}" for i in range(20)]
    for name in names:
        assert (await tb.get(name).fetch("/in/3600", method="POST")).status == 200
    alarms = tb.runtime.alarms
    assert alarms.queued == len(names)
    for _ in range(3):
        assert await alarms.load() == 0  # every alarm in the index is known already
    assert alarms.queued == alarms.heap_size == len(names)
    # Moving alarms supersedes entries; compaction keeps the heap near one per object.
    for _ in range(10):
        for name in names:
            await tb.get(name).fetch("/in/7200", method="POST")
    assert alarms.queued == len(names)
    assert alarms.heap_size <= 2 * len(names) + 64


async def test_a_reload_does_not_reset_an_alarm_waiting_for_its_retry(tb: ObjectTestbed) -> None:
    stub = tb.get("retrying")
    await stub.set_failing(True)
    await stub.fetch("/in/0", method="POST")
    alarms = tb.runtime.alarms

    async def retried() -> bool:
        return alarms.retried >= 1

    await assert_eventually(retried, timeout=10.0)
    assert await alarms.load() == 0
    # Its retry is 30 s away: a reload that forgot the backoff would make it due now.
    due = alarms.next_due_ms
    assert due is not None and due > now_ms() + 20_000
    assert alarms.heap_size == alarms.queued == 1
