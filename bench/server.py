"""``abode dev APP`` as a child process on port 0, with a throwaway data directory."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

ROOT = Path(__file__).resolve().parent.parent


class DevServer:
    """``async with DevServer("examples.app") as server: server.url``."""

    def __init__(self, app: str, *extra: str, ready_timeout: float = 30.0) -> None:
        self.app = app
        self.extra = list(extra)
        self.ready_timeout = ready_timeout
        self.url = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir = Path(tempfile.mkdtemp(prefix="abode-bench-"))
        self._log = self._dir / "server.log"

    async def __aenter__(self) -> DevServer:
        ready = self._dir / "ready.json"
        self.proc = self._spawn(ready)
        deadline = time.monotonic() + self.ready_timeout
        while not ready.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"abode dev exited with {self.proc.returncode}:\n{self.logs()}")
            if time.monotonic() > deadline:
                self._stop()
                raise RuntimeError(f"abode dev not ready in {self.ready_timeout:g} s:\n{self.logs()}")
            await asyncio.sleep(0.05)
        self.url = json.loads(ready.read_text())["url"]
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self._stop)
        if exc_type is None:
            shutil.rmtree(self._dir, ignore_errors=True)
        else:
            print(f"(server log kept in {self._log})", file=sys.stderr)

    def _spawn(self, ready: Path) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "abode", "dev", self.app, "--port", "0",
               "--data", str(self._dir / "data"), "--ready-file", str(ready), *self.extra]
        with open(self._log, "wb") as log:
            return subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                    # No access line per request: the bench measures serving.
                                    env={**os.environ, "PYTHONUNBUFFERED": "1",
                                         "ABODE_LOG_LEVEL": "WARNING", "ABODE_RELOAD": "0"})

    def _stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def logs(self) -> str:
        try:
            return self._log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""
