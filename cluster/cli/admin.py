"""``abode status`` and ``abode remove``: look at and change a running cluster."""

from __future__ import annotations

import asyncio

import grpc

from abode.cluster.membership import EtcdSession, MembershipSnapshot
from abode.cluster.peer import CHANNEL_OPTIONS
from abode.cluster.ring import KEYSPACE, Ring
from abode.cluster.rpc.v1 import node_pb2 as pb
from abode.cluster.rpc.v1 import node_pb2_grpc as pb_grpc


async def _info(address: str) -> pb.InfoReply | None:
    try:
        async with grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
            return await pb_grpc.NodeStub(channel).Info(pb.InfoRequest(), timeout=2.0)
    except grpc.aio.AioRpcError:
        return None


async def status(etcd: str, cluster: str) -> int:
    session = await EtcdSession.connect(etcd, cluster)
    try:
        snap = await session.snapshot()
    finally:
        await session.close()
    ring = Ring(snap.members.values(), revision=snap.revision)
    shares = ring.shares() if snap.members else {}
    infos = await asyncio.gather(*(_info(m.address) for m in snap.members.values()))
    print(f"cluster {cluster!r} at etcd revision {snap.revision}: "
          f"{len(snap.members)} members, {len(snap.live)} live, {len(snap.routers)} routers")
    print(f"{'node':<16} {'address':<22} {'live':<5} {'weight':>6} {'share':>7} "
          f"{'objects':>8} {'sockets':>8} {'alarms':>7}  catching up from")
    for (node_id, member), info in zip(snap.members.items(), infos, strict=True):
        live = snap.live.get(node_id)
        objects = str(info.active_objects) if info else "-"
        sockets = str(info.open_sockets) if info else "-"
        alarms = str(info.pending_alarms) if info else "-"
        # Replication lag: a node is behind on the peers it still catches up from.
        lag = ", ".join(sorted(live.waiting)) if live and live.waiting else "-"
        print(f"{node_id:<16} {member.address:<22} {'yes' if live else 'no':<5} "
              f"{member.weight:>6} {shares.get(node_id, 0.0):>6.1%} {objects:>8} "
              f"{sockets:>8} {alarms:>7}  {lag}")
    for node_id, live in snap.live.items():
        if live.disk_full:
            print(f"node {node_id}: disk full, writes answer 503 until space returns "
                  f"({live.disk_full})")
    replicas = int(snap.config.get("replicas", 1))
    short = _under_replicated(ring, snap, replicas)
    print(f"copies per object: {replicas}; "
          + (f"{short:.1%} of the keyspace has fewer live, caught-up copies"
             if short else "every object has all its copies"))
    for router_id, router in snap.routers.items():
        print(f"router {router_id:<12} {router.get('address', '')}")
    return 0


def _under_replicated(ring: Ring, snap: MembershipSnapshot, replicas: int) -> float:
    """Share of the keyspace whose objects have fewer than ``replicas`` live copies
    that are caught up (0.0 when all are, or there is no ring)."""
    wanted = min(replicas, len(ring.members))
    short = 0
    for start, end in ring.arcs():
        prefs = ring.preference_list(start, replicas)
        good = sum(
            1 for n in prefs
            if n in snap.live and snap.live[n].waiting.isdisjoint(prefs)
        )
        if good < wanted:
            short += end - start
    return short / KEYSPACE


async def remove(node_id: str, etcd: str, cluster: str) -> int:
    session = await EtcdSession.connect(etcd, cluster)
    try:
        removed = await session.remove_member(node_id)
    finally:
        await session.close()
    if not removed:
        print(f"abode: {node_id} is not a member of cluster {cluster!r}")
        return 1
    print(f"removed {node_id} from cluster {cluster!r}: its ranges move to their new "
          "owners; a running node hands them off, then exits")
    return 0
