"""The process supervisor (cluster/supervisor.py): which task endings are fatal, and
the order of a clean stop."""

from __future__ import annotations

import asyncio

import pytest

from abode.cluster.supervisor import SupervisedTaskEnded, Supervisor


async def forever() -> None:
    await asyncio.Event().wait()


async def test_a_task_that_returns_is_a_failure_named_after_it() -> None:
    async def quits() -> None:
        await asyncio.sleep(0)

    async with Supervisor("proc") as sup:
        sup.start("sweeper", forever())
        sup.start("alarms", quits())
        async with asyncio.timeout(5):
            await sup.wait(forever())
        assert sup.failure == "task alarms returned"
    with pytest.raises(SupervisedTaskEnded, match="proc: task alarms returned"):
        sup.check()


async def test_a_task_that_raises_is_a_failure_with_its_reason() -> None:
    async def breaks() -> None:
        raise OSError("disk gone")

    async with Supervisor("proc") as sup:
        sup.start("group-commit", breaks())
        async with asyncio.timeout(5):
            await sup.wait(forever())
    assert sup.failure == "task group-commit raised OSError: disk gone"


async def test_a_cancelled_error_nobody_asked_for_is_a_failure() -> None:
    # What a gather cancelled by a timeout hands out: the loop must not end silently.
    async def swallows_a_foreign_cancel() -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.cancel()
        await asyncio.sleep(0)
        fut.result()

    async with Supervisor("proc") as sup:
        sup.start("group-commit", swallows_a_foreign_cancel())
        async with asyncio.timeout(5):
            await sup.wait(forever())
    assert sup.failure == "task group-commit raised CancelledError without being cancelled"


async def test_a_task_that_may_end_is_fine_returning_but_not_raising() -> None:
    async def lease_ends() -> None:
        await asyncio.sleep(0)

    async with Supervisor("proc") as sup:
        done = sup.start("lease-keepalive", lease_ends(), may_end=True)
        await asyncio.wait([done], timeout=5)
        assert sup.failure is None


async def test_a_clean_stop_cancels_newest_first_once_and_twice_is_safe() -> None:
    order: list[str] = []

    async def runs(name: str) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            order.append(name)
            raise

    async with Supervisor("proc") as sup:
        for name in ("watch", "group-commit", "alarms", "grpc-server"):
            sup.start(name, runs(name))
        await asyncio.sleep(0)
        await sup.stop()
        await sup.stop()
    assert order == ["grpc-server", "alarms", "group-commit", "watch"]
    assert sup.failure is None
    sup.check()


async def test_endings_while_stopping_are_not_failures() -> None:
    async with Supervisor("proc") as sup:
        stop = asyncio.Event()

        async def until_closed() -> None:
            await stop.wait()

        sup.start("group-commit", until_closed())
        sup.begin_stop()
        stop.set()
        await asyncio.sleep(0.01)
    assert sup.failure is None


async def test_an_error_of_the_body_leaves_as_itself_after_the_tasks_stop() -> None:
    # `abode` maps exceptions to one-line reasons by type (a locked data directory, a
    # port taken): a group around them would hide them.
    started = asyncio.Event()

    async def runs() -> None:
        started.set()
        await forever()

    with pytest.raises(PermissionError, match="locked"):
        async with Supervisor("proc") as sup:
            task = sup.start("server", runs())
            await started.wait()
            raise PermissionError("locked")
    assert task.cancelled()
