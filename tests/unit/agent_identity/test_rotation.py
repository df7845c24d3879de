"""Renewal at half-life, retries with backoff, and keeping the old SVID meanwhile."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from cryptography import x509

from tests.unit.agent_identity.casource import T0, CaSource, FakeClock
from tiermesh.agents.identity import (
    Backoff,
    SpiffeIdChangedError,
    SvidRotator,
    SvidStore,
)

HALF_LIFE_S = 1800.0  # the CA issues 1 h SVIDs


class FakeSleep:
    """Moves the fake clock instead of waiting; records each wait and what was served."""

    def __init__(self, clock: FakeClock, store: SvidStore) -> None:
        self.clock = clock
        self.store = store
        self.calls: list[float] = []
        self.serving: list[int | None] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        current = self.store.current
        self.serving.append(current.serial if current is not None else None)
        self.clock.advance(seconds)
        await asyncio.sleep(0)


@contextmanager
def running(rotator: SvidRotator) -> Iterator[asyncio.Task[None]]:
    task = asyncio.get_running_loop().create_task(rotator.run())
    try:
        yield task
    finally:
        task.cancel()


async def until(check: Callable[[], bool], steps: int = 10_000) -> None:
    for _ in range(steps):
        if check():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


def _public_key(csr: bytes) -> bytes:
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    return (
        x509.load_pem_x509_csr(csr)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


async def test_renews_at_half_life_with_a_new_key_each_time(
    clock: FakeClock, source: CaSource
) -> None:
    store = SvidStore()
    sleep = FakeSleep(clock, store)
    rotator = SvidRotator(store, source, clock=clock, sleep=sleep, recheck_s=86_400)
    adopted: list[dt.datetime] = []
    store.subscribe(lambda m: adopted.append(m.not_before))
    with running(rotator):
        await until(lambda: store.version >= 3)
    assert sleep.calls[:2] == [HALF_LIFE_S, HALF_LIFE_S]
    assert adopted == [T0, T0 + dt.timedelta(seconds=HALF_LIFE_S), T0 + dt.timedelta(hours=1)]
    assert len({_public_key(csr) for csr in source.csrs}) == len(source.csrs)
    assert rotator.failures == 0


async def test_long_waits_are_cut_into_rechecks(clock: FakeClock, source: CaSource) -> None:
    store = SvidStore()
    sleep = FakeSleep(clock, store)
    rotator = SvidRotator(store, source, clock=clock, sleep=sleep, recheck_s=700)
    with running(rotator):
        await until(lambda: store.version >= 2)
    assert sleep.calls[:3] == [700, 700, 400]


async def test_failures_retry_with_backoff_and_keep_the_old_svid(
    clock: FakeClock, source: CaSource, caplog: pytest.LogCaptureFixture
) -> None:
    store = SvidStore()
    sleep = FakeSleep(clock, store)
    backoff = Backoff(initial=1.0, factor=2.0, maximum=5.0, jitter=0.0)
    rotator = SvidRotator(
        store, source, clock=clock, sleep=sleep, backoff=backoff, recheck_s=86_400
    )
    await rotator.rotate_now()
    first = store.require()
    source.fail_next = 5
    with running(rotator):
        await until(lambda: store.version >= 2)
    assert sleep.calls[:6] == [HALF_LIFE_S, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert sleep.serving[:6] == [first.serial] * 6, "the old SVID stayed in use"
    assert source.calls == 1 + 5 + 1
    assert store.require().serial != first.serial
    assert rotator.failures == 0
    assert isinstance(rotator.last_error, ConnectionError)
    assert "SVID renewal failed (attempt 5, retry in 5.0s; current SVID valid until" in caplog.text


async def test_an_answer_that_fails_the_checks_is_a_failure_too(
    clock: FakeClock, source: CaSource
) -> None:
    store = SvidStore()
    sleep = FakeSleep(clock, store)
    rotator = SvidRotator(
        store, source, clock=clock, sleep=sleep, backoff=Backoff(jitter=0.0), recheck_s=86_400
    )
    await rotator.rotate_now()
    first = store.require()
    source.answer_as = "edge-2"  # the "control plane" answers for another node
    with running(rotator):
        await until(lambda: rotator.failures >= 2)
        assert store.require() is first
        assert isinstance(rotator.last_error, SpiffeIdChangedError)
        source.answer_as = ""
        await until(lambda: store.version >= 2)
    assert store.require().spiffe_id == first.spiffe_id


async def test_an_empty_store_is_filled_at_once_and_retried_until_it_is(
    clock: FakeClock, source: CaSource
) -> None:
    store = SvidStore()
    sleep = FakeSleep(clock, store)
    source.fail_next = 2
    rotator = SvidRotator(
        store, source, clock=clock, sleep=sleep, backoff=Backoff(jitter=0.0), recheck_s=86_400
    )
    with running(rotator):
        material = await asyncio.wait_for(store.wait(), 5)
    assert sleep.calls[:2] == [1.0, 2.0]
    assert sleep.serving[:2] == [None, None]
    assert material.not_before == T0 + dt.timedelta(seconds=3)


def test_backoff_grows_caps_and_jitters() -> None:
    backoff = Backoff(initial=0.5, factor=3.0, maximum=10.0, jitter=0.2)
    rng = random.Random(7)
    delays = [backoff.delay(n, rng) for n in range(1, 7)]
    bases = [0.5, 1.5, 4.5, 10.0, 10.0, 10.0]
    for delay, base in zip(delays, bases, strict=True):
        assert base * 0.8 <= delay <= base * 1.2
    with pytest.raises(ValueError, match="initial"):
        Backoff(initial=0)
    with pytest.raises(ValueError, match="jitter"):
        Backoff(jitter=1.0)
