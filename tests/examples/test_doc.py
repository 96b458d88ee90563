"""examples/doc.py: edits applied in one order; stale ones rejected and retried."""

from __future__ import annotations

import asyncio
import random
import re

from examples.doc import replay
from tests.examples.helpers import call, edit_until_applied, rpc

CLIENTS = 10
EDITS = 20


async def test_concurrent_clients_converge_with_every_insert_exactly_once(app, http):
    url = f"{app.url}/Document/shared"
    rng = random.Random(7)

    async def client(k):
        state = {"version": 0, "text": ""}
        applied = []
        for n in range(EDITS):

            def insert(text, token=f"[c{k}.{n:02d}]"):
                # Insert at a token boundary of the text this edit is made against.
                bounds = [0] + [m.end() for m in re.finditer(r"\]", text)]
                return {"op": "insert", "pos": rng.choice(bounds), "text": token}

            applied.append(await edit_until_applied(http, url, f"c{k}", n, insert, state))
        return applied, state

    results = await asyncio.gather(*(client(k) for k in range(CLIENTS)))
    versions = [applied for applied, _ in results]
    total = CLIENTS * EDITS
    # Every applied edit got its own version, 1..total, and each client's went in order.
    assert sorted(v for vs in versions for v in vs) == list(range(1, total + 1))
    assert all(vs == sorted(vs) for vs in versions)

    status, doc = await call(http, "GET", url)
    assert status == 200 and doc["version"] == total
    tokens = re.findall(r"\[c\d+\.\d\d\]", doc["text"])
    assert len(tokens) == total and "".join(tokens) == doc["text"]
    assert sorted(tokens) == sorted(f"[c{k}.{n:02d}]" for k in range(CLIENTS) for n in range(EDITS))

    # Anyone replaying the log from scratch reaches the same text.
    status, log = await call(http, "GET", f"{url}/ops?since=0")
    assert status == 200 and log["version"] == total and log["more"] is False
    assert [op["version"] for op in log["ops"]] == list(range(1, total + 1))
    assert replay(log["ops"]) == doc["text"]
    # And catching up from the middle agrees too.
    half = total // 2
    _, tail = await call(http, "GET", f"{url}/ops?since={half}")
    prefix = replay(log["ops"][:half])
    assert replay(tail["ops"], prefix) == doc["text"]
    assert await rpc(http, app.url, "Document/shared/snapshot") == doc
    # The last client to write knows the final text without asking.
    assert {"version": total, "text": doc["text"]} in [state for _, state in results]


async def test_stale_invalid_and_duplicate_edits(app, http):
    url = f"{app.url}/Document/notes"
    ins = {"client": "ada", "op": "insert", "pos": 0, "text": "hello world"}
    assert await call(http, "POST", f"{url}/edit", {**ins, "base": 0, "seq": 1}) == (
        200, {"version": 1})
    # A resend of an applied edit (same seq) is answered, not applied again.
    assert await call(http, "POST", f"{url}/edit", {**ins, "base": 0, "seq": 1}) == (
        200, {"version": 1, "duplicate": True, "applied_as": 1})
    # An edit against an old version is refused with what the client needs to rebase.
    assert await call(http, "POST", f"{url}/edit", {**ins, "client": "bob", "base": 0}) == (
        409, {"error": "stale base version", "version": 1, "text": "hello world"})
    delete = {"client": "bob", "base": 1, "op": "delete", "pos": 5, "count": 6}
    assert await call(http, "POST", f"{url}/edit", delete) == (200, {"version": 2})
    assert await call(http, "GET", url) == (200, {"version": 2, "text": "hello"})

    for bad in (
        {**delete, "base": 2, "count": 6},  # past the end
        {**ins, "base": 2, "pos": 6},  # past the end
        {**ins, "base": 2, "text": ""},
        {**ins, "base": 2, "op": "replace"},
        {**ins, "base": "2"},
        {**ins, "base": 2, "client": ""},
        {**ins, "base": 2, "pos": -1},
        [1, 2],
    ):
        status, body = await call(http, "POST", f"{url}/edit", bad)
        assert status == 400 and "error" in body, bad
    async with http.post(f"{url}/edit", data=b"not json") as resp:
        assert resp.status == 400
    status, body = await call(http, "POST", f"{url}/edit", {**ins, "base": 2, "text": "x" * 100_001})
    assert status == 413
    assert await call(http, "GET", url) == (200, {"version": 2, "text": "hello"})
    _, log = await call(http, "GET", f"{url}/ops?since=1")
    assert [(op["version"], op["op"]) for op in log["ops"]] == [(2, "delete")]
    assert (await call(http, "GET", f"{url}/ops?since=x"))[0] == 400
