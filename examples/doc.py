"""A collaborative text document: every edit goes through one object, in one order.

Each document is one object holding the text, its version (the number of edits
applied so far) and the log of those edits. Clients send one edit at a time, each
saying which version it was made against (``base``):

    curl localhost:8787/Document/notes                 -> {"version": 0, "text": ""}
    curl -X POST localhost:8787/Document/notes/edit \\
         -d '{"client": "ada", "base": 0, "op": "insert", "pos": 0, "text": "hello"}'
                                                       -> {"version": 1}
    curl -X POST localhost:8787/Document/notes/edit \\
         -d '{"client": "bob", "base": 0, "op": "insert", "pos": 0, "text": "hi"}'
                                                       -> 409 {"error": "stale base version",
                                                              "version": 1, "text": "hello"}
    curl -X POST localhost:8787/Document/notes/edit \\
         -d '{"client": "ada", "base": 1, "op": "delete", "pos": 0, "count": 1}'
    curl 'localhost:8787/Document/notes/ops?since=0'   -> {"version": 2, "ops": [...]}

The object runs one request at a time, so edits are applied in one total order and
every replica of the text (each client's, or a replay of ``/ops``) is the same.
Conflict handling is deliberately the simplest that is correct: an edit whose base is
not the current version is rejected with 409, and the answer carries the current
version and text so the client re-makes its edit against them and retries. Someone
wins every round, so the document always makes progress. (Operational transform or
a CRDT would accept stale edits by rewriting positions; that is an optimisation of
this protocol, not a different guarantee.)

An edit may carry ``seq``, an integer the client increases with each edit: an edit
whose seq is not above the last applied one from that client is answered as a
duplicate without applying it again, so a client may safely resend an edit whose
answer it never received. Positions count Unicode code points (Python ``str``).
"""

from __future__ import annotations

from typing import Any

from abode import DurableObject, Request, Response

MAX_TEXT_BYTES = 100_000  # stored as one value; the value limit is 128 KiB
MAX_OPS_PER_PAGE = 1000
OP = "op:"  # op:<10-digit version> -> the edit that produced that version


class EditError(ValueError):
    def __init__(self, message: str, status: int = 400, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.extra = extra


class Document(DurableObject):
    async def fetch(self, request: Request) -> Response:
        method, path = request.method, request.path.rstrip("/") or "/"
        if (method, path) == ("GET", "/"):
            return Response.json(await self.snapshot())
        if (method, path) == ("GET", "/ops"):
            try:
                since = int(request.query.get("since", 0))
            except ValueError:
                return Response.json({"error": "since must be an integer"}, status=400)
            return Response.json(await self.ops(since))
        if (method, path) == ("POST", "/edit"):
            try:
                edit = await request.json()
                return Response.json(await self.edit(edit))
            except EditError as exc:
                return Response.json({"error": str(exc), **exc.extra}, status=exc.status)
            except ValueError:
                return Response.json({"error": "body must be a JSON edit"}, status=400)
        return Response.json(
            {"error": "GET /, GET /ops?since=v, POST /edit {client, base, op, pos, ...}"},
            status=404,
        )

    # -- RPC methods ------------------------------------------------------------------
    async def snapshot(self) -> dict[str, Any]:
        storage = self.ctx.storage
        return {"version": await storage.get("version", 0), "text": await storage.get("text", "")}

    async def ops(self, since: int = 0) -> dict[str, Any]:
        """The edits that made versions since+1, since+2, ... (at most a page of them)."""
        version = await self.ctx.storage.get("version", 0)
        since = max(0, since)
        listed = await self.ctx.storage.list(
            prefix=OP, start_after=f"{OP}{since:010d}", limit=MAX_OPS_PER_PAGE
        )
        ops = list(listed.values())
        more = bool(ops) and ops[-1]["version"] < version
        return {"version": version, "ops": ops, "more": more}

    async def edit(self, edit: Any) -> dict[str, Any]:
        """Apply one edit made against version ``edit["base"]``; raises EditError."""
        storage = self.ctx.storage
        op = _validate(edit)
        client, seq = op["client"], op.get("seq")
        version = await storage.get("version", 0)
        text = await storage.get("text", "")
        if seq is not None:
            last = await storage.get(f"client:{client}")
            if last is not None and seq <= last["seq"]:
                return {"version": version, "duplicate": True, "applied_as": last["version"]}
        if edit["base"] != version:
            raise EditError("stale base version", 409, version=version, text=text)
        text = _apply(text, op)
        if len(text.encode()) > MAX_TEXT_BYTES:
            raise EditError(f"the document would exceed {MAX_TEXT_BYTES} bytes", 413)
        version += 1
        op["version"] = version
        writes: dict[str, Any] = {"version": version, "text": text, f"{OP}{version:010d}": op}
        if seq is not None:
            writes[f"client:{client}"] = {"seq": seq, "version": version}
        await storage.put(writes)
        return {"version": version}


def _validate(edit: Any) -> dict[str, Any]:
    """The edit as it is logged: client, op, pos, text or count, and seq if given."""
    if not isinstance(edit, dict):
        raise EditError("an edit is a JSON object")
    client, base, kind, pos = edit.get("client"), edit.get("base"), edit.get("op"), edit.get("pos")
    if not isinstance(client, str) or not 0 < len(client) <= 100:
        raise EditError("client must be a non-empty string of at most 100 characters")
    if not _is_int(base) or not _is_int(pos) or pos < 0:
        raise EditError("base and pos must be integers, pos >= 0")
    op: dict[str, Any] = {"client": client, "op": kind, "pos": pos}
    if kind == "insert":
        if not isinstance(edit.get("text"), str) or not edit["text"]:
            raise EditError("an insert needs a non-empty text")
        op["text"] = edit["text"]
    elif kind == "delete":
        if not _is_int(edit.get("count")) or edit["count"] < 1:
            raise EditError("a delete needs count >= 1")
        op["count"] = edit["count"]
    else:
        raise EditError('op must be "insert" or "delete"')
    if "seq" in edit:
        if not _is_int(edit["seq"]):
            raise EditError("seq must be an integer")
        op["seq"] = edit["seq"]
    return op


def _apply(text: str, op: dict[str, Any]) -> str:
    pos = op["pos"]
    if op["op"] == "insert":
        if pos > len(text):
            raise EditError(f"insert at {pos} is past the end ({len(text)})")
        return text[:pos] + op["text"] + text[pos:]
    if pos + op["count"] > len(text):
        raise EditError(f"delete of {op['count']} at {pos} is past the end ({len(text)})")
    return text[:pos] + text[pos + op["count"]:]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def replay(ops: list[dict[str, Any]], text: str = "") -> str:
    """Apply logged edits in order: what any client does to catch up from ``/ops``."""
    for op in ops:
        text = _apply(text, op)
    return text
