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
