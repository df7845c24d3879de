"""Shipping the spool to the control plane, at least once, across crashes and outages.

:class:`Shipper` takes the records after the cursor (``cursor.json``: the last seq the
control plane acknowledged) from the log's durable tail in memory
(:meth:`~tiermesh.agents.decisionlog.DecisionLog.recent`) or, when that does not reach back
far enough (after a restart or a long outage), reads them from the spool; it sends them in
batches, and moves the cursor only after the collector
answered that every record of the batch is stored. So a crash at any point re-sends at most
the batch in flight, and the collector's deduplication by ``decision_id`` makes that
harmless. When the control plane is down or refuses a batch, the same batch is retried
with exponential backoff (refusals are logged: they need an operator).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from tiermesh.agents.decisionlog.client import ShipClient
from tiermesh.agents.decisionlog.errors import ShipFailed
from tiermesh.agents.decisionlog.log import DecisionLog
from tiermesh.agents.decisionlog.spool import (
    SpoolPaths,
    SpoolReader,
    read_cursor,
    write_cursor,
)
from tiermesh.agents.identity import Backoff
from tiermesh.controlplane.api.decision import MAX_SHIP_RECORDS, ShipRequest

__all__ = ["Shipper"]

log = logging.getLogger("tiermesh.agents.decisionlog")


class Shipper:
    """Ships ``log``'s durable records through ``client`` (see the module docstring).

    ``batch``: records per call (at most ``MAX_SHIP_RECORDS``); ``interval_s``: how long
    to wait for a full batch before sending a partial one; ``prune``: delete segments once
    every record in them is acknowledged.

    Task safety: bound to the log's event loop; run one :meth:`run` task (cancel it to
    stop) or call :meth:`ship_once` — not both at once, and one shipper per spool.
    """

    def __init__(
        self,
        log: DecisionLog,
        client: ShipClient,
        *,
        batch: int = 500,
        interval_s: float = 0.5,
        backoff: Backoff | None = None,
        prune: bool = True,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not 1 <= batch <= MAX_SHIP_RECORDS:
            raise ValueError(f"batch must be within [1, {MAX_SHIP_RECORDS}]")
        if interval_s < 0:
            raise ValueError("interval_s must be >= 0")
        self._log = log
        self._client = client
        self._batch = batch
        self._interval_s = interval_s
        self._backoff = backoff or Backoff(initial=0.2, factor=2.0, maximum=30.0)
        self._prune = prune
        self._sleep = sleep
        self._reader = SpoolReader(log.directory)
        self._acked: int | None = None
        self._chains: dict[str, str] = {}
        self.failures = 0
        """Consecutive failed deliveries (0 after a success)."""

    @property
    def last_acknowledged(self) -> int | None:
        """The last seq the control plane acknowledged as last read (None: not read yet)."""
        return self._acked

    async def acknowledged_seq(self) -> int:
        """The last seq the control plane acknowledged (-1 for none), from the cursor."""
        if self._acked is None:
            self._acked = await asyncio.to_thread(read_cursor, self._log.directory)
        return self._acked

    async def ship_once(self) -> int:
        """Send the next batch of durable, unacknowledged records; returns how many the
        control plane acknowledged (0 when there were none).

        Raises:
            ShipFailed: the batch was not acknowledged; the cursor did not move.
            SpoolCorruptedError: a spool line or the cursor file is unreadable.
        """
        acked = await self.acknowledged_seq()
        spooled = self._log.recent(acked, self._batch)
        if spooled is None:  # behind the durable tail in memory: read the spool back
            spooled = await asyncio.to_thread(
                self._reader.read, acked, self._batch, self._log.durable_seq
            )
        if not spooled:
            return 0
        fingerprints = sorted({item.signer for item in spooled})
        chains = await asyncio.to_thread(self._signer_chains, fingerprints)
        request = ShipRequest(
            records=tuple(item.record for item in spooled), signer_chains_pem=chains
        )
        try:
            response = await self._client.ship(request)
        except ShipFailed:
            raise
        except (OSError, RuntimeError) as exc:
            raise ShipFailed(f"{type(exc).__name__}: {exc}") from exc
        last = spooled[-1].record.seq
        await asyncio.to_thread(write_cursor, self._log.directory, last)
        self._acked = last
        if self._prune:
            await asyncio.to_thread(self._log.prune, last)
        log.debug(
            "shipped %d records up to seq %d (%d new, %d duplicates)",
            len(spooled),
            last,
            response.accepted,
            response.duplicates,
        )
        return len(spooled)

    async def run(self) -> None:
        """Ship forever: full batches at once, partial ones after ``interval_s``, failed
        ones again after a backoff delay. Never returns; cancel the task to stop."""
        while True:
            try:
                shipped = await self.ship_once()
            except ShipFailed as exc:
                self.failures += 1
                delay = self._backoff.delay(self.failures)
                level = logging.WARNING if exc.retryable else logging.ERROR
                log.log(level, "%s; retrying in %.2fs (attempt %d)", exc, delay, self.failures)
                await self._sleep(delay)
                continue
            self.failures = 0
            if shipped >= self._batch:
                continue
            acked = await self.acknowledged_seq()
            try:
                async with asyncio.timeout(self._interval_s):
                    await self._log.wait_durable(acked + self._batch - 1)
            except TimeoutError:
                pass

    def _signer_chains(self, fingerprints: list[str]) -> tuple[str, ...]:
        paths = SpoolPaths(self._log.directory)
        chains = []
        for fingerprint in fingerprints:
            if fingerprint not in self._chains:
                self._chains[fingerprint] = paths.signer(fingerprint).read_text()
            chains.append(self._chains[fingerprint])
        return tuple(chains)
