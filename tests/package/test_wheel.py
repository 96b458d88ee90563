"""The distribution as a user installs it (issue 10, item 2): one import package,
``abode``; ``abode dev`` serving apps from anywhere, apps free to name their own modules
``router``, ``node`` and ``cluster``; mypy --strict on an app against the installed
package."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from tests.cli.helpers import write
from tests.package.conftest import Installed

pytestmark = pytest.mark.timeout(300)


def test_the_wheel_has_one_top_level_name_abode_and_is_typed(installed: Installed) -> None:
    names = zipfile.ZipFile(installed.wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"abode"}
    assert "abode/py.typed" in names
    assert {"abode/cluster/__init__.py", "abode/node/__init__.py", "abode/router/__init__.py",
            "abode/cluster/cli/init_template/app.py.tmpl"} <= set(names)
    dist_info = next(n for n in names if n.endswith(".dist-info/top_level.txt"))
    assert zipfile.ZipFile(installed.wheel).read(dist_info).decode().split() == ["abode"]
    # Installed: abode is the wheel's, and the generic names are not importable.
    probe = installed.run(installed.python, "-c", (
        "import abode, importlib.util as u; print(abode.__file__); "
        "print([m for m in ('cluster', 'node', 'router') if u.find_spec(m)])"
    ), cwd=installed.venv.parent)
    assert probe.returncode == 0, probe.stderr
    where, leaked = probe.stdout.splitlines()
    assert where.startswith(str(installed.venv)) and leaked == "[]"


class Served:
    def __init__(self, installed: Installed, cwd: Path, app: str) -> None:
        self.ready = cwd.parent / f"{cwd.name}.ready.json"
        self.log = cwd.parent / f"{cwd.name}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [str(installed.bin / "abode"), "dev", app, "--port", "0", "--ready-file",
                 str(self.ready)], cwd=cwd, env=installed.env(), stdout=out,
                stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not self.ready.exists():
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.05)  # polling interval of a deadline-bounded wait
        self.url = json.loads(self.ready.read_text())["url"]

    def request(self, method: str, path: str) -> tuple[int, object]:
        req = urllib.request.Request(self.url + path, method=method)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def test_an_app_outside_the_repo_uses_its_own_router_node_and_cluster_modules(
    installed: Installed, tmp_path: Path
) -> None:
    app = tmp_path / "myapp"
    write(app / "router.py", "def route_name() -> str:\n    return 'my router'\n")
    write(app / "node.py", "KIND = 'my node'\n")
    write(app / "cluster.py", "def size() -> int:\n    return 42\n")
    write(app / "app.py", '''\
import cluster
import node
import router
from abode import DurableObject, Request, Response


class Helpers(DurableObject):
    async def fetch(self, request: Request) -> Response:
        return Response.json([router.route_name(), node.KIND, cluster.size()])
''')
    served = Served(installed, app, "app.py")
    try:
        assert served.request("GET", "/Helpers/x") == (200, ["my router", "my node", 42])
    finally:
        served.stop()
    assert served.proc.returncode == 0, served.log.read_text()


def test_abode_init_writes_a_project_whose_readme_commands_work(
    installed: Installed, tmp_path: Path
) -> None:
    made = installed.run("abode", "init", "hello-world", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    project = tmp_path / "hello-world"
    readme = (project / "README.md").read_text()
    # The README's two commands, word for word.
    commands = readme.split("```sh\n", 1)[1].split("```", 1)[0]
    run, test = (line.split("#")[0].strip() for line in commands.strip().splitlines())
    assert run == "abode dev hello_world.py" and test == "python -m pytest"

    tests = installed.run(*test.split(), cwd=project)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "2 passed" in tests.stdout

    served = Served(installed, project, run.split()[-1])
    try:
        # The curl lines of the README, with what they say comes back.
        for line in readme.split("```sh\n")[2].split("```")[0].strip().splitlines():
            command, expected = (part.strip() for part in line.split("#", 1))
            method = "POST" if "-X POST" in command else "GET"
            path = "/" + command.split("localhost:8787/", 1)[1]
            assert served.request(method, path) == (200, json.loads(expected)), line
    finally:
        served.stop()


def test_mypy_strict_passes_on_an_app_against_the_installed_package(
    installed: Installed, tmp_path: Path
) -> None:
    assert installed.run("abode", "init", "typed", cwd=tmp_path).returncode == 0
    # The starter's pyproject says `strict = true`; abode is found by its py.typed.
    typed = installed.run(installed.python, "-m", "mypy", "--strict", "--cache-dir",
                          str(tmp_path / "mypy-cache"), ".", cwd=tmp_path / "typed",
                          timeout=240)
    assert typed.returncode == 0, typed.stdout + typed.stderr
    assert "Success: no issues found in 2 source files" in typed.stdout
