"""Membership, liveness and leases against a real etcd (DESIGN §3)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest

from abode.cluster.membership import (
    EtcdSession,
    EtcdUnavailableError,
    LiveNode,
    MembershipSnapshot,
    MembershipView,
    parse_etcd_endpoints,
)
from abode.cluster.ring import Member
from tests.cluster.etcd import EtcdProcess, free_port

pytestmark = pytest.mark.timeout(30)

# etcd's shortest lease (its minimum with default election timing); keeps tests quick.
TTL = 2.0


async def eventually(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll `check` until true; returns the monotonic time it first held."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return time.monotonic()
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def session(etcd: EtcdProcess) -> AsyncIterator[EtcdSession]:
    s = await EtcdSession.connect(etcd.url, ttl=TTL)
    yield s
    await s.close()


@pytest.fixture
async def observer(etcd: EtcdProcess) -> AsyncIterator[MembershipView]:
    """A view from a second session, as another process (a router) would hold."""
    s = await EtcdSession.connect(etcd.url, ttl=TTL)
    view = await MembershipView.start(s)
    yield view
    await view.stop()
    await s.close()


# -- endpoints and connecting -------------------------------------------------------------


def test_parse_etcd_endpoints() -> None:
    assert parse_etcd_endpoints("http://127.0.0.1:2379") == [("127.0.0.1", 2379)]
    assert parse_etcd_endpoints("http://a:1, http://b:2/") == [("a", 1), ("b", 2)]
    assert parse_etcd_endpoints("http://[::1]:2379") == [("::1", 2379)]
    for bad in [
        "",
        "127.0.0.1:2379",
        "https://a:1",
        "http://a",
        "http://a:x",
        "http://a:1/v3",
        "http://a:1,",
        "http://u:p@a:1",
        "http://:1",
    ]:
        with pytest.raises(ValueError, match="etcd"):
            parse_etcd_endpoints(bad)


async def test_connect_fails_clearly_when_etcd_is_unreachable() -> None:
    started = time.monotonic()
    with pytest.raises(EtcdUnavailableError, match="unreachable") as info:
        await EtcdSession.connect(f"http://127.0.0.1:{free_port()}", timeout=1.0)
    assert isinstance(info.value, ConnectionError)
    assert time.monotonic() - started < 4


async def test_connect_skips_a_dead_endpoint(etcd: EtcdProcess) -> None:
    s = await EtcdSession.connect(f"http://127.0.0.1:{free_port()},{etcd.url}", timeout=5)
    try:
        assert s.endpoint == ("127.0.0.1", etcd.client_port)
        await s.register_member(Member("n1", "127.0.0.1:1"))
    finally:
        await s.close()


def test_snapshot_ignores_foreign_and_malformed_keys() -> None:
    snap = MembershipSnapshot(revision=1)
    p = "/abode/"
    assert snap.apply(p, b"/abode/members/n1", b'{"address": "h:1", "weight": 200}') == "members"
    assert snap.apply(p, b"/abode/live/n1", b'{"address": "h:2", "started": 5}') == "live"
    assert snap.apply(p, b"/abode/config/replicas", b"2") == "config"
    assert snap.config == {"replicas": 2}
    assert snap.apply(p, b"/abode/other/x", b"{}") is None
    assert snap.apply(p, b"/abode2/members/n9", b'{"address": "h:9"}') is None
    assert snap.apply(p, b"/abode/members/a/b", b'{"address": "h:9"}') is None
    assert snap.apply(p, b"/abode/members/n2", b"not json") is None
    assert snap.apply(p, b"/abode/members/n3", b"[1, 2]") is None
    # A good key overwritten with garbage is dropped rather than kept stale.
    assert snap.apply(p, b"/abode/live/n1", b'{"started": 1}') == "live"
    assert snap.members == {"n1": Member("n1", "h:1", 200)}
    assert snap.live == {}
    snap.apply(p, b"/abode/live/n1", b'{"address": "h:2", "started": 5}')
    assert snap.live == {"n1": LiveNode("h:2", 5)}
    assert snap.apply(p, b"/abode/live/n1", None) == "live" and snap.live == {}


# -- membership ---------------------------------------------------------------------------


async def test_members_appear_in_another_sessions_view(
    session: EtcdSession, observer: MembershipView
) -> None:
    changes: list[int] = []
    observer.add_listener(lambda v: changes.append(v.revision))
    start_revision = observer.ring.revision

    assert await session.register_member(Member("n1", "127.0.0.1:7001"))
    assert await session.register_member(Member("n2", "127.0.0.1:7002", weight=200))
    await observer.wait_for(lambda v: {"n1", "n2"} <= set(v.members), timeout=5)
    assert observer.members["n2"] == Member("n2", "127.0.0.1:7002", 200)
    assert set(observer.ring.members) == {"n1", "n2"}
    first_ring = observer.ring.revision
    assert first_ring > start_revision
    assert changes and changes == sorted(changes)

    # A restart with the same settings writes nothing: no revision bump, no data move.
    assert not await session.register_member(Member("n1", "127.0.0.1:7001"))

    # A weight change is a membership change and rebuilds the ring at a newer revision.
    assert await session.register_member(Member("n1", "127.0.0.1:7001", weight=300))
    await observer.wait_for(lambda v: v.members["n1"].weight == 300, timeout=5)
    assert observer.ring.revision > first_ring
    assert observer.ring.shares()["n1"] > observer.ring.shares()["n2"]

    # A fresh view of the same etcd agrees with the one kept by the watch.
    fresh = await session.snapshot()
    assert fresh.members == observer.members
    assert fresh.revision == observer.revision


async def test_remove_member(session: EtcdSession, observer: MembershipView) -> None:
    await session.register_member(Member("n1", "127.0.0.1:7001"))
    await session.register_member(Member("n2", "127.0.0.1:7002"))
    await observer.wait_for(lambda v: len(v.members) == 2, timeout=5)
    before = observer.ring.revision

    assert await session.remove_member("n1")
    assert not await session.remove_member("n1")
    await observer.wait_for(lambda v: "n1" not in v.members, timeout=5)
    assert list(observer.ring.members) == ["n2"]
    assert observer.ring.revision > before


# -- liveness -----------------------------------------------------------------------------


async def test_live_key_vanishes_when_the_lease_stops_renewing(
    session: EtcdSession, observer: MembershipView
) -> None:
    await session.register_member(Member("n1", "127.0.0.1:7001"))
    lease = await session.start_lease()
    await session.set_live("n1", "127.0.0.1:7001", lease)
    await observer.wait_for(lambda v: "n1" in v.live, timeout=5)
    assert observer.address_of("n1") == "127.0.0.1:7001"

    # Outlive one TTL while renewing, to prove the keepalive really keeps it.
    held_until = time.monotonic() + lease.ttl + 0.5
    await eventually(lambda: time.monotonic() > held_until, lease.ttl + 1, "one TTL passes")
    assert "n1" in observer.live and lease.fresh()

    ring_before = observer.ring
    await lease.stop_keepalive()  # as if the process froze or crashed
    stopped = time.monotonic()
    await observer.wait_for(lambda v: "n1" not in v.live, timeout=lease.ttl + 2)
    assert time.monotonic() - stopped <= lease.ttl + 2
    # Liveness ended; membership (and therefore the ring) did not change.
    assert "n1" in observer.members
    assert observer.ring is ring_before


async def test_revoke_removes_live_and_router_keys_at_once(
    session: EtcdSession, observer: MembershipView
) -> None:
    lease = await session.start_lease()
    await session.set_live("n1", "127.0.0.1:7001", lease)
    await session.register_router("r1", lease, address="127.0.0.1:8787")
    await observer.wait_for(lambda v: "n1" in v.live and "r1" in v.routers, timeout=5)
    assert observer.router_info["r1"]["address"] == "127.0.0.1:8787"

    await lease.revoke()
    assert lease.expired and not lease.fresh()
    await observer.wait_for(lambda v: not v.live and not v.routers, timeout=1.5)


async def test_lease_fences_itself_before_expiry_when_etcd_hangs(
    etcd: EtcdProcess, session: EtcdSession, observer: MembershipView
) -> None:
    margin = 0.5
    lease = await session.start_lease()
    await session.set_live("n1", "127.0.0.1:7001", lease)
    await observer.wait_for(lambda v: "n1" in v.live, timeout=5)
    assert lease.fresh(margin)

    etcd.pause()
    try:
        unfresh_at = await eventually(
            lambda: not lease.fresh(margin), lease.ttl + 1, "lease turns stale"
        )
        # Fenced strictly before etcd could expire the lease (TTL after the last
        # renewal etcd acknowledged, which is no earlier than when we sent it).
        assert unfresh_at < lease.last_renewal + lease.ttl
        assert not lease.expired
        # Keep etcd frozen past the TTL so the lease is really dead when it wakes.
        dead_after = lease.last_renewal + lease.ttl + 0.5
        await eventually(lambda: time.monotonic() > dead_after, lease.ttl + 1, "TTL passes")
    finally:
        etcd.resume()

    # etcd revokes the expired lease on waking; the keepalive must notice and say so.
    await asyncio.wait_for(lease.wait_expired(), timeout=6)
    assert lease.expired and not lease.fresh(0)
    await observer.wait_for(lambda v: "n1" not in v.live, timeout=5)


# -- recovery -----------------------------------------------------------------------------


async def test_view_recovers_after_etcd_restart(
    etcd: EtcdProcess, session: EtcdSession, observer: MembershipView
) -> None:
    await session.register_member(Member("n1", "127.0.0.1:7001"))
    await observer.wait_for(lambda v: "n1" in v.members, timeout=5)

    await asyncio.to_thread(etcd.restart)

    async def register_when_back() -> None:
        deadline = time.monotonic() + 10
        while True:
            try:
                await session.register_member(Member("n2", "127.0.0.1:7002"))
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)

    await register_when_back()
    await observer.wait_for(lambda v: {"n1", "n2"} <= set(v.members), timeout=10)
    assert set(observer.ring.members) == {"n1", "n2"}


async def test_wait_for_times_out_with_context(observer: MembershipView) -> None:
    with pytest.raises(TimeoutError, match="membership condition"):
        await observer.wait_for(lambda v: "nobody" in v.members, timeout=0.2)
