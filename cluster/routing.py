"""Default routing: which object a path addresses (DESIGN §2)."""

from __future__ import annotations

from collections.abc import Container
from urllib.parse import unquote

from abode.cluster import ids
from abode.cluster.errors import InvalidId, UnknownNamespace


def route_request(path: str, namespaces: Container[str]) -> tuple[str, ids.ObjectId, str]:
    """Split ``path`` into (namespace, object id, the path the object sees).

    ``/{ns}/{name}/{rest}`` addresses ``id_from_name(name)``; ``/{ns}/id/{hex}/{rest}``
    addresses an id directly (hex is case-insensitive). Raises UnknownNamespace
    (404) or InvalidId (400).
    """
    parts = path.lstrip("/").split("/", 2)
    namespace = unquote(parts[0]) if parts else ""
    if not namespace:
        raise UnknownNamespace("no namespace in path; use /{namespace}/{name}/...")
    if namespace not in namespaces:
        raise UnknownNamespace(f"unknown namespace {namespace!r}")
    if len(parts) < 2 or not parts[1]:
        raise InvalidId(f"no object name in path; use /{namespace}/{{name}}/...")
    name = unquote(parts[1])
    rest = parts[2] if len(parts) > 2 else ""
    if name == "id":
        hex_id, _, rest = rest.partition("/")
        if not hex_id:
            raise InvalidId(f"no id in path; use /{namespace}/id/{{64 hex chars}}/...")
        object_id = ids.id_from_string(namespace, hex_id.lower())
    else:
        object_id = ids.id_from_name(namespace, name)
    return namespace, object_id, "/" + rest
