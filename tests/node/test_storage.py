"""``ctx.storage`` semantics on a real RocksDB in tmp_path (DESIGN §2, §5).

Storage is driven the way the runtime drives it: ``begin()`` before an event,
``end()`` after it (its batch goes to the group committer) or ``discard()`` when the
event raised.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from abode.cluster import ids
from abode.cluster.codec import MAX_KEY_BYTES, MAX_VALUE_BYTES
from abode.cluster.errors import CommitUncertain
from abode.cluster.supervisor import Supervisor
from abode.node._fence import StaticFence
from abode.node._storage import MAX_BATCH_KEYS, Storage
from abode.node._store import GroupCommitter, Store

NS = "Test"


class Obj:
    """One object's storage, with events run as the runtime runs them."""

    def __init__(self, store: Store, committer: GroupCommitter, name: str) -> None:
        self.store = store
        self.committer = committer
        self.id = ids.id_from_name(NS, name).raw
        self.storage = Storage(self.id, NS, store)

    async def event(
        self, fn: Callable[[Storage], Awaitable[Any]], *, durable: bool = True
    ) -> Any:
        s = self.storage
        s.begin()
        try:
            result = await fn(s)
        except BaseException:
            s.discard()
            raise
        batch = s.end()
        if batch:
            s.last_commit = self.committer.submit(batch)
            if durable:
                await s.last_commit
        return result

    def fresh(self) -> Obj:
        """The same object after eviction: a new Storage over the same store."""
        return _reopen(self)


def _reopen(obj: Obj) -> Obj:
    other = object.__new__(Obj)
    other.store, other.committer, other.id = obj.store, obj.committer, obj.id
    other.storage = Storage(obj.id, NS, obj.store)
    return other


def open_store(path: str, *, sync: bool = True) -> Store:
    return Store(path, sync=sync, term=StaticFence().term)


def new_committer(store: Store, tasks: Supervisor) -> GroupCommitter:
    committer = GroupCommitter(store, fence=StaticFence().commit_refusal, replicate=None,
                               tasks=tasks)
    committer.start()
    return committer


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[tuple[Store, GroupCommitter]]:
    async with Supervisor("test") as sup:
        store = open_store(str(tmp_path / "db"))
        committer = new_committer(store, sup)
        yield store, committer
        await committer.close()
        store.close()
        assert sup.failure is None


@pytest.fixture
def obj(db: tuple[Store, GroupCommitter], request: pytest.FixtureRequest) -> Obj:
    return Obj(*db, request.node.name)


async def read(obj: Obj, fn: Callable[[Storage], Awaitable[Any]]) -> Any:
    """Run a read-only event on a fresh instance: what is durable."""
    return await obj.fresh().event(fn)


# -- get / put / delete -------------------------------------------------------------

async def test_get_default_put_get(obj):
    assert await obj.event(lambda s: s.get("missing")) is None
    assert await obj.event(lambda s: s.get("missing", 7)) == 7
    await obj.event(lambda s: s.put("k", {"a": [1, 2]}))
    assert await obj.event(lambda s: s.get("k", 7)) == {"a": [1, 2]}
    assert await read(obj, lambda s: s.get("k")) == {"a": [1, 2]}


async def test_batch_get_is_a_dict_in_key_order_without_missing_keys(obj):
    await obj.event(lambda s: s.put({"b": 2, "a": 1, "é": 3, "c": None}))
    got = await obj.event(lambda s: s.get(["é", "zz", "c", "b", "a"]))
    assert list(got.items()) == [("a", 1), ("b", 2), ("c", None), ("é", 3)]
    assert await obj.event(lambda s: s.get([])) == {}


async def test_delete_returns_bool_and_batch_delete_a_count(obj):
    await obj.event(lambda s: s.put({"a": 1, "b": 2, "c": 3}))

    async def ev(s: Storage) -> tuple[Any, ...]:
        await s.put("d", 4)  # uncommitted, in this very event
        return (await s.delete("a"), await s.delete("a"), await s.delete("nope"),
                await s.delete(["b", "d", "nope", "b"]))

    assert await obj.event(ev) == (True, False, False, 2)
    assert await read(obj, lambda s: s.list()) == {"c": 3}


@pytest.mark.parametrize("n", [MAX_BATCH_KEYS, MAX_BATCH_KEYS + 1])
async def test_batch_calls_take_at_most_128_keys(obj, n):
    keys = [f"k{i:03}" for i in range(n)]
    calls = [
        lambda s: s.put({k: 1 for k in keys}),
        lambda s: s.get(keys),
        lambda s: s.delete(keys),
    ]
    for call in calls:
        if n > MAX_BATCH_KEYS:
            with pytest.raises(ValueError, match="128"):
                await obj.event(call)
        else:
            await obj.event(call)
    if n > MAX_BATCH_KEYS:
        assert await read(obj, lambda s: s.list()) == {}


async def test_key_limit_is_2_kib_of_utf8_and_nothing_is_written(obj):
    await obj.event(lambda s: s.put("k" * MAX_KEY_BYTES, 1))  # exactly at the limit
    for key in ("k" * (MAX_KEY_BYTES + 1), "é" * (MAX_KEY_BYTES // 2 + 1)):
        with pytest.raises(ValueError, match="key"):
            await obj.event(lambda s, key=key: s.put(key, 1))
        with pytest.raises(ValueError, match="key"):
            await obj.event(lambda s, key=key: s.put({"ok": 1, key: 1}))
        with pytest.raises(ValueError, match="key"):
            await obj.event(lambda s, key=key: s.get(key))
    assert list(await read(obj, lambda s: s.list())) == ["k" * MAX_KEY_BYTES]


async def test_value_limit_is_128_kib_encoded_and_nothing_is_written(obj):
    fits = b"x" * (MAX_VALUE_BYTES - 5)  # msgpack bin32 header: 5 bytes
    await obj.event(lambda s: s.put("fits", fits))
    too_big = b"x" * MAX_VALUE_BYTES
    with pytest.raises(ValueError, match="limit"):
        await obj.event(lambda s: s.put("big", too_big))
    with pytest.raises(ValueError, match="limit"):
        await obj.event(lambda s: s.put({"small": 1, "big": too_big}))
    assert list(await read(obj, lambda s: s.list())) == ["fits"]


@pytest.mark.parametrize("value", [object(), {1, 2}, datetime.now(UTC), 2**64, [1, object()]])
async def test_values_that_msgpack_cannot_encode_are_value_errors(obj, value):
    with pytest.raises(ValueError, match="cannot be stored"):
        await obj.event(lambda s: s.put("k", value))
    with pytest.raises(ValueError, match="cannot be stored"):
        await obj.event(lambda s: s.put({"a": 1, "k": value}))
    assert await read(obj, lambda s: s.list()) == {}


@pytest.mark.parametrize("key", [1, b"bytes", None, ("t",)])
async def test_keys_must_be_str(obj, key):
    with pytest.raises(ValueError, match="str"):
        await obj.event(lambda s: s.put(key, 1))
    with pytest.raises(ValueError, match="str"):
        await obj.event(lambda s: s.get(key))


async def test_values_round_trip_and_tuples_come_back_as_lists(obj):
    values = {
        "none": None, "true": True, "int": -(2**63), "uint": 2**64 - 1, "float": 1.5,
        "str": "héllo", "bytes": b"\x00\xff", "list": [1, "a", None],
        "tuple": (1, (2, 3)), "dict": {"a": {"b": [1]}, "1": 2}, "empty": "",
    }
    await obj.event(lambda s: s.put(values))
    expected = {**values, "tuple": [1, [2, 3]]}
    assert await read(obj, lambda s: s.get(list(values))) == expected
    for key, value in expected.items():
        got = await read(obj, lambda s, key=key: s.get(key))
        assert got == value and type(got) is type(value)


async def test_mutating_values_does_not_change_stored_state(obj):
    value = [1, 2]

    async def ev(s: Storage) -> None:
        await s.put("k", value)
        value.append(3)  # after put: not stored
        got = await s.get("k")
        got.append(4)  # a returned value is the caller's own copy
        assert await s.get("k") == [1, 2]

    await obj.event(ev)
    got = await obj.event(lambda s: s.get("k"))
    got.append(5)
    assert await obj.event(lambda s: s.get("k")) == [1, 2]
    listed = await obj.event(lambda s: s.list())
    listed["k"].append(6)
    assert await read(obj, lambda s: s.get("k")) == [1, 2]


async def test_writes_outside_an_event_are_refused(obj):
    with pytest.raises(RuntimeError, match="inside an event"):
        await obj.storage.put("k", 1)


# -- atomic events and transactions -------------------------------------------------

async def test_an_event_that_raises_leaves_no_writes(obj):
    await obj.event(lambda s: s.put("kept", 1))

    async def ev(s: Storage) -> None:
        await s.put("kept", 2)
        await s.put("new", 1)
        await s.delete("kept")
        await s.set_alarm(10**13)
        raise KeyError("handler bug")

    with pytest.raises(KeyError):
        await obj.event(ev)
    assert await obj.event(lambda s: s.list()) == {"kept": 1}  # same instance
    assert await obj.event(lambda s: s.get_alarm()) is None
    assert await read(obj, lambda s: s.list()) == {"kept": 1}  # and on disk
    assert list(obj.store.alarm_index()) == []


async def test_transaction_that_raises_is_undone_and_the_exception_propagates(obj):
    async def ev(s: Storage) -> Any:
        await s.put({"before": 1, "x": 1})

        async def txn(t: Any) -> None:
            await t.put("x", 2)
            await t.put("inside", 1)
            await t.delete("before")
            assert await t.get("x") == 2 and await t.get("before") is None
            raise ArithmeticError("txn failed")

        with pytest.raises(ArithmeticError, match="txn failed"):
            await s.transaction(txn)
        return await s.list()  # the event carries on with its earlier writes

    assert await obj.event(ev) == {"before": 1, "x": 1}
    assert await read(obj, lambda s: s.list()) == {"before": 1, "x": 1}


async def test_transaction_rollback_undoes_its_writes(obj):
    async def ev(s: Storage) -> Any:
        await s.put("a", 1)

        async def txn(t: Any) -> str:
            await t.put("a", 2)
            await t.put("b", 2)
            t.rollback()
            return "result"

        assert await s.transaction(txn) == "result"

        async def committed(t: Any) -> None:
            await t.put("c", 3)

        await s.transaction(committed)
        return await s.list()

    assert await obj.event(ev) == {"a": 1, "c": 3}
    assert await read(obj, lambda s: s.list()) == {"a": 1, "c": 3}


async def test_delete_all(obj):
    await obj.event(lambda s: s.put({"a": 1, "b": 2}))

    async def ev(s: Storage) -> Any:
        await s.put("c", 3)  # uncommitted
        await s.delete_all()
        assert await s.list() == {} and await s.get("a") is None
        await s.put("after", 1)

    await obj.event(ev, durable=False)
    assert await obj.event(lambda s: s.list()) == {"after": 1}
    await obj.storage.last_commit
    assert await read(obj, lambda s: s.list()) == {"after": 1}


# -- list ---------------------------------------------------------------------------

DATA = {"a": 1, "a/1": 2, "a/2": 3, "a/3": 4, "ab": 5, "b": 6, "b/1": 7, "é": 8, "z": 9}


@pytest.fixture
async def listed(obj: Obj) -> Obj:
    await obj.event(lambda s: s.put(DATA))
    return obj


def _model(data: dict[str, Any], prefix: str = "", start: str | None = None,
           start_after: str | None = None, end: str | None = None, reverse: bool = False,
           limit: int | None = None) -> list[str]:
    keys = sorted(k for k in data if k.startswith(prefix)
                  and (start is None or k >= start)
                  and (start_after is None or k > start_after)
                  and (end is None or k < end))
    if reverse:
        keys.reverse()
    return keys[:limit] if limit is not None else keys


@pytest.mark.parametrize("params", [
    {},
    {"prefix": "a/"},
    {"prefix": "a"},
    {"prefix": "nothing"},
    {"start": "a/2"},
    {"start_after": "a/2"},
    {"start": "a/20"},
    {"end": "b"},
    {"end": "a"},
    {"start": "a/1", "end": "a/3"},
    {"start_after": "a/1", "end": "b/1"},
    {"prefix": "a/", "start": "a/2"},
    {"prefix": "a/", "start_after": "a/2"},
    {"prefix": "a/", "start": "0"},
    {"prefix": "a/", "start_after": "0"},
    {"prefix": "a/", "end": "a/3"},
    {"prefix": "a/", "end": "zz"},
    {"prefix": "a/", "start": "b"},
    {"start": "b", "end": "a"},
    {"reverse": True},
    {"reverse": True, "limit": 2},
    {"prefix": "a/", "reverse": True},
    {"start": "a/2", "end": "b/1", "reverse": True},
    {"start_after": "a/2", "end": "b/1", "reverse": True, "limit": 3},
    {"limit": 1},
    {"limit": 100},
    {"prefix": "b", "limit": 1},
])
async def test_list_semantics(listed, params):
    expected = _model(DATA, **params)
    got = await listed.event(lambda s: s.list(**params))
    assert list(got) == expected
    assert got == {k: DATA[k] for k in expected}
    assert list(await read(listed, lambda s: s.list(**params))) == expected


async def test_list_rejects_start_with_start_after_and_bad_limits(listed):
    with pytest.raises(ValueError, match="start"):
        await listed.event(lambda s: s.list(start="a", start_after="a"))
    for limit in (0, -1):
        with pytest.raises(ValueError, match="limit"):
            await listed.event(lambda s, limit=limit: s.list(limit=limit))


async def test_list_merges_uncommitted_and_current_writes_and_hides_deletes(listed):
    # Event 1: writes that are not yet durable when event 2 runs.
    async def first(s: Storage) -> None:
        await s.put({"a/15": "pending", "b": "changed"})
        await s.delete(["a/2", "z"])

    await listed.event(first, durable=False)
    assert listed.storage.last_commit is not None

    async def second(s: Storage) -> Any:
        await s.put("a/0", "mine")
        await s.delete("a/3")
        await s.put("a/2", "back")  # deleted by the earlier event, written again
        return (await s.list(prefix="a/"), await s.list(), await s.list(reverse=True, limit=3),
                await s.list(start_after="a/15", end="b/1"))

    by_prefix, everything, last3, window = await listed.event(second, durable=False)
    state = {**DATA, "a/15": "pending", "b": "changed", "a/0": "mine", "a/2": "back"}
    del state["a/3"], state["z"]
    assert by_prefix == {"a/0": "mine", "a/1": 2, "a/15": "pending", "a/2": "back"}
    assert everything == {k: state[k] for k in sorted(state)}
    assert list(last3) == ["é", "b/1", "b"]
    assert list(window) == ["a/2", "ab", "b"]
    await listed.storage.last_commit
    assert await read(listed, lambda s: s.list()) == everything


async def test_list_stays_within_one_object(db):
    one, two = Obj(*db, "one"), Obj(*db, "two")
    await one.event(lambda s: s.put({"a": 1, "b": 2}))
    await two.event(lambda s: s.put({"a": 10, "c": 30}))
    assert await read(one, lambda s: s.list()) == {"a": 1, "b": 2}
    assert await read(two, lambda s: s.list(reverse=True)) == {"c": 30, "a": 10}


async def test_state_survives_reopening_the_store(tmp_path):
    path = str(tmp_path / "reopen")
    for round_ in range(2):
        async with Supervisor("test") as sup:
            store = open_store(path)
            committer = new_committer(store, sup)
            obj = Obj(store, committer, "reopen")
            if round_ == 0:
                await obj.event(lambda s: s.put({"a": 1, "b": [2]}))
                await obj.event(lambda s: s.set_alarm(10**13))
            else:
                assert await obj.event(lambda s: s.list()) == {"a": 1, "b": [2]}
                assert await obj.event(lambda s: s.get_alarm()) == 10**13
            await committer.close()
            store.close()


# -- the alarm record ---------------------------------------------------------------

async def test_alarm_record_and_node_wide_index(obj):
    when = datetime.now(UTC) + timedelta(hours=1)
    ms = int(when.timestamp() * 1000)
    await obj.event(lambda s: s.set_alarm(when))
    assert await read(obj, lambda s: s.get_alarm()) == ms
    assert [(w, o) for w, o, _ in obj.store.alarm_index()] == [(ms, obj.id)]
    await obj.event(lambda s: s.set_alarm(ms + 5))  # moving it replaces the index entry
    assert [(w, o) for w, o, _ in obj.store.alarm_index()] == [(ms + 5, obj.id)]
    await obj.event(lambda s: s.delete_alarm())
    assert await read(obj, lambda s: s.get_alarm()) is None
    assert list(obj.store.alarm_index()) == []


@pytest.mark.parametrize("when", [datetime.now(), "soon", None, True])
async def test_set_alarm_takes_aware_datetimes_or_epoch_ms(obj, when):
    with pytest.raises(ValueError):
        await obj.event(lambda s: s.set_alarm(when))


# -- a model of list/get across events ----------------------------------------------

KEYS = st.text(alphabet="ab/\x00é\U0001f600", max_size=3)
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), KEYS, st.integers(0, 9)),
        st.tuples(st.just("delete"), KEYS, st.none()),
        st.tuples(st.just("delete_all"), st.none(), st.none()),
    ),
    max_size=6,
)
EVENTS = st.lists(st.tuples(OPS, st.sampled_from(["durable", "pending", "raise"])), max_size=6)
LIST_ARGS = st.fixed_dictionaries({}, optional={
    "prefix": KEYS, "start": KEYS, "end": KEYS, "reverse": st.booleans(),
    "limit": st.integers(1, 5),
}) | st.fixed_dictionaries({"start_after": KEYS}, optional={
    "prefix": KEYS, "end": KEYS, "reverse": st.booleans(),
})


@pytest.fixture(scope="module")
def model_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    store = open_store(str(tmp_path_factory.mktemp("model") / "db"), sync=False)
    yield store
    store.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=EVENTS, queries=st.lists(LIST_ARGS, min_size=1, max_size=4))
def test_list_matches_a_model(model_store, events, queries):
    asyncio.run(_check_model(model_store, events, queries))


async def _check_model(store: Store, events: list[Any], queries: list[dict[str, Any]]) -> None:
    async with Supervisor("test") as sup:
        committer = new_committer(store, sup)
        obj = Obj(store, committer, "")
        obj.id = ids.new_unique_id(NS).raw
        obj.storage = Storage(obj.id, NS, store)
        model: dict[str, int] = {}
        for ops, outcome in events:
            after = dict(model)

            async def ev(s: Storage, ops: Any = ops, after: dict[str, int] = after,
                         outcome: str = outcome) -> None:
                for op, key, value in ops:
                    if op == "put":
                        await s.put(key, value)
                        after[key] = value
                    elif op == "delete":
                        assert await s.delete(key) == (key in after)
                        after.pop(key, None)
                    else:
                        await s.delete_all()
                        after.clear()
                if outcome == "raise":
                    raise LookupError

            try:
                await obj.event(ev, durable=outcome == "durable")
            except LookupError:
                continue
            model = after
        for params in queries:
            expected = _model(model, **params)
            assert list(await obj.event(lambda s, p=params: s.list(**p))) == expected, params
        if obj.storage.last_commit is not None:
            await obj.storage.last_commit
        fresh = _reopen(obj)
        assert await fresh.event(lambda s: s.list()) == {k: model[k] for k in sorted(model)}
        await committer.close()


# -- the commit loop outlives a broken replication ----------------------------------

async def test_a_replication_that_raises_cancelled_fails_its_group_not_the_loop(
    tmp_path: Path,
) -> None:
    calls = 0

    async def replicate(batches: list[Any]) -> dict[int, str]:
        # What a gather whose timeout cancelled its futures hands out when read.
        nonlocal calls
        calls += 1
        if calls == 1:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            fut.cancel()
            fut.result()
        return {}

    async with Supervisor("test") as sup:
        store = open_store(str(tmp_path / "db"), sync=False)
        committer = GroupCommitter(store, fence=StaticFence().commit_refusal,
                                   replicate=replicate, tasks=sup)
        committer.start()
        obj = Obj(store, committer, "replicated")
        with pytest.raises(CommitUncertain, match="replication was cancelled"):
            await obj.event(lambda s: s.put("a", 1))
        await obj.event(lambda s: s.put("b", 2))  # the loop still commits
        assert sup.failure is None
        await committer.close()
        store.close()
