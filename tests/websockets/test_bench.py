"""bench/websockets.py at a small scale: its measurement runs and its checks pass."""

from __future__ import annotations

import pytest

from bench import websockets

pytestmark = pytest.mark.timeout(60)


async def test_hibernated_sockets_bench_runs_small():
    assert await websockets.measure(rooms=10, per_room=5, sample=5, quiet=True)
