"""``abode dev`` reloads on save: an edit to any module of an app
package serves within a second, data stays, WebSockets close with 1012 so clients
reconnect, and an edit that does not load leaves the old app serving."""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp
import pytest

from tests.cli.helpers import write
from tests.harness import DevProcess, assert_eventually

pytestmark = pytest.mark.timeout(60)

OBJECTS = '''\
from abode import DurableObject, Request, Response

from shop.version import VERSION


class Counter(DurableObject):
    async def fetch(self, request: Request) -> Response:
        if request.path == "/ws":
            return self.ctx.accept_websocket(request)
        n = await self.ctx.storage.get("n", 0) + (request.method == "POST")
        await self.ctx.storage.put("n", n)
        return Response.json({"n": n, "version": VERSION})
'''


async def test_an_edit_reloads_the_app_keeps_data_and_closes_sockets_with_1012(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    project = tmp_path / "project"
    write(project / "shop" / "__init__.py", "from shop.objects import Counter\n")
    write(project / "shop" / "objects.py", OBJECTS)
    version = write(project / "shop" / "version.py", 'VERSION = "v1"\n')
    # A module app from the user's project folder (on PYTHONPATH, as their cwd would be).
    dev = DevProcess("shop", tmp_path / "data", env={"PYTHONPATH": str(project)}).start()
    try:
        for expected in (1, 2):
            async with http.post(f"{dev.url}/Counter/a") as r:
                assert await r.json() == {"n": expected, "version": "v1"}
        ws = await http.ws_connect(f"{dev.url}/Counter/a/ws")

        # A module the app file imports, not the app file: still the app's.
        version.write_text('VERSION = "v2"\n')
        t0 = time.monotonic()

        async def new_version() -> bool:
            async with http.get(f"{dev.url}/Counter/a") as r:
                return r.status == 200 and (await r.json())["version"] == "v2"

        await assert_eventually(new_version, timeout=10, interval=0.02)
        # Speed is measured, not asserted (a shared machine): within 1 s when quiet.
        print(f"reloaded {time.monotonic() - t0:.2f} s after the edit")
        async with http.post(f"{dev.url}/Counter/a") as r:
            assert await r.json() == {"n": 3, "version": "v2"}  # the data stayed
        msg = await ws.receive(timeout=5)
        assert (msg.type, msg.data) == (aiohttp.WSMsgType.CLOSE, 1012), (msg, dev.logs())

        # An edit that does not load: the error is printed, the old code serves on.
        objects = project / "shop" / "objects.py"
        objects.write_text(OBJECTS + "\ndef broken(:\n")
        await assert_eventually(lambda: "does not load" in dev.logs(), timeout=10)
        line = next(x for x in dev.logs().splitlines() if "does not load" in x)
        assert f"{objects}, line 14: SyntaxError" in line, line
        async with http.post(f"{dev.url}/Counter/a") as r:
            assert await r.json() == {"n": 4, "version": "v2"}
        # Fixed: it reloads again.
        objects.write_text(OBJECTS.replace('"version": VERSION', '"version": "fixed"'))

        async def fixed() -> bool:
            async with http.get(f"{dev.url}/Counter/a") as r:
                return (await r.json()) == {"n": 4, "version": "fixed"}

        await assert_eventually(fixed, timeout=10, interval=0.02)
    finally:
        dev.stop()
    assert dev.proc is not None and dev.proc.returncode == 0, dev.logs()


async def test_a_file_app_reloads_when_it_or_a_module_beside_it_changes(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    app = write(tmp_path / "app" / "app.py", '''\
from abode import DurableObject, Request, Response

from greeting import GREETING


class Hello(DurableObject):
    async def fetch(self, request: Request) -> Response:
        return Response.json({"greeting": GREETING, "from": "v1"})
''')
    helper = write(tmp_path / "app" / "greeting.py", 'GREETING = "hello"\n')
    dev = DevProcess(str(app), tmp_path / "data").start()

    async def answers(expected: dict[str, str]) -> None:
        t0 = time.monotonic()

        async def check() -> bool:
            async with http.get(f"{dev.url}/Hello/x") as r:
                return r.status == 200 and await r.json() == expected

        await assert_eventually(check, timeout=10, interval=0.02)
        # Speed is measured, not asserted (a shared machine): within 1 s when quiet.
        print(f"reloaded {time.monotonic() - t0:.2f} s after the edit")

    try:
        await answers({"greeting": "hello", "from": "v1"})
        app.write_text(app.read_text().replace('"v1"', '"v2"'))
        await answers({"greeting": "hello", "from": "v2"})
        helper.write_text('GREETING = "hi"\n')
        await answers({"greeting": "hi", "from": "v2"})
    finally:
        dev.stop()
