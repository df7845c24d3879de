"""Taking the node's identity from an existing SPIRE agent instead of tiermesh's CA.

:class:`SpireSource` opens py-spiffe's ``X509Source`` on the SPIRE agent's Workload API
socket and copies every SVID it streams into the :class:`SvidStore`, so the Workload API
that tiermesh serves and SDS to Envoy follow SPIRE's rotations. SPIRE owns the key and the
rotation schedule here: do not run an :class:`SvidRotator` on the same store.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from types import TracebackType
from typing import cast

from cryptography.hazmat.primitives import serialization
from spiffe import X509Source
from spiffe.errors import PySpiffeError
from spiffe.workloadapi.x509_context import X509Context

from tiermesh.agents.identity.errors import SpireSourceError, SvidRejectedError
from tiermesh.agents.identity.material import PrivateKey, load_material
from tiermesh.agents.identity.rotation import Clock, utc_now
from tiermesh.agents.identity.svid_store import SvidStore

__all__ = ["SpireSource"]

log = logging.getLogger("tiermesh.agents.identity")


class SpireSource:
    """Mirrors a SPIRE Workload API into ``store``.

    Task safety: :meth:`start` and :meth:`close` run on the store's loop; py-spiffe delivers
    updates on its own thread and they are handed to the loop with
    ``call_soon_threadsafe``. An update that fails the checks of
    :func:`~tiermesh.agents.identity.material.load_material` (wrong trust domain bundle,
    a changed SPIFFE ID, an expired SVID) is logged and skipped; the previous one stays.
    py-spiffe closes the source for good on a non-retryable error (INVALID_ARGUMENT); the
    store then keeps the last SVID until it expires.
    """

    def __init__(
        self,
        store: SvidStore,
        socket_path: Path | str,
        *,
        timeout_s: float = 10.0,
        clock: Clock = utc_now,
    ) -> None:
        path = str(socket_path)
        self.endpoint = path if path.startswith("unix:") else f"unix:{Path(path).absolute()}"
        self._store = store
        self._timeout_s = timeout_s
        self._clock = clock
        self._source: X509Source | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.rejected = 0
        """How many streamed updates failed the checks and were skipped."""

    async def start(self) -> None:
        """Connect, wait for the first SVID (at most ``timeout_s``) and adopt it.

        Raises:
            SpireSourceError: no SVID arrived in time, the socket is unusable, or the first
                SVID failed the checks (nothing was adopted then).
        """
        if self._source is not None:
            raise RuntimeError("the SPIRE source is already started")
        self._loop = asyncio.get_running_loop()
        try:
            source = await asyncio.to_thread(
                X509Source, socket_path=self.endpoint, timeout_in_seconds=self._timeout_s
            )
        except PySpiffeError as exc:
            raise SpireSourceError(self.endpoint, str(exc)) from exc
        self._source = source
        source.subscribe_for_updates(self._on_update)
        try:
            self._adopt(source.get_x509_context())
        except (PySpiffeError, SvidRejectedError) as exc:
            await self.close()
            raise SpireSourceError(self.endpoint, str(exc)) from exc

    def _on_update(self) -> None:
        """Runs on py-spiffe's watcher thread."""
        source, loop = self._source, self._loop
        if source is None or loop is None or loop.is_closed():
            return
        try:
            context = source.get_x509_context()
        except PySpiffeError as exc:
            log.warning("SPIRE source update unreadable: %s", exc)
            return
        loop.call_soon_threadsafe(self._adopt_logged, context)

    def _adopt_logged(self, context: X509Context) -> None:
        try:
            self._adopt(context)
        except (PySpiffeError, SvidRejectedError) as exc:
            self.rejected += 1
            log.error("SVID from %s skipped: %s", self.endpoint, exc)

    def _adopt(self, context: X509Context) -> None:
        svid = context.default_svid
        bundle = context.x509_bundle_set.get_bundle_for_trust_domain(svid.spiffe_id.trust_domain)
        if bundle is None:
            raise SvidRejectedError(f"no bundle for trust domain {svid.spiffe_id.trust_domain}")
        current = self._store.current
        if current is not None and current.leaf == svid.leaf:
            return  # the stream repeats itself on reconnect
        roots = sorted(
            bundle.x509_authorities,
            key=lambda cert: cert.public_bytes(serialization.Encoding.DER),
        )
        material = load_material(
            cast("PrivateKey", svid.private_key),
            svid.cert_chain,
            roots,
            now=self._clock(),
            expected_spiffe_id=current.spiffe_id if current is not None else None,
        )
        self._store.update(material)
        log.info(
            "adopted SVID %s serial=%x from %s", material.spiffe_id, material.serial, self.endpoint
        )

    async def close(self) -> None:
        """Stop following SPIRE; the store keeps what it has. Idempotent."""
        source, self._source = self._source, None
        if source is not None:
            source.unsubscribe_for_updates(self._on_update)
            await asyncio.to_thread(source.close)

    async def __aenter__(self) -> SpireSource:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
