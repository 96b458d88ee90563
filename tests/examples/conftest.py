from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.examples.helpers import APP
from tests.harness import DevProcess


@pytest.fixture
def app(dev_factory: Callable[..., DevProcess]) -> DevProcess:
    """``abode dev`` serving every example (plus the /rpc bridge), fresh data dir."""
    return dev_factory(APP)
