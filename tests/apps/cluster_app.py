"""Objects for the cluster tests (tests/cluster): each answer says which process ran it.

Every response carries ``pid`` (the node process that executed the event), so a test
can tell the home node from a node that only forwarded. ``Recorder`` also appends
``start``/``end`` lines to a file per process under ``$ABODE_TEST_RECORD_DIR``, so a
test can check afterwards that no two processes ever executed one object at once.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from abode import DurableObject, Request, Response

TICKETS = 100


def _record(line: str) -> None:
    directory = os.environ.get("ABODE_TEST_RECORD_DIR")
    if not directory:
        return
    # One file per process, opened for append: lines of different events never mix.
    with open(os.path.join(directory, f"{os.getpid()}.log"), "a") as f:
        f.write(line + "\n")
        f.flush()


class Tally(DurableObject):
    """A counter: POST adds one and returns the new value; GET reads it.

    ``?hold=PATH`` keeps the event running (after its write) until the file PATH
    exists, and announces it started by creating ``PATH.started``: a test can then
    change the cluster while the event is in flight.
    """

    async def fetch(self, request: Request) -> Response:
        value = await self.ctx.storage.get("value", 0)
        if request.method == "POST":
            value += 1
            await self.ctx.storage.put("value", value)
        hold = request.query.get("hold")
        if hold:
            Path(hold + ".started").touch()
            deadline = time.monotonic() + 60
            while not os.path.exists(hold) and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        return Response.json({"value": value, "pid": os.getpid()})

    async def where(self) -> int:
        return os.getpid()

    async def fill(self, keys: int) -> int:
        """Store `keys` more keys in one event (objects big enough to span chunks)."""
        for start in range(0, keys, 100):  # put() takes at most 128 keys per call
            await self.ctx.storage.put({f"k{i:05d}": i for i in range(start, min(keys, start + 100))})
        return len(await self.ctx.storage.list(prefix="k"))

    async def keys(self) -> tuple[int, int, int]:
        """(number of k-keys, sum of their values, pid)."""
        stored = await self.ctx.storage.list(prefix="k")
        return len(stored), sum(stored.values()), os.getpid()


class Tickets(DurableObject):
    """A sale of 100 tickets: POST buys one (409 once sold out); GET reads what is left."""

    async def fetch(self, request: Request) -> Response:
        left = await self.ctx.storage.get("left", TICKETS)
        if request.method == "GET":
            return Response.json({"left": left, "pid": os.getpid()})
        if left == 0:
            return Response.json({"sold_out": True}, status=409)
        await self.ctx.storage.put("left", left - 1)
        return Response.json({"ticket": TICKETS - left + 1, "pid": os.getpid()})


class Recorder(DurableObject):
    """Counts events and records when each ran, in which process and activation."""

    def __init__(self, ctx: Any, env: Any) -> None:
        super().__init__(ctx, env)
        self.activation = os.urandom(4).hex()

    async def fetch(self, request: Request) -> Response:
        oid = self.ctx.id.hex
        pid = os.getpid()
        _record(f"start {oid} {pid} {self.activation} {time.time():.6f}")
        try:
            value = await self.ctx.storage.get("value", 0) + 1
            await self.ctx.storage.put("value", value)
            # Stay inside the event a little, so overlapping executions would show.
            await asyncio.sleep(float(request.query.get("sleep", "0.005")))
        finally:
            _record(f"end {oid} {pid} {self.activation} {time.time():.6f}")
        return Response.json({"value": value, "pid": pid})
