"""Project invariants: public API pinned, packages are ours, generated code is fresh."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import abode
import abode.cluster
import abode.node
import abode.router
from tests.harness import ROOT


def test_public_api_is_pinned() -> None:
    assert sorted(abode.__all__) == sorted([
        "AbodeError", "Aborted", "AlarmInfo", "CallTimeout", "CommitFailed", "DurableObject",
        "Env", "InvalidId", "Namespace", "ObjectContext", "ObjectId", "Overloaded",
        "RemoteError", "Request", "Response", "Storage", "Stub", "Transaction",
        "Unavailable", "UnknownMethod", "UnknownNamespace", "WebSocket",
    ])


def test_every_public_name_is_exported() -> None:
    # httpx's test_exported_members: what the root defines publicly is what __all__ says.
    public = {name for name in dir(abode) if not name.startswith("_")}
    assert public - {"cluster", "node", "router", "testing"} == set(abode.__all__)


@pytest.mark.parametrize("name", abode.__all__)
def test_exported_names_show_abode_as_their_module(name: str) -> None:
    assert getattr(abode, name).__module__ == "abode"


@pytest.mark.parametrize("folder", ["cluster", "node", "router"])
def test_repo_folders_are_abode_subpackages(folder: str) -> None:
    # The repo's folders install under `abode`; a generic top-level name never resolves
    # to them.
    module = importlib.import_module(f"abode.{folder}")
    assert Path(module.__file__).resolve().parent == ROOT / folder  # type: ignore[arg-type]


def test_generated_protobuf_code_is_fresh(tmp_path: Path) -> None:
    plugin = shutil.which("protoc-gen-mypy", path=str(Path(sys.executable).parent))
    if plugin is None:
        pytest.fail("protoc-gen-mypy missing: install the dev extra (pip install -e '.[dev]')")
    protos = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "proto").rglob("*.proto"))
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-Iproto", f"--python_out={tmp_path}",
         f"--grpc_python_out={tmp_path}", f"--mypy_out={tmp_path}",
         f"--mypy_grpc_out={tmp_path}", *protos],
        cwd=ROOT, check=True, env=env, capture_output=True,
    )
    generated = sorted(tmp_path.rglob("*_pb2*"))
    assert generated, "protoc wrote nothing"
    for path in generated:
        # protoc writes the import path (abode/cluster/...); the folder is cluster/.
        committed = ROOT / path.relative_to(tmp_path / "abode")
        assert committed.exists(), f"{committed} missing: run make proto"
        assert committed.read_text() == path.read_text(), f"{committed} is stale: run make proto"
