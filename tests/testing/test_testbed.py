"""abode.testing.ObjectTestbed: the real runtime in-process, for users' unit tests."""

from __future__ import annotations

import asyncio
import os

import pytest

from abode.cluster.errors import Overloaded, RemoteError, UnknownMethod
from abode.testing import ObjectTestbed, SocketClosed, UpgradeRefused
from examples.chat import ChatRoom
from examples.counter import Counter
from examples.ratelimit import RateLimiter
from tests.harness import assert_eventually
from tests.testing.objects import Account, Bank, Booted, Echo, Faulty, Reminder

pytestmark = pytest.mark.timeout(60)


# -- the counter example --------------------------------------------------------------
async def test_counter_fetch_rpc_and_durable_storage() -> None:
    async with ObjectTestbed(Counter) as tb:
        stub = tb.get("clicks")
        resp = await stub.fetch("/increment", method="POST")
        assert resp.status == 200
        assert await resp.json() == {"value": 1}
        assert await stub.add(2) == 3
        resp = await stub.fetch("/")
        assert await resp.json() == {"value": 3}
        assert tb.storage("clicks") == {"value": 3}
        assert tb.storage("other") == {}
        assert (await stub.fetch("/", method="DELETE")).status == 405


async def test_counter_one_event_at_a_time_under_concurrency() -> None:
    async with ObjectTestbed(Counter) as tb:
        stub = tb.get("hot")
        await asyncio.gather(*(stub.add(1) for _ in range(50)))
        assert await stub.value() == 50
        assert tb.storage("hot") == {"value": 50}


async def test_state_survives_restart(tmp_path) -> None:  # type: ignore[no-untyped-def]
    async with ObjectTestbed(Counter, data_dir=tmp_path / "data") as tb:
        await tb.get("kept").add(5)
        await tb.restart()
        assert not tb.is_active("kept")
        assert await tb.get("kept").value() == 5
    # A data_dir the caller gave is kept; a new testbed on it sees the same state.
    async with ObjectTestbed(Counter, data_dir=tmp_path / "data") as tb:
        assert tb.storage("kept") == {"value": 5}


async def test_temporary_data_dir_is_removed() -> None:
    tb = ObjectTestbed(Counter)
    async with tb:
        await tb.get("x").add(1)
        directory = tb._dir
    assert directory and not os.path.exists(directory)


# -- alarms ------------------------------------------------------------------------
async def test_run_alarm_fires_a_pending_alarm_now() -> None:
    async with ObjectTestbed(Reminder) as tb:
        stub = tb.get("tea")
        assert await tb.run_alarm("tea") is False  # none set
        set_at = await (await stub.fetch("/in/3600", method="POST")).json()
        assert tb.alarm("tea") == set_at["alarm"]
        assert await tb.run_alarm("tea") is True
        assert tb.storage("tea")["rang"] == 1
        assert tb.alarm("tea") is None  # a successful alarm() clears it
        assert await tb.run_alarm("tea") is False


async def test_alarm_that_sets_a_new_alarm_keeps_it_and_sees_retry_count() -> None:
    async with ObjectTestbed(Reminder) as tb:
        stub = tb.get("again")
        await stub.fetch("/in/3600", method="POST")
        first = tb.alarm("again")
        await stub.ring_again()
        assert await tb.run_alarm("again", retry_count=3) is True
        assert tb.storage("again")["last_retry_count"] == 3
        assert tb.alarm("again") is not None and tb.alarm("again") != first


async def test_alarm_that_raises_discards_its_writes_and_stays_set() -> None:
    async with ObjectTestbed(Reminder) as tb:
        stub = tb.get("broken")
        await stub.fetch("/in/3600", method="POST")
        await stub.set_failing(True)
        with pytest.raises(RemoteError) as failed:
            await tb.run_alarm("broken")
        assert str(failed.value) == "RuntimeError: alarm failed"
        assert "rang" not in tb.storage("broken")
        assert tb.alarm("broken") is not None


async def test_due_alarm_fires_on_its_own_and_survives_restart(tmp_path) -> None:  # type: ignore[no-untyped-def]
    async with ObjectTestbed(Reminder, data_dir=tmp_path / "d") as tb:
        await tb.get("later").fetch("/in/3600", method="POST")
        await tb.restart()
        assert tb.alarm("later") is not None
        assert tb.runtime.alarms.pending == 1  # reloaded from the node-wide index
        await tb.get("soon").fetch("/in/0", method="POST")
        await assert_eventually(lambda: tb.storage("soon").get("rang") == 1)


async def test_rate_limiter_window_closed_by_run_alarm() -> None:
    async with ObjectTestbed(RateLimiter) as tb:
        limiter = tb.get("ada")
        assert (await limiter.hit(2, 3600.0))["allowed"]
        assert (await limiter.hit(2, 3600.0))["allowed"]
        assert not (await limiter.hit(2, 3600.0))["allowed"]
        assert await tb.run_alarm("ada")
        assert (await limiter.hit(2, 3600.0))["allowed"]


# -- RPC between classes -------------------------------------------------------------
async def test_rpc_between_two_classes() -> None:
    async with ObjectTestbed(Bank, Account) as tb:
        bank = tb.get("central")
        assert await bank.pay("ada", 10) == 10
        assert await bank.pay("ada", 5) == 15
        assert await tb.get("ada", Account).balance() == 15
        assert tb.storage("ada", Account) == {"balance": 15}
        assert tb.storage("central") == {"payments": 2}
        # The namespace may be given by name, and env stubs work too.
        assert await tb.get("ada", "Account").balance() == 15
        assert await tb.env.Account.get_by_name("ada").balance() == 15


async def test_call_cycle_in_one_chain_does_not_deadlock() -> None:
    async with ObjectTestbed(Bank, Account) as tb:
        await tb.get("b").pay("ada", 1)
        assert await tb.get("b").audit_via("ada", "b") == 1


# -- eviction and cold starts --------------------------------------------------------
async def test_evict_all_makes_the_next_call_a_cold_start() -> None:
    async with ObjectTestbed(Booted) as tb:
        stub = tb.get("svc")
        assert await stub.boots() == 1
        assert tb.is_active("svc")
        before = tb.activations
        assert await tb.evict_all() == 1
        assert not tb.is_active("svc")
        assert await stub.boots() == 2  # the constructor ran again and loaded state
        assert tb.activations == before + 1
        assert tb.storage("svc") == {"boots": 2}
        assert await tb.evict("svc") is True
        assert await tb.evict("svc") is False


# -- errors --------------------------------------------------------------------------
async def test_handler_exception_gives_500_and_remote_error() -> None:
    async with ObjectTestbed(Faulty) as tb:
        stub = tb.get("f")
        resp = await stub.fetch("/")
        assert resp.status == 500
        assert await resp.json() == {"error": "ValueError: boom"}
        # Through env, as an edge function or another object sees it:
        with pytest.raises(RemoteError) as fetch_error:
            await tb.env.Faulty.get_by_name("f").fetch("/")
        assert fetch_error.value.remote_type == "ValueError"
        with pytest.raises(RemoteError) as rpc_error:
            await stub.explode()
        assert rpc_error.value.remote_type == "KeyError"
        assert "missing" in rpc_error.value.message
        # Each event is atomic: the writes of the raising handlers were discarded,
        # and the object stayed up.
        assert tb.storage("f") == {}
        activations = tb.activations
        assert await stub.fine() == "ok"
        assert tb.activations == activations


async def test_unknown_and_private_methods_are_refused() -> None:
    async with ObjectTestbed(Faulty) as tb:
        with pytest.raises(UnknownMethod):
            await tb.get("f").nope()
        with pytest.raises(UnknownMethod):
            await tb.get("f").alarm(None)  # event handlers are not RPC methods


async def test_overload_is_503_with_retry_after() -> None:
    async with ObjectTestbed(Counter, max_queue=1) as tb:
        stub = tb.get("busy")
        results = await asyncio.gather(
            *(stub.fetch("/increment", method="POST") for _ in range(20))
        )
        statuses = {r.status for r in results}
        assert statuses <= {200, 503} and 503 in statuses
        refused = next(r for r in results if r.status == 503)
        assert await refused.json() == {"error": "overloaded"}
        assert refused.headers["Retry-After"] == "1"
        with pytest.raises(Overloaded):
            await asyncio.gather(*(stub.add(1) for _ in range(20)))


async def test_wait_until_and_settle() -> None:
    async with ObjectTestbed(Faulty) as tb:
        await tb.get("w").later()
        await tb.settle()
        assert tb.storage("w") == {"later": True}


def test_rejects_classes_that_are_not_durable_objects() -> None:
    with pytest.raises(TypeError):
        ObjectTestbed(dict)  # type: ignore[arg-type]


# -- WebSockets ----------------------------------------------------------------------
async def test_websocket_echo_hibernation_and_close() -> None:
    async with ObjectTestbed(Echo) as tb:
        ada = await tb.websocket("room", "/?user=ada&tag=red")
        bob = await tb.websocket("room", "/?user=bob&tag=blue")
        ada.send("hi")
        assert await ada.receive() == "ada: hi"
        assert await bob.receive() == "ada: hi"
        # Hibernation: the object leaves memory, the sockets stay open, and a
        # message wakes it with the attachment intact.
        await tb.evict_all()
        assert not tb.is_active("room")
        activations = tb.activations
        bob.send("back")
        assert await ada.receive() == "bob: back"
        assert await bob.receive() == "bob: back"
        assert tb.activations == activations + 1
        # Client close: websocket_close runs and no longer lists the socket.
        ada.close(4001, "leaving")
        await assert_eventually(lambda: tb.storage("room").get("closed") == [4001, "leaving", 1])
        # Object close reaches the client.
        bob.send("bye")
        assert await bob.receive() == "bob: bye"
        with pytest.raises(SocketClosed) as closed:
            await bob.receive()
        assert (closed.value.code, closed.value.reason) == (4000, "asked to")


async def test_websocket_refused_and_closed_on_restart() -> None:
    async with ObjectTestbed(Counter) as tb:  # answers the upgrade with plain JSON
        with pytest.raises(UpgradeRefused) as refused:
            await tb.websocket("c")
        assert refused.value.response.status == 200
    async with ObjectTestbed(Echo) as tb:
        ws = await tb.websocket("r")
        await tb.restart()
        with pytest.raises(SocketClosed) as closed:
            await ws.receive()
        assert closed.value.code == 1012


async def test_chat_example_in_a_testbed() -> None:
    async with ObjectTestbed(ChatRoom) as tb:
        ada = await tb.websocket("lobby", "/ws?user=ada")
        history = await ada.receive()
        assert '"type":"history"' in history
        assert '"type":"join"' in await ada.receive()
        ada.send('{"type":"ping"}')  # the auto-response: the room is not woken
        assert await ada.receive() == '{"type":"pong"}'
        ada.send("hello")
        message = await ada.receive()
        assert '"text":"hello"' in message and '"user":"ada"' in message
        stored = tb.storage("lobby")
        assert stored["seq"] == 1 and stored["msg:000000000001"]["text"] == "hello"


async def test_not_started_testbed_says_so() -> None:
    tb = ObjectTestbed(Counter)
    with pytest.raises(RuntimeError, match="not started"):
        tb.get("x")
