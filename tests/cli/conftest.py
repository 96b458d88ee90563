from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cli.helpers import Up


@pytest.fixture
def up(request: pytest.FixtureRequest) -> Iterator[list[Up]]:
    """``abode up`` processes to clean up after the test (their logs shown if it failed)."""
    started: list[Up] = []
    yield started
    report = getattr(request.node, "rep_call", None)
    for handle in started:
        handle.cleanup()
        if report is not None and report.failed:
            print(f"---- abode up ----\n{handle.output()}\n{handle.child_logs()}")

