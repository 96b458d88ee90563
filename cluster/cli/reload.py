"""``abode dev`` reloads the app when one of its files changes.

A save under the app's folder (the file app's folder, or the package a module app
belongs to) imports the app afresh. If that fails (a syntax error, a missing import),
the error is printed and the old app keeps serving. If it loads, the running node and
router stop (client WebSockets close with 1012, "service restart", so clients
reconnect; the node flushes and closes RocksDB) and a new pair starts on the same
ports with the new code: data stays, objects start cold.

Restarting the pair in-process, rather than the process, keeps a reload well under a
second: nothing but the app is imported again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import watchfiles

from abode.cluster.app import AppError, load_app, module_name_of_file
from abode.cluster.cli.dev import DevConfig
from abode.cluster.sockets import SERVICE_RESTART
from abode.cluster.user_code import is_user_file
from abode.router import RouterServer

log = logging.getLogger(__name__)

RunDev = Callable[
    [DevConfig, asyncio.Event, Callable[[RouterServer, dict[str, object]], None]],
    Awaitable[None],
]
DEBOUNCE_MS = 50  # an editor's save is a burst of events (write, rename, chmod)


class AppFiles:
    """The folders an app's modules live in, and a fresh import of the app."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.roots = self._roots()

    def _roots(self) -> list[str]:
        if self.spec.endswith(".py") or os.sep in self.spec:
            return [os.path.dirname(os.path.realpath(self.spec))]
        top = sys.modules[self.spec.split(".")[0]]  # imported by the first load
        paths = list(getattr(top, "__path__", []))  # a package: every folder of it
        if not paths and getattr(top, "__file__", None):
            paths = [os.path.dirname(str(top.__file__))]
        return [os.path.realpath(p) for p in paths]

    def owns(self, path: str) -> bool:
        real = os.path.realpath(path)
        return any(real.startswith(root + os.sep) for root in self.roots) and is_user_file(real)

    def load_fresh(self) -> None:
        """Forget the app's modules, import it again (AppError if it does not load).
        The running app keeps the module objects it has."""
        for name, module in list(sys.modules.items()):
            file = getattr(module, "__file__", None)
            if file and self.owns(file):
                del sys.modules[name]
        if self.spec.endswith(".py") or os.sep in self.spec:
            sys.modules.pop(module_name_of_file(os.path.abspath(self.spec)), None)
        load_app(self.spec)  # run_dev's own load_app finds these fresh modules


class _Incarnation:
    """One node and router pair, serving one version of the app."""

    def __init__(self, run: RunDev, cfg: DevConfig) -> None:
        self.stop = asyncio.Event()
        self.ready: asyncio.Future[tuple[RouterServer, dict[str, object]]] = (
            asyncio.get_running_loop().create_future()
        )
        self.task = asyncio.ensure_future(run(cfg, self.stop, self._started))

    def _started(self, router: RouterServer, info: dict[str, object]) -> None:
        if not self.ready.done():
            self.ready.set_result((router, info))

    async def wait_ready(self) -> tuple[RouterServer, dict[str, object]]:
        waiting: set[asyncio.Future[object]] = {self.ready, self.task}  # type: ignore[arg-type]
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if not self.ready.done():
            self.task.result()  # it ended before serving: its error
            raise RuntimeError("abode dev stopped before it served")
        return self.ready.result()

    async def close(self, code: int | None = None) -> None:
        if code is not None and self.ready.done():
            router, _ = self.ready.result()
            await router.hub.close_all(code=code, reason="app reloading")
        self.stop.set()
        await self.task


async def run_reloading(cfg: DevConfig, stop: asyncio.Event, run: RunDev) -> None:
    """``run`` (``run_dev``) until ``stop``, again with fresh code on every change."""
    load_app(cfg.app)  # an app that does not load at start is fatal (exit 2)
    files = AppFiles(cfg.app)
    current = _Incarnation(run, cfg)
    _, info = await current.wait_ready()
    # The next incarnations bind what the first one got (its ports may have been 0).
    cfg = dataclasses.replace(cfg, port=int(str(info["port"])), metrics_port=(
        int(str(info["metrics_port"])) if cfg.metrics_port is not None else None))
    print(f"abode dev: reloading on changes in {', '.join(files.roots)}", flush=True)
    async with _changes(files, Path(cfg.data)) as changed:
        while True:
            stopping = asyncio.ensure_future(stop.wait())
            change = asyncio.ensure_future(changed.get())
            try:
                await asyncio.wait({stopping, change, current.task},
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
                change.cancel()
            if current.task.done():
                current.task.result()  # it failed on its own: that error ends dev
                return
            if stop.is_set():
                await current.close()
                return
            if not change.cancelled() and change.done():
                current = await _reload(files, run, cfg, current, change.result())


async def _reload(files: AppFiles, run: RunDev, cfg: DevConfig, current: _Incarnation,
                  paths: set[str]) -> _Incarnation:
    t0 = time.perf_counter()
    shown = ", ".join(sorted(_short(p) for p in paths)[:3])
    try:
        files.load_fresh()
    except AppError as exc:
        print(f"abode dev: {shown} changed, but the app does not load; still serving the "
              f"previous version: {exc}", file=sys.stderr, flush=True)
        return current
    await current.close(SERVICE_RESTART)
    fresh = _Incarnation(run, cfg)
    await fresh.wait_ready()
    print(f"abode dev: {shown} changed; reloaded in {(time.perf_counter() - t0) * 1000:.0f} ms",
          flush=True)
    return fresh


def _short(path: str) -> str:
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


@contextlib.asynccontextmanager
async def _changes(files: AppFiles, data: Path) -> AsyncIterator[asyncio.Queue[set[str]]]:
    """A queue of sets of changed app files, fed while the context is open."""
    queue: asyncio.Queue[set[str]] = asyncio.Queue(maxsize=16)
    done = asyncio.Event()
    ignore = [str(data.resolve())]

    async def watch() -> None:
        try:
            async for changes in watchfiles.awatch(
                *files.roots, watch_filter=watchfiles.PythonFilter(ignore_paths=ignore),
                debounce=DEBOUNCE_MS, step=DEBOUNCE_MS, stop_event=done,
            ):
                paths = {path for _, path in changes if files.owns(path)}
                if paths:
                    while queue.full():
                        paths |= queue.get_nowait()  # one reload covers every change
                    queue.put_nowait(paths)
        except Exception as exc:  # e.g. out of inotify watches: serve on, unreloaded
            print(f"abode dev: not watching the app's files any more: {exc}",
                  file=sys.stderr, flush=True)

    task = asyncio.ensure_future(watch())
    try:
        yield queue
    finally:
        done.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
