"""The worker's look at interactive load (in-memory load samples): its own answer, counted
late by the model server, is not taken for interactive work; another request is."""

from __future__ import annotations

from collections import deque
from typing import Any, cast

from tiermesh.agents.batch import BatchWorker, JobQueue, LoadSample, ModelAnswer
from tiermesh.controlplane.api.batch import JobRecord


class Samples:
    """Answers the queued samples in order, then repeats the last one."""

    def __init__(self, *samples: tuple[int, int]) -> None:
        self.queue = deque(LoadSample(in_flight, tokens) for in_flight, tokens in samples)
        self.last = self.queue[0]

    async def sample(self) -> LoadSample | None:
        if self.queue:
            self.last = self.queue.popleft()
        return self.last


class NoModel:
    async def call(self, job: JobRecord, tier: Any) -> ModelAnswer:
        raise AssertionError("not called")


def _worker(load: Samples) -> BatchWorker:
    return BatchWorker(cast("JobQueue", None), "local", NoModel(), load=load)


async def test_a_stale_in_flight_and_late_counted_own_tokens_are_not_interactive() -> None:
    # first look: the baseline; the worker then answered 8 tokens of its own; the server
    # still shows that request in flight once, and counts its tokens only later
    load = Samples((0, 100), (1, 100), (0, 100), (0, 108), (0, 108))
    worker = _worker(load)
    assert await worker._interactive_now() is False  # baseline
    worker._own_tokens += 8
    assert await worker._interactive_now() is False  # in flight once, gone 10 ms later
    assert await worker._interactive_now() is False  # its tokens counted late
    assert await worker._interactive_now() is False


async def test_another_request_is_interactive_whether_in_flight_or_already_done() -> None:
    load = Samples((0, 100), (1, 100), (1, 100), (0, 103), (0, 103))
    worker = _worker(load)
    assert await worker._interactive_now() is False
    assert await worker._interactive_now() is True  # in flight on two looks
    assert await worker._interactive_now() is True  # done between looks: 3 tokens not its own
    assert await worker._interactive_now() is False  # nothing new since
