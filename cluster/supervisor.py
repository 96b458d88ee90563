"""One supervisor per process: it owns every long-lived task (DESIGN §3).

The gRPC and HTTP servers, group commit, alarms, sweeper, lease keepalive and the
membership watch each run as a task of one ``asyncio.TaskGroup``. Such a task is
meant to run until the process stops; if one ends before that (it returns, or it
raises, a ``CancelledError`` nobody asked for included), the supervisor logs which
task ended and why, and ``wait()`` returns so the process can stop in order and exit
non-zero: its own supervisor (compose, systemd, ``abode up``) restarts it. A node
that keeps running with a dead commit loop looks healthy and answers nothing.

A clean stop cancels the tasks still running in reverse order of start, one at a
time, once; ``stop()`` twice is safe. Models: temporalio's ``Worker._run`` (wait
with FIRST_EXCEPTION, re-raise) and aiohttp's ``web_runner`` (cleanup in reverse).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Coroutine
from typing import Any, Protocol

log = logging.getLogger(__name__)

STOP_TIMEOUT = 10.0  # per task: one that ignores cancellation must not hang the exit


class SupervisedTaskEnded(RuntimeError):
    """A long-lived task ended while the process was running; the process exits."""


class Tasks(Protocol):
    """What a component asks for to run a long-lived task it cannot finish by itself."""

    def start(
        self, name: str, coro: Coroutine[Any, Any, Any], *, may_end: bool = False
    ) -> asyncio.Task[Any]: ...


class Supervisor:
    """``async with Supervisor("node n1") as sup:`` ... ``await sup.wait(stop)``.

    ``start(name, coro)`` adds a task; ``may_end=True`` marks one whose return is
    normal (a lease's keepalive ends with its lease), so only raising counts.
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self._group = asyncio.TaskGroup()
        self._entered = False
        self._tasks: list[tuple[str, asyncio.Task[Any]]] = []
        self._stopping = False
        self._stopped = False
        self._failed = asyncio.Event()
        self.failure: str | None = None  # "task X ...: reason" of the first unexpected end

    async def __aenter__(self) -> Supervisor:
        await self._group.__aenter__()
        self._entered = True
        return self

    async def __aexit__(self, et: Any, exc: Any, tb: Any) -> None:
        await self.stop()
        try:
            await self._group.__aexit__(et, exc, tb)
        except BaseExceptionGroup as group:
            # Tasks never raise into the group (``_guard`` catches), so what it holds is
            # the body's own exception (the store is locked, the port is taken): raise
            # it as itself, for the callers that catch it by type.
            if exc is not None and list(group.exceptions) == [exc]:
                raise exc from None
            raise

    @property
    def stopping(self) -> bool:
        return self._stopping

    def start(
        self, name: str, coro: Coroutine[Any, Any, Any], *, may_end: bool = False
    ) -> asyncio.Task[Any]:
        if not self._entered or self._stopped:
            coro.close()
            raise RuntimeError(f"{self.what} is not running: cannot start task {name}")
        task = self._group.create_task(self._guard(name, coro, may_end), name=name)
        self._tasks.append((name, task))
        task.add_done_callback(self._forget)
        return task

    def _forget(self, task: asyncio.Task[Any]) -> None:
        self._tasks = [(n, t) for n, t in self._tasks if t is not task]

    async def _guard(self, name: str, coro: Coroutine[Any, Any, Any], may_end: bool) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # a stop asked for it
            # A CancelledError that is not ours (say, from a future another timeout
            # cancelled) would otherwise end the task without a word.
            self._fail(name, "raised CancelledError without being cancelled", None)
        except Exception as exc:
            self._fail(name, f"raised {type(exc).__name__}: {exc}", exc)
        else:
            if not may_end:
                self._fail(name, "returned", None)

    def _fail(self, name: str, how: str, exc: BaseException | None) -> None:
        if self._stopping:
            if exc is not None:
                log.warning("task %s of %s %s while stopping", name, self.what, how)
            return
        reason = f"task {name} {how}"
        log.error("%s: %s; stopping the process", self.what, reason, exc_info=exc)
        if self.failure is None:
            self.failure = reason
        self._failed.set()

    async def wait(self, *until: Awaitable[Any]) -> None:
        """Return when one of ``until`` is done or a supervised task ended."""
        waiters = [asyncio.ensure_future(a) for a in until]
        failed = asyncio.ensure_future(self._failed.wait())
        try:
            await asyncio.wait([*waiters, failed], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in [*waiters, failed]:
                w.cancel()
            await asyncio.gather(*waiters, failed, return_exceptions=True)

    def check(self) -> None:
        """Raise ``SupervisedTaskEnded`` if a task ended unexpectedly."""
        if self.failure is not None:
            raise SupervisedTaskEnded(f"{self.what}: {self.failure}")

    def begin_stop(self) -> None:
        """From now on tasks may end: the process is stopping on purpose."""
        self._stopping = True

    async def stop(self) -> None:
        """Cancel what still runs, newest first, one at a time. Safe to call twice."""
        self._stopping = True
        if self._stopped:
            return
        self._stopped = True
        for name, task in reversed(list(self._tasks)):
            if task.done():
                continue
            task.cancel()
            done, _ = await asyncio.wait([task], timeout=STOP_TIMEOUT)
            if not done:
                log.error("task %s of %s ignored cancellation for %g s", name, self.what,
                          STOP_TIMEOUT)
