"""Small helpers shared by tests/node."""

from __future__ import annotations

from typing import Any

import aiohttp

from abode.cluster import ids


def hex_of(namespace: str, name: str) -> str:
    return ids.id_from_name(namespace, name).hex


async def fetch_json(
    http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, Any]:
    async with http.request(method, url, **kwargs) as r:
        return r.status, await r.json(content_type=None)
