"""Keeping the node's SVID fresh: renew at half-life, retry with backoff, never go without.

:class:`SvidRotator` generates a new private key for every renewal, sends only a CSR to an
:class:`SvidSource` (the join client in production; a CA in tests), checks what comes back
(:func:`~tiermesh.agents.identity.material.load_material`) and adopts it into the
:class:`~tiermesh.agents.identity.svid_store.SvidStore`, which notifies the Workload API
streams and SDS. While renewals fail, the old SVID stays in use and the rotator retries
with exponential backoff (capped, with jitter) until one succeeds.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric import ec

from tiermesh.agents.identity.keys import build_csr, generate_key
from tiermesh.agents.identity.material import SvidMaterial, load_material
from tiermesh.agents.identity.svid_store import SvidStore

__all__ = ["Backoff", "Clock", "Sleep", "SvidRotator", "SvidSource", "utc_now"]

log = logging.getLogger("tiermesh.agents.identity")

Clock = Callable[[], dt.datetime]
"""Returns the current time, timezone-aware."""

Sleep = Callable[[float], Awaitable[None]]
"""Waits the given number of seconds (``asyncio.sleep``; tests pass one that moves a clock)."""


def utc_now() -> dt.datetime:
    """The system clock, in UTC."""
    return dt.datetime.now(dt.UTC)


class SvidSource(Protocol):
    """Where renewed SVIDs come from.

    ``renew`` sends ``csr_pem`` (PEM PKCS#10; the private key stays with the caller) to an
    issuer and returns ``(chain_pem, bundle_pem)``: the SVID chain, leaf first, and the trust
    bundle's roots, both as concatenated PEM. Any exception means "no SVID this time"; the
    rotator logs it and retries later. Must be safe to call again after a failure.
    """

    async def renew(self, csr_pem: bytes) -> tuple[bytes, bytes]: ...


@dataclass(frozen=True, slots=True)
class Backoff:
    """Retry delays: ``initial * factor**(attempt-1)``, at most ``maximum``, each multiplied
    by a random factor in ``[1 - jitter, 1 + jitter]`` so that many nodes do not retry in
    lockstep after a control-plane outage."""

    initial: float = 1.0
    factor: float = 2.0
    maximum: float = 60.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if self.initial <= 0 or self.factor < 1 or self.maximum < self.initial:
            raise ValueError("backoff needs initial > 0, factor >= 1, maximum >= initial")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be within [0, 1)")

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after the ``attempt``-th consecutive failure (1-based)."""
        base = min(self.maximum, self.initial * self.factor ** max(0, attempt - 1))
        if not self.jitter:
            return base
        spread = (rng or random).uniform(-self.jitter, self.jitter)
        return base * (1 + spread)


class SvidRotator:
    """Renews the store's SVID at half-life through ``source``.

    Task safety: runs on the store's event loop; :meth:`run` is one long-lived task (cancel
    it to stop) and :meth:`rotate_now` may be awaited alongside it (e.g. an operator's
    "rotate now"); renewals never overlap, a second caller waits for the first. A single
    wait is capped at ``recheck_s`` so that a host that slept (suspend stops the monotonic
    timer) re-reads the wall clock soon after it wakes.
    """

    def __init__(
        self,
        store: SvidStore,
        source: SvidSource,
        *,
        node_id: str = "",
        clock: Clock = utc_now,
        sleep: Sleep = asyncio.sleep,
        backoff: Backoff | None = None,
        recheck_s: float = 30.0,
        key_factory: Callable[[], ec.EllipticCurvePrivateKey] = generate_key,
    ) -> None:
        self._store = store
        self._source = source
        self._node_id = node_id
        self._clock = clock
        self._sleep = sleep
        self._backoff = backoff or Backoff()
        self._recheck_s = recheck_s
        self._key_factory = key_factory
        self._lock = asyncio.Lock()
        self.failures = 0
        """Consecutive failed renewals (0 after a success)."""
        self.last_error: BaseException | None = None
        """The most recent renewal failure, kept after later successes for diagnosis."""

    @property
    def store(self) -> SvidStore:
        return self._store

    async def rotate_now(self) -> SvidMaterial:
        """One renewal: new key, CSR, ``source.renew``, checks, adopt into the store.

        Raises whatever ``source.renew`` raised, or :class:`SvidRejectedError` when the
        answer does not check out; the store is unchanged then.
        """
        async with self._lock:
            key = self._key_factory()
            current = self._store.current
            expected = current.spiffe_id if current is not None else None
            csr = build_csr(key, node_id=self._node_id, spiffe_id=expected or "")
            chain_pem, bundle_pem = await self._source.renew(csr)
            material = load_material(
                key, chain_pem, bundle_pem, now=self._clock(), expected_spiffe_id=expected
            )
            self._store.update(material)
            log.info(
                "adopted SVID %s serial=%x not_after=%s",
                material.spiffe_id,
                material.serial,
                material.not_after.isoformat(),
            )
            return material

    def seconds_until_due(self) -> float:
        """Seconds until the current SVID reaches half-life (<= 0: due; 0 without one)."""
        current = self._store.current
        if current is None:
            return 0.0
        return (current.rotation_due_at - self._clock()).total_seconds()

    async def run(self) -> None:
        """Renew forever: at once when the store is empty, then at each half-life; after a
        failure, again after a backoff delay. Returns only by cancellation."""
        while True:
            if self.failures == 0:
                wait = self.seconds_until_due()
                if wait > 0:
                    await self._sleep(min(wait, self._recheck_s))
                    continue
            try:
                await self.rotate_now()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure of a source means "retry"
                self.failures += 1
                self.last_error = exc
                delay = self._backoff.delay(self.failures)
                self._log_failure(exc, delay)
                await self._sleep(delay)
            else:
                self.failures = 0

    def _log_failure(self, exc: Exception, delay: float) -> None:
        current = self._store.current
        if current is None:
            state = "no SVID yet"
        elif self._clock() > current.not_after:
            state = f"current SVID EXPIRED at {current.not_after.isoformat()}"
        else:
            state = f"current SVID valid until {current.not_after.isoformat()}"
        log.warning(
            "SVID renewal failed (attempt %d, retry in %.1fs; %s): %s",
            self.failures,
            delay,
            state,
            exc,
        )
