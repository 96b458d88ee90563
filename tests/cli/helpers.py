"""``abode`` as a user runs it: a child process, its output, the processes it left."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.harness import ROOT


def abode_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    # The test's own ABODE_* variables must not leak into the command under test.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ABODE_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def run_abode(*args: str, cwd: Path = ROOT, timeout: float = 60.0,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "abode", *args], cwd=cwd, env=abode_env(env),
                          capture_output=True, text=True, timeout=timeout, check=False)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def processes_naming(text: str) -> list[str]:
    """Live processes whose command line contains ``text`` ("pid: cmdline")."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{proc.name}: {cmdline}")
    return found


class Up:
    """``abode up`` in a session of its own, as a terminal runs a foreground job."""

    def __init__(self, app: str, data: Path, *args: str, cwd: Path = ROOT) -> None:
        self.data = data
        self.out = data.parent / f"{data.name}.out"
        data.parent.mkdir(parents=True, exist_ok=True)
        with open(self.out, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "abode", "up", app, "--port", "0", "--data", str(data),
                 *args],
                cwd=cwd, env=abode_env(), stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )

    def output(self) -> str:
        return self.out.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 90.0) -> str:
        deadline = time.monotonic() + timeout
        while text not in (out := self.output()):
            if self.proc.poll() is not None:
                raise AssertionError(f"abode up exited with {self.proc.returncode}:\n{out}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} from abode up in {timeout} s:\n{out}")
            time.sleep(0.05)  # polling interval of a deadline-bounded wait
        return out

    def wait_ready(self, timeout: float = 90.0) -> str:
        return self.wait_for("ready. Ctrl-C stops the cluster", timeout)

    def strays(self) -> list[str]:
        """etcd, nodes and routers all name the data dir on their command line."""
        return processes_naming(str(self.data))

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for stray in self.strays():
            try:
                os.kill(int(stray.split(":")[0]), 9)
            except ProcessLookupError:
                pass

    def child_logs(self) -> str:
        return "\n".join(f"---- {p.name} ----\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted((self.data / "logs").glob("*.log")))
