"""`tiermesh.tasks.cancel_and_wait`: every task cancelled, then each awaited to its end."""

from __future__ import annotations

import asyncio

import pytest

from tiermesh.tasks import cancel_and_wait


async def test_cancels_and_waits_for_every_task_skipping_none() -> None:
    ended: list[str] = []

    async def worker(name: str) -> None:
        try:
            await asyncio.sleep(60)
        finally:
            await asyncio.sleep(0)  # cleanup that needs the loop
            ended.append(name)

    tasks = [asyncio.create_task(worker(n)) for n in ("a", "b")]
    await asyncio.sleep(0)
    await cancel_and_wait([tasks[0], None, tasks[1]])
    assert ended == ["a", "b"]
    assert all(t.cancelled() for t in tasks)


async def test_a_finished_task_and_an_empty_list_are_fine() -> None:
    async def quick() -> int:
        return 1

    task = asyncio.create_task(quick())
    await task
    await cancel_and_wait([task])
    await cancel_and_wait([])
    assert task.result() == 1


async def test_an_error_raised_while_stopping_propagates() -> None:
    async def broken() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            raise RuntimeError("cleanup failed") from None

    task = asyncio.create_task(broken())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="cleanup failed"):
        await cancel_and_wait([task])


async def test_a_task_that_swallowed_its_cancellation_is_cancelled_again() -> None:
    """What Python 3.11's ``asyncio.wait_for`` does when the awaited call completes as the
    task is cancelled: it returns the result, and the task goes on as if never cancelled."""
    rounds: list[int] = []

    async def follower() -> None:
        while True:
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                if not rounds:
                    rounds.append(1)
                    continue  # the first cancellation is lost
                raise

    task = asyncio.create_task(follower())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait([task], recancel_after_s=0.05), 5)
    assert task.cancelled()
    assert rounds == [1]


async def test_a_wait_for_that_completes_as_it_is_cancelled_does_not_hang_the_stop() -> None:
    """The lost cancellation as it happens on this interpreter (on 3.12 and later the first
    cancellation already stops the task)."""
    ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def opens_then_follows() -> None:
        await asyncio.wait_for(ready, 5)  # the call completes as the task is cancelled
        await asyncio.sleep(60)  # then the task follows the stream it opened

    task = asyncio.create_task(opens_then_follows())
    await asyncio.sleep(0)
    ready.set_result(None)
    await asyncio.wait_for(cancel_and_wait([task], recancel_after_s=0.05), 5)
    assert task.cancelled()


async def test_cancelling_the_caller_ends_its_wait_and_the_tasks_stay_cancelled() -> None:
    stopping = asyncio.Event()

    async def slow_to_stop() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            stopping.set()
            await asyncio.sleep(0.2)

    task = asyncio.create_task(slow_to_stop())
    await asyncio.sleep(0)
    stopper = asyncio.create_task(cancel_and_wait([task]))
    await stopping.wait()
    stopper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopper
    await asyncio.wait({task}, timeout=5)
    assert task.cancelled()
