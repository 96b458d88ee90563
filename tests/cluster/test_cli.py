"""The cluster commands as users run them (DESIGN §4, §5 "CLI and cluster").

``abode up`` as one process group (what a terminal's Ctrl-C reaches), ``abode node``
configured from ``ABODE_*`` variables, and the one-line fatal error when etcd is not
there.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.cluster.etcd import EtcdProcess, free_port
from tests.cluster.harness import APP, Child, Cluster, abode_command, child_env, parse_status
from tests.cluster.load import get_json, wait_healthy
from tests.harness import ROOT, assert_eventually

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


class Up:
    """``abode up`` in a process group of its own, as a shell runs a foreground job."""

    def __init__(self, data: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.data = data
        self.out = data.parent / "up.out"
        with open(self.out, "wb") as out:
            self.proc = subprocess.Popen(
                abode_command("up", APP, "--port", "0", "--data", str(data), *args),
                cwd=ROOT, env=child_env(env), stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        self.pgid = self.proc.pid

    def output(self) -> str:
        return self.out.read_text(errors="replace")

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while "ready. Ctrl-C stops the cluster" not in self.output():
            if self.proc.poll() is not None:
                raise AssertionError(f"abode up exited with {self.proc.returncode}:\n"
                                     f"{self.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"abode up not ready in time:\n{self.output()}")
            time.sleep(0.1)  # polling interval of a deadline-bounded wait

    def group_alive(self) -> bool:
        try:
            os.killpg(self.pgid, 0)
        except ProcessLookupError:
            return False
        return True

    def strays(self) -> list[str]:
        """Processes still running whose command line names this cluster's data dir
        (etcd, nodes and routers all do)."""
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(self.data) in cmdline:
                found.append(f"{proc.name}: {cmdline}")
        return found

    def child_logs(self) -> str:
        parts = []
        for path in sorted((self.data / "logs").glob("*.log")):
            parts.append(f"---- {path.name} ----\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)


@pytest.fixture
def up(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[list[Up]]:
    started: list[Up] = []
    yield started
    for handle in started:
        if handle.group_alive():
            os.killpg(handle.pgid, signal.SIGKILL)
            handle.proc.wait(10)
        for stray in handle.strays():  # etcd, in a session of its own
            os.kill(int(stray.split(":")[0]), signal.SIGKILL)
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(f"---- abode up ----\n{handle.output()}\n{handle.child_logs()}")


async def test_up_serves_through_both_routers_and_ctrl_c_stops_every_child(
    tmp_path: Path, up: list[Up], http: aiohttp.ClientSession
) -> None:
    handle = Up(tmp_path / "up")
    up.append(handle)
    handle.wait_ready()
    output = handle.output()
    etcd_url = re.search(r"etcd\s+(http://127\.0\.0\.1:\d+)", output)
    assert etcd_url is not None, output
    assert not etcd_url[1].endswith(":2379")  # a free port of its own, never assumed
    routers = [json.loads((handle.data / "run" / f"router-{i}.json").read_text())
               for i in (1, 2)]
    urls = [r["url"] for r in routers]
    for url in urls:
        assert url in output
    await wait_healthy(http, urls, live=3)
    name = f"up-{os.urandom(3).hex()}"
    values = [(await get_json(http, "POST", f"{url}/Tally/{name}"))["value"]
              for url in urls * 2]
    assert values == [1, 2, 3, 4]

    status = await asyncio.to_thread(
        subprocess.run, abode_command("status", "--etcd", etcd_url[1]), cwd=ROOT,
        env=child_env(), capture_output=True, text=True, timeout=30, check=False,
    )
    assert status.returncode == 0, status.stderr
    rows = parse_status(status.stdout)
    assert set(rows) == {"node-1", "node-2", "node-3"}, status.stdout
    assert all(row["live"] == "yes" for row in rows.values())
    assert "3 members, 3 live, 2 routers" in status.stdout

    # Ctrl-C in a terminal: SIGINT to the whole foreground process group.
    os.killpg(handle.pgid, signal.SIGINT)
    assert handle.proc.wait(60) == 0, handle.output()
    assert "abode up: stopping" in handle.output()
    # No stray process: etcd, nodes and routers are all gone with it.
    await assert_eventually(lambda: not handle.strays(), timeout=30, interval=0.1)
    # In order: etcd outlived the nodes, so each could revoke its lease.
    logs = handle.child_logs()
    assert logs.count("revoked") >= 5 and "revoke failed" not in logs, logs
    assert "Traceback" not in logs, logs


async def test_abode_up_stops_its_children_when_only_it_is_signalled(
    tmp_path: Path, up: list[Up]
) -> None:
    """SIGTERM (or a SIGINT sent to the `up` process alone) stops every child too."""
    handle = Up(tmp_path / "up", "--nodes", "1", "--routers", "1")
    up.append(handle)
    handle.wait_ready()
    handle.proc.send_signal(signal.SIGTERM)
    assert handle.proc.wait(60) == 0, handle.output()
    await assert_eventually(lambda: not handle.strays(), timeout=30, interval=0.1)


async def test_up_restarts_a_child_that_exits_non_zero_by_itself(
    tmp_path: Path, up: list[Up]
) -> None:
    """A node whose supervised task ended exits 1; `abode up` starts it again (here etcd
    is gone for good, so the node's membership watch gives up after 1 s)."""
    handle = Up(tmp_path / "up", "--nodes", "1", "--routers", "1",
                env={"ABODE_ETCD_GIVE_UP": "1"})
    up.append(handle)
    handle.wait_ready()
    etcd = [s for s in handle.strays() if "--data-dir" in s]
    assert len(etcd) == 1, handle.strays()
    os.kill(int(etcd[0].split(":")[0]), signal.SIGKILL)

    def restarted() -> bool:
        return "node-1 exited with 1; restarting it" in handle.output()

    await assert_eventually(restarted, timeout=40, interval=0.1)
    log = handle.data / "logs" / "node-1.log"

    def failed_again() -> bool:
        # The second process got as far as its own one-line reason: it was started.
        lines = log.read_text(errors="replace").splitlines()
        return sum(line.startswith("abode: ") for line in lines) >= 2

    await assert_eventually(failed_again, timeout=40, interval=0.1)
    text = log.read_text(errors="replace")
    assert "abode: node node-1: task membership-watch raised" in text, text[-3000:]
    assert handle.proc.poll() is None  # up itself keeps running


def _node_child(tmp_path: Path, name: str, args: list[str], env: dict[str, str]) -> Child:
    (tmp_path / "logs").mkdir(exist_ok=True)
    return Child(name, "node", ["node", *args], child_env(env),
                 tmp_path / "logs" / f"{name}.log", tmp_path / f"{name}.json")


async def test_abode_variables_are_honoured_and_flags_win(
    cluster: Cluster, etcd: EtcdProcess, tmp_path: Path
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    # Everything from the environment: etcd, cluster, id, listen address, app, lease.
    from_env = _node_child(tmp_path, "from-env", [], {
        "ABODE_APP": APP, "ABODE_ETCD": etcd.url, "ABODE_CLUSTER": "envtest",
        "ABODE_ID": "env-node", "ABODE_LISTEN": "127.0.0.1:0", "ABODE_LEASE_TTL": "2",
        "ABODE_DATA": str(tmp_path / "data"),
    })
    # Flags win over variables that point somewhere else.
    flags_win = _node_child(tmp_path, "flags-win", [
        "--app", APP, "--etcd", etcd.url, "--cluster", "envtest", "--id", "flag-node",
        "--listen", "127.0.0.1:0", "--data", str(tmp_path / "data"),
    ], {"ABODE_ETCD": nowhere, "ABODE_CLUSTER": "elsewhere", "ABODE_ID": "env-loser",
        "ABODE_LEASE_TTL": "2"})
    children = [from_env, flags_win]
    try:
        for child in children:
            child.launch()
        deadline = time.monotonic() + 60
        for child in children:
            child.wait_ready(deadline)
        assert from_env.info["node_id"] == "env-node"
        assert flags_win.info["node_id"] == "flag-node"

        # `abode status` reads ABODE_ETCD and ABODE_CLUSTER too; its flags win as well.
        by_env = cluster.cli("status", env={"ABODE_ETCD": etcd.url, "ABODE_CLUSTER": "envtest"})
        assert by_env.returncode == 0, by_env.stderr
        assert set(parse_status(by_env.stdout)) == {"env-node", "flag-node"}, by_env.stdout
        by_flag = cluster.cli("status", "--etcd", etcd.url, "--cluster", "envtest",
                              env={"ABODE_ETCD": nowhere, "ABODE_CLUSTER": "elsewhere"})
        assert by_flag.returncode == 0, by_flag.stderr
        assert set(parse_status(by_flag.stdout)) == {"env-node", "flag-node"}
        # The default cluster name keeps its own keys: nothing of "envtest" there.
        default = cluster.cli("status", "--etcd", etcd.url)
        assert parse_status(default.stdout) == {}, default.stdout
    finally:
        for child in children:
            child.stop()
    for child in children:
        assert child.proc is not None and child.proc.returncode == 0, child.logs()


@pytest.mark.parametrize("command", ["node", "router"])
def test_unreachable_etcd_is_a_one_line_fatal_error(command: str, tmp_path: Path) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    args = ["--app", APP, "--etcd", nowhere]
    if command == "node":
        args += ["--id", "lonely", "--listen", "127.0.0.1:0", "--data", str(tmp_path)]
    else:
        args += ["--port", "0"]
    result = subprocess.run(
        abode_command(command, *args), cwd=ROOT, env=child_env(), capture_output=True,
        text=True, timeout=60, check=False,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("abode: etcd unreachable at " + nowhere), result.stderr
