"""Retrying until done: the one loop behind handoff pulls, catch-up and lease renewal."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

T = TypeVar("T")


def describe(exc: BaseException) -> str:
    """One line for a failure, with a gRPC error's status code and details."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return f"{type(exc).__name__}: {exc}"


async def until_done(
    attempt: Callable[[], Awaitable[T]],
    *,
    what: str,
    log: logging.Logger,
    level: int = logging.WARNING,
    first_delay: float = 0.1,
    max_delay: float = 2.0,
) -> T:
    """Await ``attempt()`` until it returns, sleeping (doubling, capped) between tries.

    Every failure is logged as "<what> failed (<reason>); retrying"; cancellation
    ends the loop. The caller bounds it by cancelling the task it runs in.
    """
    delay = first_delay
    while True:
        try:
            return await attempt()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.log(level, "%s failed (%s); retrying", what, describe(exc))
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)
