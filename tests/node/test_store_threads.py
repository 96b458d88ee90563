"""Where the store's long reads run (node/_store.py): a walk of the whole keyspace
runs on the scan thread, never on the event loop, and a closing store cuts it short
instead of waiting for it."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from abode.node._store import DATA, Batch, Store, StoreClosing

KEYS = 5000


def fill(store: Store) -> None:
    batches = [Batch(i.to_bytes(32, "big"), 1, "Ns",
                     puts=[(i.to_bytes(32, "big") + DATA + b"k", b"v" * 10)])
               for i in range(KEYS)]
    store.write(batches)


async def test_a_walk_runs_on_the_scan_thread(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "db"), term=lambda: 0, sync=False)
    try:
        fill(store)
        threads: list[int] = []

        def count(keys: Iterator[tuple[bytes, bytes]]) -> int:
            threads.append(threading.get_ident())
            return sum(1 for _ in keys)

        assert await store.walk(count) == KEYS
        assert threads and threads[0] != threading.get_ident()
    finally:
        store.close()


async def test_closing_the_store_cuts_a_walk_short(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "db"), term=lambda: 0, sync=False)
    fill(store)
    started = threading.Event()

    def slow(keys: Iterator[tuple[bytes, bytes]]) -> int:
        n = 0
        for _ in keys:
            started.set()
            time.sleep(0.001)  # a walk of a large store: far longer than the test
            n += 1
        return n

    walk = store.walk(slow)
    assert await asyncio.to_thread(started.wait, 10.0)
    store.close()
    with pytest.raises(StoreClosing):  # it stopped at a chunk, not at the last key
        await walk
