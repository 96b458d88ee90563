"""``abode up`` as a user meets it (issue 10, items 4 and 5): its children die with it
even on SIGKILL; ``abode status`` and ``abode usage`` find it by themselves and print only
their report; a second ``up`` on its data dir names it; a failed child shows its log."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from abode.cluster.cli.upstate import UpState, stop_leftovers
from tests.cli.helpers import Up, processes_naming, run_abode, write
from tests.cli.test_errors import BOOM
from tests.harness import assert_eventually

pytestmark = pytest.mark.timeout(120)


async def test_sigkill_of_abode_up_takes_every_child_with_it(
    tmp_path: Path, up: list[Up]
) -> None:
    handle = Up("examples.counter", tmp_path / "up", "--nodes", "2", "--routers", "1")
    up.append(handle)
    handle.wait_ready()
    state = json.loads((handle.data / "run" / "up.json").read_text())
    assert set(state["children"]) == {"etcd", "node-1", "node-2", "router-1"}
    children = [s for s in handle.strays() if int(s.split(":")[0]) != handle.proc.pid]
    assert len(children) == 4, children  # etcd, 2 nodes, 1 router

    os.kill(handle.proc.pid, signal.SIGKILL)  # `up` alone: no Ctrl-C to the group
    handle.proc.wait(5)
    t0 = time.monotonic()
    await assert_eventually(lambda: not handle.strays(), timeout=10, interval=0.1)
    assert time.monotonic() - t0 < 10


async def test_status_and_usage_find_the_local_cluster_and_print_only_their_report(
    tmp_path: Path, up: list[Up], http: aiohttp.ClientSession
) -> None:
    project = tmp_path / "project"
    app = write(project / "boom.py", BOOM)
    # As a user runs it: in their project, data in the default ./.abode/up.
    handle = Up(str(app), project / ".abode" / "up", "--nodes", "1", "--routers", "1",
                cwd=project)
    up.append(handle)
    handle.wait_ready()

    status = run_abode("status", cwd=project)
    assert status.returncode == 0, status
    assert status.stderr == ""  # no stray log line
    assert status.stdout.startswith("cluster 'abode' at etcd revision ")
    assert "1 members, 1 live, 1 routers" in status.stdout

    usage = run_abode("usage", "--json", cwd=project)
    assert usage.returncode == 0, usage
    assert usage.stderr == ""
    assert [n["node_id"] for n in json.loads(usage.stdout)["nodes"]] == ["node-1"]

    elsewhere = run_abode("status", cwd=tmp_path)  # no cluster here
    assert elsewhere.returncode == 2
    assert elsewhere.stderr.startswith("abode: no --etcd given, and no abode up cluster in "
                                       ".abode/up"), elsewhere.stderr

    # A second `up` on the same data dir says exactly what holds it, at once.
    second = run_abode("up", str(app), "--data", str(handle.data), cwd=project, timeout=30)
    assert second.returncode == 1
    assert second.stderr.startswith(
        f"abode: {handle.data} is in use by pid {handle.proc.pid} (abode up {app} "
    ), second.stderr
    assert f"kill {handle.proc.pid}" in second.stderr

    # A handler's traceback is in the node's log, with the user's file and line.
    router = json.loads((handle.data / "run" / "router-1.json").read_text())["url"]
    async with http.get(f"{router}/Boom/ada/fail") as r:
        assert r.status == 500
    node_log = handle.data / "logs" / "node-1.log"
    await assert_eventually(lambda: "RuntimeError: kaboom" in node_log.read_text())
    assert f'File "{app}", line 12, in explode' in node_log.read_text()

    # A child that dies is reported with the end of its log.
    node = json.loads((handle.data / "run" / "node-1.json").read_text())["pid"]
    os.kill(node, signal.SIGKILL)
    out = handle.wait_for("the rest keep running", timeout=15)
    report = out[out.index("abode up: node-1 exited with -9"):]
    assert f"the end of {node_log}:" in report
    assert "  | " in report and "fetch handler of Boom/ada raised" in report


def test_a_second_up_stops_what_a_killed_one_left_running(tmp_path: Path) -> None:
    """Where children cannot die with their parent (no PR_SET_PDEATHSIG), the next `up`
    on the data dir stops them: here a stand-in child recorded in the run dir."""
    data = tmp_path / "up"
    (data / "run").mkdir(parents=True)
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                               "--data", str(data / "nodes")])
    unrelated = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        # Until the child has exec'd, its command line is still this test's.
        _wait_for_cmdline(orphan.pid, str(data))
        UpState(pid=999_999, data=str(data), etcd="http://127.0.0.1:1",
                children={"node-1": orphan.pid, "router-1": unrelated.pid}).save()
        assert stop_leftovers(data) == [f"node-1 (pid {orphan.pid})"]
        assert orphan.wait(10) == -signal.SIGTERM
        # A pid that now belongs to some other program is left alone.
        assert unrelated.poll() is None
        assert not processes_naming(str(data))
    finally:
        for proc in (orphan, unrelated):
            proc.kill()
            proc.wait()


def _wait_for_cmdline(pid: int, text: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
        assert time.monotonic() < deadline, f"pid {pid} never ran a command naming {text}"
        time.sleep(0.01)  # polling interval of a deadline-bounded wait
