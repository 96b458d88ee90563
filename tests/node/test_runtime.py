"""The runtime's guarantees through a real ``abode dev`` over real HTTP (DESIGN §3, §5).

One process serves the module, with small limits: a short call timeout (deadlocks),
a small mailbox (overload) and a small body limit (413).
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from abode.cluster import ids
from tests.harness import assert_eventually
from tests.node.helpers import fetch_json, hex_of

APP = "tests.apps.runtime"
MAX_QUEUE = 4
MAX_BODY = 4096
CALL_TIMEOUT = 1.5


@pytest.fixture(scope="module")
def dev(module_dev):
    return module_dev(
        APP, "--max-queue", str(MAX_QUEUE), "--max-body", str(MAX_BODY),
        "--call-timeout", str(CALL_TIMEOUT),
    )


# -- routing ------------------------------------------------------------------------

async def test_unknown_namespace_is_404(dev, http):
    status, body = await fetch_json(http, "GET", f"{dev.url}/Nope/x/info")
    assert status == 404
    assert "Nope" in body["error"]


@pytest.mark.parametrize("path", [
    "/Box/id",                      # no hex at all
    "/Box/id/",                     # empty hex
    "/Box/id/xyz/info",             # not hex
    "/Box/id/" + "ab" * 31 + "/info",  # 31 bytes
    "/Box/id/" + "zz" * 32 + "/info",  # right length, not hex
])
async def test_malformed_id_is_400(dev, http, path):
    status, body = await fetch_json(http, "GET", dev.url + path)
    assert status == 400
    assert body["error"]


async def test_id_of_another_namespace_is_400(dev, http):
    other = ids.id_from_name("Probe", "ns-mismatch").hex
    status, body = await fetch_json(http, "GET", f"{dev.url}/Box/id/{other}/info")
    assert status == 400
    assert "namespace" in body["error"]


async def test_id_path_reaches_the_named_object_case_insensitively(dev, http):
    hex_id = hex_of("Box", "by-id")
    status, body = await fetch_json(http, "GET", f"{dev.url}/Box/by-id/info")
    assert status == 200 and body["id"] == hex_id
    for text in (hex_id, hex_id.upper()):
        status, again = await fetch_json(http, "GET", f"{dev.url}/Box/id/{text}/info")
        assert status == 200
        assert again["instance"] == body["instance"]  # the same live object


# -- handler errors -----------------------------------------------------------------

async def test_fetch_exception_is_500_json_and_its_writes_are_discarded(dev, http):
    base = f"{dev.url}/Box/fetch-raises"
    status, body = await fetch_json(http, "POST", f"{base}/put-then-raise?key=k&value=v")
    assert status == 500
    assert body == {"error": "ValueError: boom after put"}
    # The event was atomic: neither its put nor its alarm happened. The object lives on.
    assert await fetch_json(http, "GET", f"{base}/get?key=k") == (200, {"value": None})
    status, state = await fetch_json(http, "GET", f"{base}/alarm/state")
    assert state["alarm"] is None


@pytest.mark.parametrize(("route", "error"), [
    ("cancelled", "CancelledError"),
    ("base-exception", "Fatal: not an Exception"),
])
async def test_handler_raising_a_base_exception_fails_only_its_own_event(dev, http, route, error):
    """CancelledError from the handler's own awaits (or any BaseException) is that event's
    error: its writes are discarded, and the object keeps serving and committing."""
    base = f"{dev.url}/Box/base-exc-{route}"
    status, body = await asyncio.wait_for(
        fetch_json(http, "POST", f"{base}/{route}?key=k"), timeout=CALL_TIMEOUT + 5
    )
    assert status == 500 and error in body["error"], body
    assert await fetch_json(http, "GET", f"{base}/get?key=k") == (200, {"value": None})
    assert (await fetch_json(http, "POST", f"{base}/put?key=k&value=later"))[0] == 200
    assert await fetch_json(http, "GET", f"{base}/get?key=k") == (200, {"value": "later"})


async def test_rpc_exception_reaches_an_object_caller_as_remote_error(dev, http):
    status, body = await fetch_json(
        http, "GET", f"{dev.url}/Box/rpc-caller/call/boom/rpc-callee?m=bad+input"
    )
    assert status == 200
    assert body == {"type": "RemoteError", "remote_type": "ValueError", "message": "bad input"}


async def test_rpc_exception_reaches_the_edge_as_remote_error(dev, http):
    status, body = await fetch_json(http, "GET", f"{dev.url}/edge/boom/edge-callee?m=nope")
    assert status == 200
    assert body == {"type": "RemoteError", "remote_type": "ValueError", "message": "nope"}


async def test_rpc_values_round_trip(dev, http):
    status, body = await fetch_json(http, "GET", f"{dev.url}/edge/echo/echo-1?a=1&b=x")
    assert (status, body) == (200, {"value": ["1", "x"]})
    status, body = await fetch_json(http, "GET", f"{dev.url}/Box/echo-2/call/echo/echo-3?a=y")
    assert (status, body) == (200, {"value": ["y"]})


@pytest.mark.parametrize("method", ["nope", "alarm", "fetch_nothing", "ctx"])
async def test_unknown_rpc_method_is_a_clear_error(dev, http, method):
    # From the edge: UnknownMethod is not caught there, so the router answers 404.
    status, body = await fetch_json(http, "GET", f"{dev.url}/edge/{method}/unknown-m")
    assert status == 404
    assert method in body["error"] and "no public method" in body["error"]
    # From another object: a typed UnknownMethod.
    status, body = await fetch_json(http, "GET", f"{dev.url}/Box/um-caller/call/{method}/um")
    assert body["type"] == "UnknownMethod"
    assert method in body["message"]


async def test_private_rpc_method_is_refused_by_the_stub(dev, http):
    status, body = await fetch_json(http, "GET", f"{dev.url}/edge/_private/private-m")
    assert status == 500
    assert "_private" in body["error"] and "private" in body["error"].split(":", 2)[-1]


async def test_private_rpc_method_is_refused_by_the_node(dev):
    """The stub refuses ``_names`` locally; a raw call must be refused by the node too."""
    from abode.cluster.errors import UnknownMethod
    from abode.cluster.invocation import Invocation
    from abode.cluster.peer import PeerClient

    peer = PeerClient(dev.info["grpc"])
    try:
        inv = Invocation("Box", ids.id_from_name("Box", "private").raw, b"c" * 8, 5.0,
                         method="_private", args=b"\x92\x90\x80")
        with pytest.raises(UnknownMethod, match="_private"):
            await peer.invoke(inv)
    finally:
        await peer.close()


# -- call chains --------------------------------------------------------------------

async def test_call_chain_reentrancy_completes(dev, http):
    status, body = await fetch_json(http, "GET", f"{dev.url}/Box/chain-a/chain/chain-b")
    assert (status, body) == (200, {"value": "back:pong"})


async def test_concurrent_reentrant_calls_keep_their_own_writes(dev, http):
    base = f"{dev.url}/Box/fan-a"
    status, body = await fetch_json(http, "GET", f"{base}/fan-in/fan-b")
    assert (status, body) == (200, {"results": ["x ok", "ValueError: y fails"]})
    assert await fetch_json(http, "GET", f"{base}/get?key=y") == (200, {"value": None})
    assert await fetch_json(http, "GET", f"{base}/get?key=x") == (200, {"value": "written"})


async def test_two_chains_waiting_on_each_other_end_in_504(dev, http):
    a, b = f"{dev.url}/Box/dl-a", f"{dev.url}/Box/dl-b"
    results = await asyncio.gather(
        fetch_json(http, "GET", f"{a}/deadlock/dl-b"),
        fetch_json(http, "GET", f"{b}/deadlock/dl-a"),
    )
    statuses = sorted(s for s, _ in results)
    assert 504 in statuses, results
    assert set(statuses) <= {200, 504}, results
    # Both objects are usable afterwards.
    for url in (a, b):
        assert (await fetch_json(http, "GET", f"{url}/info"))[0] == 200


async def test_rpc_caller_of_a_deadlock_gets_call_timeout(dev, http):
    a, b = f"{dev.url}/Box/dlc-a", f"{dev.url}/Box/dlc-b"
    results = await asyncio.gather(
        fetch_json(http, "GET", f"{a}/deadlock/dlc-b?catch=1"),
        fetch_json(http, "GET", f"{b}/deadlock/dlc-a?catch=1"),
    )
    assert all(status in (200, 504) for status, _ in results), results

    async def caught() -> bool:
        for url in (a, b):
            _, body = await fetch_json(http, "GET", f"{url}/get?key=caught")
            if body["value"] != "CallTimeout":
                return False
        return True

    # Each object's RPC call ended in CallTimeout, which the object caught (its own
    # caller, the edge, waits no longer than it did, so may have given up first).
    await assert_eventually(caught, timeout=10)


# -- overload -----------------------------------------------------------------------

async def test_overload_is_503_with_retry_after_and_the_event_never_ran(dev, http):
    url = f"{dev.url}/Box/overload/slow?ms=150"

    async def one() -> tuple[int, dict, str | None]:
        async with http.post(url) as r:
            return r.status, await r.json(), r.headers.get("Retry-After")

    results = await asyncio.gather(*(one() for _ in range(4 * MAX_QUEUE)))
    ok = [r for r in results if r[0] == 200]
    refused = [r for r in results if r[0] == 503]
    assert len(ok) + len(refused) == len(results), results
    assert refused, "the mailbox bound was never hit"
    assert all(body == {"error": "overloaded"} and ra == "1" for _, body, ra in refused)
    # Every 200 ran exactly once, and no refused event ran.
    assert sorted(body["ran"] for _, body, _ in ok) == list(range(1, len(ok) + 1))
    _, body = await fetch_json(http, "GET", f"{dev.url}/Box/overload/ran")
    assert body["ran"] == len(ok)


# -- request bodies -----------------------------------------------------------------

async def test_body_over_max_body_is_413_with_content_length(dev, http):
    status, body = await fetch_json(http, "POST", f"{dev.url}/Box/big/info",
                                    data=b"x" * (MAX_BODY + 1))
    assert status == 413 and "limit" in body["error"]
    await _still_healthy(dev, http)


async def test_body_over_max_body_is_413_when_chunked(dev, http):
    async def chunks():
        for _ in range(8):
            yield b"y" * 1024

    status, body = await fetch_json(http, "POST", f"{dev.url}/Box/big-chunked/info",
                                    data=chunks())
    assert status == 413 and "limit" in body["error"]
    await _still_healthy(dev, http)


async def test_body_at_max_body_is_accepted(dev, http):
    status, _ = await fetch_json(http, "POST", f"{dev.url}/Box/max-ok/info", data=b"z" * MAX_BODY)
    assert status == 200


async def _still_healthy(dev, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{dev.url}/_abode/health") as r:
        assert r.status == 200
    assert (await fetch_json(http, "GET", f"{dev.url}/Box/after-413/info"))[0] == 200


# -- instance lifecycle -------------------------------------------------------------

async def test_abort_gives_the_next_event_a_fresh_instance(dev, http):
    base = f"{dev.url}/Box/aborter"
    _, before = await fetch_json(http, "GET", f"{base}/info")
    assert (await fetch_json(http, "POST", f"{base}/put?key=k&value=kept"))[0] == 200
    status, body = await fetch_json(http, "POST", f"{base}/abort")
    assert status == 500 and "asked to" in body["error"]
    _, after = await fetch_json(http, "GET", f"{base}/info")
    assert after["instance"] != before["instance"]
    assert after["activations"] == before["activations"] + 1
    # Storage is not lost by an abort: only the instance (and the aborting event) is.
    assert await fetch_json(http, "GET", f"{base}/get?key=k") == (200, {"value": "kept"})


async def test_events_queued_behind_an_abort_see_earlier_writes(dev, http):
    """put, abort and get, queued together: the fresh instance must read the put even
    though its commit may still be on its way to disk when the abort resets the object."""
    for i in range(5):
        caller = f"{dev.url}/edge/put_abort_get/pag-runner-{i}?t=pag-target-{i}"
        status, body = await fetch_json(http, "GET", caller)
        assert status == 200, body
        assert body["value"] == ["ok", "Aborted", "v"], body


async def test_wait_until_runs_after_the_event(dev, http):
    base = f"{dev.url}/Box/waiter"
    assert (await fetch_json(http, "POST", f"{base}/wait-until"))[0] == 200

    async def done() -> bool:
        _, body = await fetch_json(http, "GET", f"{base}/order")
        return body["order"] == ["event", "task"]

    await assert_eventually(done, timeout=5)


async def test_block_concurrency_while_in_constructor_runs_before_first_event(dev, http):
    urls = [f"{dev.url}/Boot/boot-1/"] * MAX_QUEUE  # all queued during activation
    results = await asyncio.gather(*(fetch_json(http, "GET", u) for u in urls))
    assert all(r == (200, {"loaded": True, "boots": 1}) for r in results), results
