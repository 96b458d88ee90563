"""Crash failover faster than a lease (DESIGN §3, "Changes under load").

A node whose process died leaves its live key in etcd until its lease lapses (the
TTL, 3 s by default), and its objects wait that long for a new home. But a crash is
visible at once to whoever holds a stream to the node: the stream breaks, and a new
connection to its port is refused, because the host is up and nobody listens. Then
there is no need to wait: the process that saw it revokes the node's lease, etcd
deletes its live key, and every view moves its objects to the next live copy.

Only ECONNREFUSED is proof. A connect that times out or finds no route says nothing
about the process (a partition, a paused process, a vanished host, a full backlog),
so those cases keep costing the TTL: the node may be alive and, cut off, still
inside its own lease.

Why revoking is safe even when the suspicion is wrong: nothing listening at an
address means nothing there can execute a call, and a holder that somehow still ran
learns at its next renewal (within TTL/3) that its lease is gone and fences itself,
while its replica writes are refused by nodes that no longer see it live; it then
rejoins with a new lease, catching up first. A false revoke costs a failover, never
a write.

Routers (which keep a stream to every live node) and nodes (streams to the peers
they replicate to) both feed `CrashDetector.suspect` from their streams' ``on_lost``.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time

from abode.cluster.membership import EtcdSession, live_key_at, revoke_live_lease
from abode.cluster.retry import describe

__all__ = ["PROBE_TIMEOUT", "CrashDetector", "refuses_connections"]

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 0.5
"""Seconds a probe connect may take; longer is inconclusive (not a refusal)."""

_QUIET_SECONDS = 1.0
"""After a check that found nothing to do, suspicions of the same address are ignored
this long: a peer's stream to a dead node keeps failing (about once a second) until
it learns the node is gone, and each failure must not cost etcd a read."""


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


async def refuses_connections(address: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether a TCP connect to `address` is refused (ECONNREFUSED) right now.

    False when it connects, times out or fails any other way: only a refusal says
    that the host is up and no process listens on the port.
    """
    host, port = _split(address)
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except ConnectionRefusedError:
        return True
    except (OSError, TimeoutError) as e:
        return getattr(e, "errno", None) == errno.ECONNREFUSED
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return False


class CrashDetector:
    """Revokes the lease of a node whose port refuses connections.

    `suspect(address)` is a plain callback (a stream to `address` broke or failed to
    connect); the check runs on a task of its own, at most one per address at a time.
    `revoked` counts leases this process ended (a metric, and what tests look for).
    """

    def __init__(self, session: EtcdSession, *, probe_timeout: float = PROBE_TIMEOUT) -> None:
        self._session = session
        self._probe_timeout = probe_timeout
        self._checks: dict[str, asyncio.Task[None]] = {}
        self._quiet_until: dict[str, float] = {}
        self._closed = False
        self.revoked = 0

    def suspect(self, address: str) -> None:
        if self._closed or address in self._checks:
            return
        if time.monotonic() < self._quiet_until.get(address, 0.0):
            return
        task = asyncio.get_running_loop().create_task(
            self._check(address), name=f"crash-check {address}")
        self._checks[address] = task
        task.add_done_callback(lambda _: self._checks.pop(address, None))

    async def _check(self, address: str) -> None:
        t0 = time.monotonic()
        try:
            # The key first, the probe second: a process that wrote a live key was
            # listening before it did (listen, then register), so a refusal seen
            # after this read means that key's holder no longer listens. A process
            # restarted on the same address after the probe has a new lease, which
            # revoke_live_lease leaves alone.
            key = await live_key_at(self._session, address)
            if key is None or not await refuses_connections(address, self._probe_timeout):
                self._quiet_until[address] = time.monotonic() + _QUIET_SECONDS
                return
            if await revoke_live_lease(self._session, key):
                self.revoked += 1
                log.warning("node %s at %s refuses connections: revoked its lease %x "
                            "%.0f ms after its stream broke, so its objects fail over now",
                            key.node_id, address, key.lease_id,
                            (time.monotonic() - t0) * 1000)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # etcd unreachable: the lease lapses by itself
            log.info("crash check of %s failed: %s", address, describe(e))
            self._quiet_until[address] = time.monotonic() + _QUIET_SECONDS

    async def stop(self) -> None:
        """Cancel checks in flight. Safe to call twice."""
        self._closed = True
        tasks = list(self._checks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
