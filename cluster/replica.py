"""What a home ships to its replicas, and what they answer.

``Batch`` is the unit of both group commit (node._store) and replication; it lives
here because the wire translation (cluster.wire) and the peer client need it too, and
imports run node -> cluster only. ``ReplicaAck`` is a replica's answer to one batch.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


@dataclass(slots=True)
class Batch:
    """Writes of one event (or activation) of one object: applied atomically."""

    object_id: bytes = b""
    version: int = 0
    namespace: str = ""
    puts: list[tuple[bytes, bytes]] = field(default_factory=list)
    deletes: list[bytes] = field(default_factory=list)
    index_puts: list[tuple[bytes, bytes]] = field(default_factory=list)
    index_deletes: list[bytes] = field(default_factory=list)
    base: int = 0  # the object's version before this batch
    # The fencing ticket of the object instance that wrote it (node._ownership),
    # checked at commit; it never leaves the node.
    ticket: object = None

    def __bool__(self) -> bool:
        return bool(self.puts or self.deletes or self.index_puts or self.index_deletes)

    @property
    def size(self) -> int:
        return sum(len(k) + len(v) for k, v in self.puts) + sum(len(k) for k in self.deletes)


class AckStatus(enum.Enum):
    OK = "ok"  # durable on the replica
    REFUSED = "refused"  # not taken, the replica's copy unchanged: ask again later
    UNREACHABLE = "unreachable"  # no answer (stream broke, timed out, closed): unknown
    FAILED = "failed"  # the replica tried and could not (disk, repair from the home)


@dataclass(frozen=True, slots=True)
class ReplicaAck:
    status: AckStatus
    message: str = ""  # why, when not OK

    @property
    def ok(self) -> bool:
        return self.status is AckStatus.OK

    def __str__(self) -> str:
        return self.status.value if self.ok else f"{self.status.value}: {self.message}"


ACK_OK = ReplicaAck(AckStatus.OK)

