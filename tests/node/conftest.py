"""Fixtures for single-node tests: ``abode dev`` shared by a module, and helpers."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.harness import DevProcess


@pytest.fixture(scope="module")
def module_dev(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Callable[..., DevProcess]]:
    """Start ``abode dev`` processes shared by the tests of one module (each test uses
    its own object names); logs are printed if any test of the module failed."""
    started: list[DevProcess] = []
    failed_before = request.session.testsfailed

    def start(app: str, *extra: str) -> DevProcess:
        data = tmp_path_factory.mktemp("dev") / "data"
        proc = DevProcess(app, data, *extra)
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.stop()
        if request.session.testsfailed > failed_before:
            print(f"---- logs of abode dev {proc.app} {proc.extra} ----\n{proc.logs()}")
