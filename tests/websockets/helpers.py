"""Client-side helpers for the WebSocket tests: bounded receives and the node's Info RPC."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from typing import Any

import aiohttp
import grpc

from abode.cluster.rpc.v1 import node_pb2 as pb
from abode.cluster.rpc.v1 import node_pb2_grpc as pb_grpc
from tests.harness import DevProcess

APP = "tests.websockets.app"
RECEIVE_TIMEOUT = 10.0


async def receive(ws: aiohttp.ClientWebSocketResponse, timeout: float = RECEIVE_TIMEOUT) -> Any:
    """The next data frame: text frames are decoded as JSON when they are JSON."""
    msg = await ws.receive(timeout=timeout)
    if msg.type == aiohttp.WSMsgType.TEXT:
        try:
            return json.loads(msg.data)
        except ValueError:
            return msg.data
    if msg.type == aiohttp.WSMsgType.BINARY:
        return msg.data
    raise AssertionError(f"expected a data frame, got {msg.type.name} {msg.data!r} {msg.extra!r}")


async def receive_close(
    ws: aiohttp.ClientWebSocketResponse, timeout: float = RECEIVE_TIMEOUT
) -> tuple[int | None, str]:
    """Wait for the server's close frame; returns (code, reason). Data frames are skipped."""
    async with asyncio.timeout(timeout):
        while True:
            msg = await ws.receive()
            if msg.type == aiohttp.WSMsgType.CLOSE:
                return msg.data, msg.extra or ""
            if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                return ws.close_code, ""


async def active_objects(dev: DevProcess) -> int:
    """The node's own count of objects in memory, over a real gRPC call to its Info RPC."""
    async with grpc.aio.insecure_channel(dev.info["grpc"]) as channel:
        reply = await pb_grpc.NodeStub(channel).Info(pb.InfoRequest(), timeout=5)
        return int(reply.active_objects)


def upgrade_headers() -> dict[str, str]:
    """A WebSocket upgrade request's headers, for a plain GET that reads the answer."""
    return {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
    }
