"""Errors a developer can act on (issue 10, item 4): a line per request, the handler's
traceback with the user's file and line, one-line app load errors with exit 2, a locked
data dir reported at once."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import aiohttp
import pytest

from tests.cli.helpers import run_abode, write
from tests.harness import DevProcess, assert_eventually

pytestmark = pytest.mark.timeout(60)

BOOM = '''\
from abode import DurableObject, Request, Response


class Boom(DurableObject):
    async def fetch(self, request: Request) -> Response:
        if request.path == "/fail":
            explode()
        return Response.json({"ok": True})


def explode() -> None:
    raise RuntimeError("kaboom")
'''


async def test_dev_logs_each_request_and_a_handler_traceback_with_the_users_line(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    app = write(tmp_path / "app" / "boom.py", BOOM)
    dev = DevProcess(str(app), tmp_path / "data").start()
    try:
        async with http.get(f"{dev.url}/Boom/ada/fail") as r:
            assert r.status == 500
        async with http.post(f"{dev.url}/Boom/bob/ok?x=1") as r:
            assert r.status == 200
        async with http.get(f"{dev.url}/Nope/x") as r:
            assert r.status == 404

        def logged() -> str:
            logs = dev.logs()
            return logs if "GET /Nope/x 404" in logs else ""

        logs = await assert_eventually(logged, timeout=10)
    finally:
        dev.stop()
    # method, path, status, duration, namespace/name: one line each, at the default level.
    lines = {line.split("abode.access: ", 1)[1] for line in logs.splitlines()
             if "abode.access: " in line}
    by_path = {line.split(" ")[1]: line for line in lines}
    assert by_path["/Boom/ada/fail"].startswith("GET /Boom/ada/fail 500 ")
    assert by_path["/Boom/ada/fail"].endswith(" ms Boom/ada")
    assert by_path["/Boom/bob/ok?x=1"].startswith("POST /Boom/bob/ok?x=1 200 ")
    assert by_path["/Boom/bob/ok?x=1"].endswith(" Boom/bob")
    assert by_path["/Nope/x"].endswith(" -")  # reached no object
    # The traceback starts at the user's code: their file, their lines, the real error.
    assert "ERROR abode.node._host: fetch handler of Boom/ada raised" in logs, logs
    tb = logs[logs.index("fetch handler of Boom/ada raised"):]
    assert f'File "{app}", line 7, in fetch' in tb
    assert f'File "{app}", line 12, in explode' in tb
    assert "RuntimeError: kaboom" in tb
    assert "_host.py" not in tb.split("RuntimeError: kaboom")[0]  # not abode's frames


def _load_error(tmp_path: Path, *args: str, cwd: Path | None = None) -> str:
    result = run_abode("dev", *args, "--port", "0", "--data", str(tmp_path / "data"),
                       cwd=cwd or tmp_path)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_a_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    app = write(tmp_path / "app.py", "from abode import DurableObject\n\nclass A(DurableObject\n")
    line = _load_error(tmp_path, str(app))
    assert line.startswith(f"abode: cannot load app {app}: {app}, line 3: SyntaxError: ")


def test_a_missing_dependency_is_named_with_the_line_that_imports_it(tmp_path: Path) -> None:
    app = write(tmp_path / "app.py", "import json\nimport not_installed_anywhere\n")
    line = _load_error(tmp_path, str(app))
    assert f"{app}, line 2: ModuleNotFoundError: No module named 'not_installed_anywhere'" in line
    assert sys.executable in line  # where it should be installed


def test_a_package_app_blames_its_missing_dependency_not_the_app_path(tmp_path: Path) -> None:
    write(tmp_path / "shop" / "__init__.py", "from shop import orders\n")
    orders = write(tmp_path / "shop" / "orders.py", "\n\nimport stripe_sdk_not_here\n")
    line = _load_error(tmp_path, "shop")
    assert f"{orders}, line 3: ModuleNotFoundError: No module named 'stripe_sdk_not_here'" in line
    assert "module path importable" not in line


def test_an_app_that_is_not_there_says_where_it_looked(tmp_path: Path) -> None:
    line = _load_error(tmp_path, "no_such_app")
    assert line.startswith("abode: cannot import app 'no_such_app': no module 'no_such_app' "
                           f"in {tmp_path}")


def test_a_locked_data_dir_is_reported_at_once_with_its_holder(tmp_path: Path) -> None:
    app = write(tmp_path / "boom.py", BOOM)
    first = DevProcess(str(app), tmp_path / "data").start()
    try:
        t0 = time.monotonic()
        second = run_abode("dev", str(app), "--port", "0", "--data", str(tmp_path / "data"))
        elapsed = time.monotonic() - t0
    finally:
        first.stop()
    assert second.returncode == 1, second
    assert second.stderr.strip() == (
        f"abode: data directory {tmp_path / 'data' / 'dev' / 'db'} is in use by pid "
        f"{first.proc.pid} (abode dev {app} --port 0 --data {tmp_path / 'data'} "
        f"--ready-file {tmp_path / 'data.ready.json'})"
    )
    # Not after the 10 s a dying holder is given: the holder is alive. (Start-up of the
    # second process is most of this.)
    assert elapsed < 8, elapsed
