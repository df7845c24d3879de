"""`EtcdReach`: when a replica counts as cut off from etcd, and when it is back.

The read and the clock are stand-ins; the real store and real replicas behind a cut
connection are in ``tests/integration/controlplane/test_replica_pause.py``.
"""

from __future__ import annotations

import asyncio

import pytest

from tiermesh.controlplane.runtime.etcd_reach import EtcdReach


class Harness:
    def __init__(self) -> None:
        self.now = 100.0
        self.fail: str | None = None
        self.hang = False
        self.events: list[str] = []
        self.reach = EtcdReach(
            self.read,
            on_cut_off=self.cut_off,
            on_back=self.back,
            interval_s=0.05,
            cut_off_s=3.0,
            clock=lambda: self.now,
        )

    async def read(self) -> None:
        if self.hang:
            await asyncio.sleep(10)
        if self.fail is not None:
            raise ConnectionError(self.fail)

    async def cut_off(self, detail: str) -> None:
        self.events.append(f"cut off: {detail}")

    async def back(self) -> None:
        self.events.append("back")

    async def step(self, seconds: float) -> None:
        self.now += seconds
        await self.reach.check()


async def test_a_short_outage_is_not_a_cut_off() -> None:
    h = Harness()
    await h.step(1)
    h.fail = "etcdserver: leader changed"
    for _ in range(2):
        await h.step(1)
    h.fail = None
    await h.step(1)
    assert h.events == []
    assert h.reach.cut_off is False


async def test_cut_off_once_after_the_bound_then_back_once() -> None:
    h = Harness()
    await h.step(1)  # last answer at 101
    h.fail = "connection refused"
    for _ in range(6):
        await h.step(1)
    assert len(h.events) == 1
    assert h.events[0].startswith("cut off: no answer from etcd for 3.0 s (connection refused)")
    assert h.reach.cut_off is True
    assert h.reach.document()["reachable"] is False
    assert h.reach.document()["problem"] == "connection refused"
    h.fail = None
    await h.step(1)
    await h.step(1)
    assert h.events[1:] == ["back"]
    assert h.reach.cut_off is False
    assert h.reach.cut_offs == 1
    assert h.reach.document()["reachable"] is True


async def test_a_read_that_never_answers_counts_as_no_answer() -> None:
    h = Harness()
    h.hang = True
    for _ in range(4):
        await h.step(1)
    assert [e.split(" (")[0] for e in h.events] == ["cut off: no answer from etcd for 3.0 s"]


async def test_a_failing_reaction_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    h = Harness()

    async def broken(_detail: str) -> None:
        raise RuntimeError("ADS would not listen")

    h.reach = EtcdReach(h.read, on_cut_off=broken, on_back=h.back, cut_off_s=1.0,
                        clock=lambda: h.now)  # fmt: skip
    h.fail = "down"
    await h.step(2)
    assert h.reach.cut_off is True
    assert "reacting to etcd reachability failed" in caplog.text


async def test_runs_in_the_background_until_closed() -> None:
    h = Harness()
    seen = asyncio.Event()

    async def cut_off(_detail: str) -> None:
        seen.set()

    h.reach = EtcdReach(h.read, on_cut_off=cut_off, on_back=h.back, interval_s=0.05,
                        clock=lambda: h.now)  # fmt: skip
    h.fail = "down"
    await h.reach.start()
    try:
        h.now += 5
        async with asyncio.timeout(5):
            await seen.wait()
    finally:
        await h.reach.aclose()
    assert h.reach.cut_off is True


@pytest.mark.parametrize(("interval", "cut_off"), [(0, 3), (-1, 3), (2, 1)])
def test_bad_timings_are_refused(interval: float, cut_off: float) -> None:
    async def read() -> None:
        return None

    async def nothing(*_: object) -> None:
        return None

    with pytest.raises(ValueError, match="interval_s"):
        EtcdReach(read, on_cut_off=nothing, on_back=nothing, interval_s=interval,
                  cut_off_s=cut_off)  # fmt: skip
