"""One log line per request: method, path, status, duration and the objects it reached.

    GET /Counter/clicks/increment 200 2.9 ms Counter/clicks

The objects are what the request's edge function or default routing invoked (none: a
``-``), recorded by the transport wrapper below while the request is handled. The lines go
to the ``abode.access`` logger at INFO; ``abode``'s command decides who shows them (``abode
dev`` does by default).
"""

from __future__ import annotations

import logging
import time as _time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from abode.cluster.invocation import Invocation, Outcome, Transport

ACCESS_LOG = logging.getLogger("abode.access")

# The objects the request being handled has invoked so far (None: not in a request).
# A list shared by reference: tasks the edge function starts add to the same one.
_reached: ContextVar[list[str] | None] = ContextVar("abode_reached", default=None)
# When the request's handling started (perf_counter): aiohttp's own clock is the
# loop's, in whole milliseconds under uvloop.
_started: ContextVar[float | None] = ContextVar("abode_started", default=None)
_SHOWN = 3  # objects named on one line; more are counted


class RecordingTransport:
    """A transport that notes each object a request invokes, then delivers as ``inner``."""

    def __init__(self, inner: Transport) -> None:
        self._inner = inner

    async def invoke(self, inv: Invocation) -> Outcome:
        reached = _reached.get()
        if reached is not None:
            label = f"{inv.namespace}/{inv.object_name or inv.object_id.hex()[:16]}"
            if label not in reached:
                reached.append(label)
        return await self._inner.invoke(inv)


@web.middleware
async def record_objects(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    # Not reset afterwards: aiohttp logs the request later in the same task (one task
    # per request), and the logger reads the list from there.
    _reached.set([])
    _started.set(_time.perf_counter())
    return await handler(request)


class AccessLogger(AbstractAccessLogger):
    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        reached = _reached.get() or []
        started = _started.get()
        if started is not None:
            time = _time.perf_counter() - started
        objects = ", ".join(reached[:_SHOWN]) or "-"
        if len(reached) > _SHOWN:
            objects += f" (+{len(reached) - _SHOWN})"
        self.logger.info("%s %s %d %s %s", request.method, request.path_qs, response.status,
                         _duration(time), objects)

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


def _duration(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 10 else f"{seconds:.1f} s"
