"""One call to one object, as it travels from a caller to the object's home.

Routers, stubs inside objects, and the node runtime all speak in Invocations; only
``cluster.wire`` turns them into protobuf messages and back.
"""

from __future__ import annotations

import math
import os
import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Protocol

from abode.cluster.http import Request, Response

# The call chain of the event running in this task. A call that belongs to the chain
# of an object's running event is admitted at once, so A -> B -> A cannot deadlock.
current_chain: ContextVar[bytes | None] = ContextVar("abode_chain", default=None)


# When the caller of the running event stops waiting (time.monotonic()); inf if never.
current_deadline: ContextVar[float] = ContextVar("abode_deadline", default=math.inf)



class Effects:
    """What the running event did beyond its own object. An event whose writes are
    refused at commit (its object moved, its lease lapsed) had no effect at all unless
    it called another object: only then is the refusal not safe to retry."""

    __slots__ = ("called_out",)

    def __init__(self) -> None:
        self.called_out = False


current_effects: ContextVar[Effects | None] = ContextVar("abode_effects", default=None)


# Time a callee's timeout leaves its caller to handle the timeout and still answer.
_HANDLING_MARGIN = 0.5


def chain_for_call() -> bytes:
    """The running event's chain, or a fresh one for a call that starts a chain; the
    running event is marked as having called out."""
    effects = current_effects.get()
    if effects is not None:
        effects.called_out = True
    return current_chain.get() or os.urandom(8)


def timeout_for_call(call_timeout: float) -> float:
    """A nested call gives up before the running event's own caller does, so the event
    can catch ``CallTimeout`` and still answer."""
    remaining = current_deadline.get() - time.monotonic() - _HANDLING_MARGIN
    return max(0.1, min(call_timeout, remaining))


@dataclass(slots=True)
class Invocation:
    namespace: str
    object_id: bytes
    chain: bytes
    timeout: float
    request: Request | None = None  # set for fetch
    method: str = ""  # set for RPC
    args: bytes = b""  # msgpack [args, kwargs]
    revision: int = 0
    hops: int = 0
    object_name: str = ""  # for ids from id_from_name


# What a call produces: a Response for fetch, msgpack bytes for RPC.
Outcome = Response | bytes


class Transport(Protocol):
    """Delivers an invocation to the object's home and returns its outcome.

    Raises an ``AbodeError`` for refusals, timeouts and handler errors.
    """

    async def invoke(self, inv: Invocation) -> Outcome: ...
