"""``abode status`` and ``abode remove``: look at and change a running cluster."""

from __future__ import annotations

import asyncio

import grpc

from cluster.membership import EtcdSession
from cluster.peer import CHANNEL_OPTIONS
from cluster.ring import Ring
from cluster.rpc.v1 import node_pb2 as pb
from cluster.rpc.v1 import node_pb2_grpc as pb_grpc


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
          f"{'objects':>8} {'sockets':>8} {'alarms':>7}")
    for (node_id, member), info in zip(snap.members.items(), infos, strict=True):
        live = "yes" if node_id in snap.live else "no"
        objects = str(info.active_objects) if info else "-"
        sockets = str(info.open_sockets) if info else "-"
        alarms = str(info.pending_alarms) if info else "-"
        print(f"{node_id:<16} {member.address:<22} {live:<5} {member.weight:>6} "
              f"{shares.get(node_id, 0.0):>6.1%} {objects:>8} {sockets:>8} {alarms:>7}")
    for router_id, router in snap.routers.items():
        print(f"router {router_id:<12} {router.get('address', '')}")
    return 0


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
