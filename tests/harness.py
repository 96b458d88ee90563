"""Real processes for tests: ``abode dev`` (and later cluster members) on loopback.

Each child binds port 0 and writes a ready file with its ports, so there are no
free-port races; every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


async def assert_eventually(
    check: Callable[[], Awaitable[Any] | Any], *, timeout: float = 10.0, interval: float = 0.05
) -> Any:
    """Poll ``check`` until it returns a truthy value without raising, or fail."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            result = check()
            if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                result = await result
            if result:
                return result
            last = None
        except (AssertionError, OSError, Exception) as exc:  # noqa: B014
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s (last error: {last!r})")
        await asyncio.sleep(interval)


class DevProcess:
    """``abode dev APP`` as a child process."""

    def __init__(self, app: str, data: Path, *extra: str, env: dict[str, str] | None = None):
        self.app = app
        self.data = data
        self.extra = list(extra)
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.info: dict[str, Any] = {}
        self._log_path = data.parent / f"{data.name}.log"
        self._ready = data.parent / f"{data.name}.ready.json"

    def start(self, timeout: float = 30.0) -> DevProcess:
        self._ready.unlink(missing_ok=True)
        log = open(self._log_path, "ab")
        cmd = [sys.executable, "-m", "abode", "dev", self.app, "--port", "0",
               "--data", str(self.data), "--ready-file", str(self._ready), *self.extra]
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
        )
        deadline = time.monotonic() + timeout
        while not self._ready.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"abode dev exited with {self.proc.returncode}:\n{self.logs()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"abode dev not ready within {timeout} s:\n{self.logs()}")
            time.sleep(0.05)
        self.info = json.loads(self._ready.read_text())
        self.url = self.info["url"]
        return self

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 15.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def restart(self) -> DevProcess:
        self.kill()
        return self.start()

    def stop(self) -> int | None:
        return self.kill(signal.SIGTERM)

    def logs(self) -> str:
        try:
            return self._log_path.read_text(errors="replace")[-8000:]
        except OSError:
            return ""


# -- a small real filesystem, to fill -------------------------------------------------

@contextlib.contextmanager
def small_filesystem(path: Path, size: str = "32m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (skips the test where mounting is not
    allowed); unmounted afterwards."""
    import pytest

    path.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       check=True, capture_output=True, timeout=10)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, timeout=10)


def fill_filesystem(path: Path) -> None:
    """Write the file ``path`` until its filesystem has no byte left."""
    with open(path, "wb", buffering=0) as f:  # unbuffered: nothing left to flush at close
        for size in (1 << 20, 4096, 1):  # the last few bytes too: not even an append fits
            try:
                while f.write(b"\0" * size):
                    pass
            except OSError:
                pass
