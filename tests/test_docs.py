"""Docs match the code: the files they cite exist, and the metrics they list are the
metrics the code exports (issue 10, item 7)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.harness import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# `router/_server.py`, [text](examples/counter.py): a repository file, by its path.
_CITED = re.compile(r"`([\w.-]+(?:/[\w.-]+)+\.(?:py|md|yml|yaml|json|toml))`"
                    r"|\]\(([\w./-]+\.(?:py|md|yml|yaml|json|toml))(?:#[\w-]*)?\)")
_FAMILY = re.compile(r"\babode_(?:node|router)_[a-z_]+")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_cited_file_exists(doc: Path) -> None:
    missing = []
    for match in _CITED.finditer(doc.read_text()):
        cited = match.group(1) or match.group(2)
        first = cited.split("/")[0]
        if first.isupper() or first == "path":
            continue  # a placeholder: DATA/run/up.json, path/app.py
        # Links are relative to the document; code spans name repository paths.
        bases = [doc.parent] if match.group(2) else [ROOT, doc.parent]
        if not any((base / cited).exists() for base in bases):
            missing.append(cited)
    assert not missing, f"{doc.name} cites files that do not exist: {missing}"


def _family(name: str) -> str:
    return re.sub(r"_(total|bucket|sum|count)$", "", name)


def test_metrics_doc_lists_exactly_the_exported_families() -> None:
    code = {_family(m) for path in ("node/_metrics.py", "router/_metrics.py")
            for m in _FAMILY.findall((ROOT / path).read_text())}
    documented = {_family(m) for m in _FAMILY.findall((ROOT / "docs" / "metrics.md").read_text())}
    assert documented - code == set(), "documented but not exported"
    assert code - documented == set(), "exported but not documented"
