"""Where an object lives: the answer routers and nodes ask before each call."""

from __future__ import annotations

from typing import Protocol


class Placement(Protocol):
    """Maps an object id to its home node's gRPC address, at a ring revision."""

    def home(self, object_id: bytes) -> tuple[str, int]: ...


class StaticPlacement:
    """One node holds every object (``abode dev``)."""

    def __init__(self, address: str) -> None:
        self.address = address

    def home(self, object_id: bytes) -> tuple[str, int]:
        return self.address, 0
