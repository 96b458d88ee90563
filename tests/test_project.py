"""Project invariants: public API pinned, packages are ours, generated code is fresh."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import cluster
import node
import router
from tests.harness import ROOT


def test_node_public_api_is_pinned() -> None:
    assert sorted(node.__all__) == sorted([
        "AbodeError", "Aborted", "AlarmInfo", "CallTimeout", "CommitFailed", "DurableObject",
        "Env", "InvalidId", "Namespace", "ObjectContext", "ObjectId", "Overloaded",
        "RemoteError", "Request", "Response", "Storage", "Stub", "Transaction",
        "Unavailable", "UnknownMethod", "UnknownNamespace", "WebSocket",
    ])
    for name in node.__all__:
        assert hasattr(node, name), name


@pytest.mark.parametrize("package", [cluster, node, router])
def test_generic_package_names_resolve_to_this_repo(package: object) -> None:
    # `cluster`, `node` and `router` are generic names; a PyPI package of the same
    # name must never shadow ours.
    assert Path(package.__file__).resolve().is_relative_to(ROOT)  # type: ignore[attr-defined]


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
        committed = ROOT / path.relative_to(tmp_path)
        assert committed.exists(), f"{committed} missing: run make proto"
        assert committed.read_text() == path.read_text(), f"{committed} is stale: run make proto"
