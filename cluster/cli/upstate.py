"""The run dir of ``abode up`` (``DATA/run``): who holds it, what it started, where etcd is.

``up.lock`` is locked by the running ``abode up`` for as long as it lives (the kernel
drops the lock when it dies, however it dies). ``up.json`` says what it started: its
pid, etcd's URL, the cluster name, each child's pid. From these:

* a second ``abode up`` on the same data dir names the one running, or stops what a
  killed one left behind (on systems where children cannot die with their parent);
* ``abode status``, ``usage`` and ``remove`` find the local cluster with no ``--etcd``.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from abode.cluster.lockfile import describe_process, is_locked, lock_holder, try_lock

LOCK = "up.lock"
STATE = "up.json"

__all__ = ["DirInUse", "UpState", "find_cluster", "lock_run_dir", "stop_leftovers"]


class DirInUse(Exception):
    """Another ``abode up`` runs on this data dir; the message says which and what to do."""


@dataclass
class UpState:
    pid: int
    data: str
    etcd: str = ""
    cluster: str = "abode"
    started: float = field(default_factory=time.time)
    children: dict[str, int] = field(default_factory=dict)  # name -> pid
    routers: list[str] = field(default_factory=list)  # URLs

    def save(self) -> None:
        path = Path(self.data) / "run" / STATE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        os.replace(tmp, path)  # a reader never sees half a file


def read_state(data: Path) -> UpState | None:
    try:
        raw = json.loads((data / "run" / STATE).read_text())
        return UpState(**raw)
    except (OSError, ValueError, TypeError):
        return None


def lock_run_dir(data: Path) -> int:
    """Lock ``data``'s run dir for this ``abode up``; the descriptor must stay open.
    Raises DirInUse naming the process that holds it."""
    run = data / "run"
    run.mkdir(parents=True, exist_ok=True)
    fd = try_lock(str(run / LOCK))
    if fd is not None:
        return fd
    holder = lock_holder(str(run / LOCK))
    state = read_state(data)
    who = describe_process(holder) if holder else "another process"
    since = ""
    if state is not None and state.pid == holder:
        since = f", running since {time.strftime('%H:%M:%S', time.localtime(state.started))}"
        if state.etcd:
            since += f" with etcd at {state.etcd}"
    how = f"Ctrl-C in its terminal, or kill {holder}" if holder else "Ctrl-C in its terminal"
    raise DirInUse(f"{data} is in use by {who}{since}. Stop it ({how}) or give this "
                   "cluster a data dir of its own with --data DIR.")


def stop_leftovers(data: Path, timeout: float = 10.0) -> list[str]:
    """Stop the children a killed ``abode up`` left running on ``data`` (call with the
    run dir locked, so that ``up`` is gone). Returns what was stopped, as text."""
    state = read_state(data)
    if state is None:
        return []
    found = {name: pid for name, pid in state.children.items() if _runs_on(pid, data)}
    for pid in found.values():
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(_runs_on(pid, data) for pid in found.values()) and time.monotonic() < deadline:
        time.sleep(0.05)  # polling interval of a deadline-bounded wait for exits
    for pid in found.values():
        if _runs_on(pid, data):
            _signal(pid, signal.SIGKILL)
    return [f"{name} (pid {pid})" for name, pid in found.items()]


def find_cluster(data: str) -> tuple[str, str]:
    """(etcd URL, cluster name) of the ``abode up`` running on ``data``.
    Raises LookupError saying what is missing."""
    base = Path(data).resolve()
    state = read_state(base)
    if state is None or not state.etcd:
        raise LookupError(f"no --etcd given, and no abode up cluster in {data} (no "
                          f"{Path(data) / 'run' / STATE}). Start one with `abode up APP`, "
                          "pass the --data DIR it runs on, or pass --etcd URL.")
    if not is_locked(str(base / "run" / LOCK)):
        raise LookupError(f"no --etcd given, and the abode up that ran in {data} (pid "
                          f"{state.pid}) has stopped. Start it again, or pass --etcd URL.")
    return state.etcd, state.cluster


def _runs_on(pid: int, data: Path) -> bool:
    """Whether ``pid`` lives and its command line names ``data`` (not a reused pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        try:
            os.kill(pid, 0)  # no /proc: trust the pid
        except OSError:
            return False
        return True
    return str(data).encode() in cmdline


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except OSError:
        pass  # exited meanwhile
