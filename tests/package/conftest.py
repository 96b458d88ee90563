"""One wheel, built once per session and installed into a fresh venv (issue 10, item 2).

The build copies the package's sources out of the repository (so nothing is written
into it) and uses the running venv's setuptools without isolation; the fresh venv gets
only the wheel (``--no-deps``) and finds abode's dependencies through a ``.pth`` line
naming this venv's site-packages. Only abode itself comes from the wheel: a few seconds,
not a download of grpcio and friends.
"""

from __future__ import annotations

import shutil
import site
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness import ROOT

SOURCES = ["pyproject.toml", "README.md", "LICENSE", "abode", "cluster", "node", "router"]


@dataclass(frozen=True)
class Installed:
    wheel: Path
    venv: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def bin(self) -> Path:
        return self.venv / "bin"

    def run(self, *args: str | Path, cwd: Path, timeout: float = 120.0,
            ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(a) for a in args], cwd=cwd, env=self.env(),
                              capture_output=True, text=True, timeout=timeout, check=False)

    def env(self) -> dict[str, str]:
        # As a user's shell with the venv activated, and no trace of the repository.
        return {"PATH": f"{self.bin}:/usr/bin:/bin", "HOME": str(self.venv.parent),
                "PYTHONUNBUFFERED": "1", "VIRTUAL_ENV": str(self.venv)}


def _check(cmd: list[str], cwd: Path) -> None:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, f"{cmd}:\n{result.stdout}\n{result.stderr}"


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    base = tmp_path_factory.mktemp("package")
    src = base / "src"
    src.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            # symlinks=True: abode/cluster etc. stay links, as in the repository.
            shutil.copytree(path, src / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(path, src / name)
    _check([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
            "--no-build-isolation", "--no-index", "--wheel-dir", str(base / "dist"), str(src)],
           base)
    (wheel,) = (base / "dist").glob("abode-*.whl")
    venv = base / "venv"
    _check([sys.executable, "-m", "venv", "--without-pip", str(venv)], base)
    purelib = Path(subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True, text=True, check=True).stdout.strip())
    # abode's dependencies (and pytest, mypy) from this venv, after the fresh venv's own.
    ours = {sysconfig.get_path("purelib"), *site.getsitepackages()}
    (purelib / "abode_test_dependencies.pth").write_text("\n".join(sorted(ours)) + "\n")
    _check([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
            "--quiet", "--no-deps", "--no-index", str(wheel)], base)
    yield Installed(wheel, venv)
