from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.harness import DevProcess


@pytest.fixture
def dev_factory(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., DevProcess]]:
    """Start ``abode dev`` processes; they are stopped (logs printed on failure) after."""
    started: list[DevProcess] = []

    def start(app: str, *extra: str, name: str = "dev") -> DevProcess:
        proc = DevProcess(app, tmp_path / name, *extra)
        started.append(proc)
        return proc.start()

    yield start
    failed = getattr(request.node, "rep_call", None)
    for proc in started:
        proc.stop()
        if failed is not None and failed.failed:
            print(f"---- logs of {proc.app} ----\n{proc.logs()}")


@pytest.fixture
async def http() -> Iterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    rep = yield
    setattr(item, "rep_" + rep.when, rep)
    return rep
