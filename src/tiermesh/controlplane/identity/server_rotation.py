"""The replica's own certificate and trust bundle, kept current while its servers run.

:class:`ServerRotation` owns what every TLS port of a replica presents and verifies
clients with (a :class:`~.live_credentials.LiveCredentials`) and the CA the replica
issues with (a :class:`~.shared_ca.SharedCa`). Once started it:

- renews the server certificate at :data:`RENEW_FRACTION` of its life (two thirds: a
  third of the life is left for retries when signing fails);
- follows the shared CA in the store (a watch on ``ca/state/``, :mod:`.ca_store`): when
  any replica saves a newer state (a rollover, a retirement), it loads it, swaps the CA,
  renews the server certificate and trusts the new bundle from the next handshake on.
  Connections already open keep running; a broken watch is read again after ``retry_s``,
  a failed renewal retried after ``retry_s``, doubling up to a minute (the certificate
  still has a third of its life when the first renewal is due).

Which generation signs the server certificate: the *oldest* held one whose intermediate
outlives the new certificate, else the active one. During a rollover's overlap every
client still trusts the old root (nodes learn the new one with their next SVID), so an
agent or Envoy that reconnects, or renews, keeps verifying the control plane; once the old
generation is retired (a forced retirement after a key compromise included) the next
certificate comes from the active one. Node SVIDs always come from the active generation,
and the bundle the servers verify clients with holds every held root, so SVIDs of the old
and the new CA are both accepted during the overlap.

Files in ``data_dir``: ``server-key.pem`` (0600), ``server-chain.pem`` and ``bundle.pem``
(0644), each replaced atomically (a temporary file in the folder, fsync, rename), so a
reader sees a whole old or a whole new file. Each change logs one line
(``server certificate renewed (<reason>): serial=… not_after=…; trust bundle generation N
(k roots)``) and updates the metrics of :func:`~tiermesh.controlplane.metrics.
note_server_identity`; :meth:`ServerRotation.status` is the status document's
``identity`` section.

Task safety: one event loop (the store's). The fetchers grpc calls read
:class:`LiveCredentials` from grpc's own threads; the CA is thread-safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from tiermesh.atomic_files import replace_file
from tiermesh.controlplane.identity.bundle import TrustBundle
from tiermesh.controlplane.identity.ca import CaConfig, Clock, LocalCertificateAuthority, utc_now
from tiermesh.controlplane.identity.ca_store import CA_STATE_PREFIX, EtcdCaStore, state_seq
from tiermesh.controlplane.identity.errors import IdentityError, ServerFilesError
from tiermesh.controlplane.identity.generation import CaGeneration
from tiermesh.controlplane.identity.live_credentials import LiveCredentials, ServingMaterial
from tiermesh.controlplane.identity.server_cert import (
    DEFAULT_SERVER_TTL,
    ServerCertificate,
    issue_server_certificate,
)
from tiermesh.controlplane.identity.shared_ca import SharedCa
from tiermesh.controlplane.metrics import note_server_identity
from tiermesh.controlplane.store import EventKind, Store, StoreError
from tiermesh.tasks import cancel_and_wait

__all__ = [
    "RENEW_FRACTION",
    "ServerRotation",
    "signing_generation",
    "write_server_files",
]

log = logging.getLogger("tiermesh.identity")

RENEW_FRACTION: Final = 2 / 3
"""The share of a server certificate's life after which it is renewed."""

_MAX_RETRY_S: Final = 60.0
_KEY_MODE: Final = 0o600
_PUBLIC_MODE: Final = 0o644


def signing_generation(
    ca: LocalCertificateAuthority, *, now: dt.datetime, ttl: dt.timedelta
) -> CaGeneration:
    """The oldest generation of ``ca`` whose intermediate is valid until ``now + ttl``;
    the active one if none is (module doc)."""
    for generation in ca.generations:
        if generation.intermediate.not_valid_after_utc >= now + ttl:
            return generation
    return ca.active


def write_server_files(folder: Path, certificate: ServerCertificate, bundle: TrustBundle) -> None:
    """Write ``server-key.pem``, ``server-chain.pem`` and ``bundle.pem`` to ``folder``
    (created 0700 if missing), each replaced atomically. The key is written first, so
    the chain on disk is never newer than the key it belongs to for longer than one
    rename.

    Raises:
        ServerFilesError: naming the folder and why.
    """
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        replace_file(folder / "server-key.pem", certificate.key_pem(), _KEY_MODE)
        replace_file(folder / "server-chain.pem", certificate.chain_pem(), _PUBLIC_MODE)
        replace_file(folder / "bundle.pem", bundle.to_pem(), _PUBLIC_MODE)
    except OSError as exc:
        raise ServerFilesError(str(folder), exc.strerror or str(exc)) from exc


class ServerRotation:
    """Keeps the replica's server certificate, trust bundle and CA current (module doc).

    ``ca`` is the CA ``ca_store`` loaded; ``ttl`` the server certificate's lifetime;
    ``on_bundle_changed`` is called on the event loop with the new bundle whenever the
    held roots change, ``on_renewed`` with every certificate issued after the first (neither
    may raise). :meth:`start` before use; :meth:`aclose` stops
    following (idempotent). The certificate, credentials and CA stay usable after it.
    """

    def __init__(
        self,
        store: Store,
        ca_store: EtcdCaStore,
        ca_config: CaConfig,
        ca: LocalCertificateAuthority,
        *,
        data_dir: Path,
        ttl: dt.timedelta = DEFAULT_SERVER_TTL,
        extra_dns_names: Sequence[str] = (),
        on_bundle_changed: Callable[[TrustBundle], None] | None = None,
        on_renewed: Callable[[ServerCertificate], None] | None = None,
        clock: Clock = utc_now,
        retry_s: float = 1.0,
    ) -> None:
        self.ca = SharedCa(ca)
        """The CA to issue and verify node SVIDs with; follows the store."""
        self._store = store
        self._ca_store = ca_store
        self._ca_config = ca_config
        self._data_dir = data_dir
        self._ttl = ttl
        self._dns_names = tuple(extra_dns_names)
        self._on_bundle_changed = on_bundle_changed
        self._on_renewed = on_renewed
        self._clock = clock
        self._retry_s = retry_s
        self._credentials: LiveCredentials | None = None
        self._issued_at = clock()
        self._issuer = ca.active.id
        self._generation = ca_store.seq or 0
        self._renewals = 0
        self._lock = asyncio.Lock()
        self._renewed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def credentials(self) -> LiveCredentials:
        """What every TLS port presents and trusts (after :meth:`start`)."""
        assert self._credentials is not None, "not started"
        return self._credentials

    @property
    def certificate(self) -> ServerCertificate:
        """The certificate new handshakes get."""
        return self.credentials.current.certificate

    @property
    def bundle(self) -> TrustBundle:
        """The roots new handshakes verify client SVIDs against."""
        return self.credentials.current.bundle

    @property
    def renew_at(self) -> dt.datetime:
        """When the current certificate is renewed unless the CA changes first."""
        end = self.certificate.not_after
        return self._issued_at + (end - self._issued_at) * RENEW_FRACTION

    async def start(self) -> None:
        """Issue the first certificate, write the files, and start following the store
        and the clock.

        Raises:
            ServerFilesError, CaExpiredError, StoreError (the store cannot be read).
        """
        certificate = self._issue()
        bundle = self.ca.bundle()
        await asyncio.to_thread(write_server_files, self._data_dir, certificate, bundle)
        self._credentials = LiveCredentials(certificate, bundle)
        self._noted(self._credentials.current, "start")
        after = await self._catch_up()
        self._tasks = [
            asyncio.create_task(self._follow(after), name="ca-watch"),
            asyncio.create_task(self._renew_on_time(), name="server-cert-renewal"),
        ]

    async def aclose(self) -> None:
        """Stop following the store and the clock. Idempotent."""
        tasks, self._tasks = self._tasks, []
        await cancel_and_wait(tasks)

    async def rotate_ca(self) -> CaGeneration:
        """Roll the shared CA over (:meth:`EtcdCaStore.rotate`) and serve the result here at
        once; the other replicas follow through the store. Returns the new active generation.

        Raises:
            CaStateConflict, StoreError, and the load errors of :meth:`EtcdCaStore.load`.
        """
        ca = await self._ca_store.rotate(
            self._ca_config, clock=self._clock, usage=self.ca.current.state()
        )
        await self._serve("CA rolled over here", ca)
        return ca.active

    async def renew(self, reason: str) -> ServingMaterial:
        """Issue a new server certificate now and serve it with the CA's current bundle.
        A failure to write the files is logged, not raised: the new certificate is served
        anyway.

        Raises:
            CaExpiredError: no held intermediate can sign (roll the CA over).
        """
        return await self._serve(reason, None)

    async def _serve(self, reason: str, ca: LocalCertificateAuthority | None) -> ServingMaterial:
        """:meth:`renew`, first switching to ``ca`` (just loaded or saved by ``ca_store``)
        if given, so the status never shows a CA state whose certificate is not served."""
        async with self._lock:
            if ca is not None:
                self.ca.replace(ca)
                self._generation = self._ca_store.seq or self._generation
            before = self.credentials.current
            certificate = self._issue()
            bundle = self.ca.bundle()
            material = self.credentials.update(certificate, bundle)
            self._renewals += 1
            self._renewed.set()
            if self._on_renewed is not None:
                self._on_renewed(certificate)
            if bundle.fingerprints != before.bundle.fingerprints and self._on_bundle_changed:
                self._on_bundle_changed(bundle)
            try:
                await asyncio.to_thread(write_server_files, self._data_dir, certificate, bundle)
            except ServerFilesError as exc:
                log.error("%s; serving the new certificate anyway", exc)
            self._noted(material, reason)
            return material

    def status(self) -> dict[str, Any]:
        """The status document's ``identity`` section: the served certificate (serial in
        hex, validity, when it is renewed, the root fingerprint of the generation that
        signed it, renewals since start) and the trust bundle (the CA state it comes from,
        ``generation``; its root fingerprints; the generation that signs node SVIDs)."""
        current = self.credentials.current
        certificate = current.certificate.certificate
        return {
            "server_certificate": {
                "serial": f"{certificate.serial_number:x}",
                "not_before": certificate.not_valid_before_utc.isoformat(),
                "not_after": certificate.not_valid_after_utc.isoformat(),
                "renew_at": self.renew_at.isoformat(),
                "issuer_generation": self._issuer,
                "renewals": self._renewals,
            },
            "trust_bundle": {
                "generation": self._generation,
                "roots": list(current.bundle.fingerprints),
                "signing_generation": self.ca.current.active.id,
            },
        }

    def _issue(self) -> ServerCertificate:
        ca = self.ca.current
        now = self._clock()
        generation = signing_generation(ca, now=now, ttl=self._ttl)
        certificate = issue_server_certificate(
            ca, now=now, ttl=self._ttl, extra_dns_names=self._dns_names, generation=generation
        )
        self._issued_at = now
        self._issuer = generation.id
        return certificate

    def _noted(self, material: ServingMaterial, reason: str) -> None:
        certificate = material.certificate
        generation = self._generation
        note_server_identity(certificate.not_after.timestamp(), generation, reason)
        log.info(
            "server certificate %s (%s): serial=%x not_after=%s issuer generation=%s;"
            " trust bundle generation %d (%d roots)",
            "issued" if reason == "start" else "renewed",
            reason,
            certificate.certificate.serial_number,
            certificate.not_after.isoformat(),
            self._issuer[:16],
            generation,
            len(material.bundle.roots),
        )

    async def _catch_up(self) -> int:
        """Load the newest CA state if it is newer than the one held; the store revision
        to watch from."""
        snapshot = await self._store.read_prefix(CA_STATE_PREFIX)
        newest = max((s for e in snapshot.entries if (s := state_seq(e.key))), default=0)
        if newest > (self._ca_store.seq or 0):
            await self._reload(newest)
        return snapshot.revision

    async def _reload(self, seq: int) -> None:
        """Serve the store's newest CA state; a failure is logged and the held one kept."""
        try:
            loaded = await self._ca_store.load(self._ca_config, clock=self._clock)
            state = loaded.state().with_usage_of(self.ca.current.state())
            ca = LocalCertificateAuthority(self._ca_config, state, clock=self._clock)
            await self._serve("CA state loaded from the store", ca)
        except IdentityError as exc:
            log.error(
                "the shared CA changed (state %d) but cannot be served: %s; still serving state %s",
                seq,
                exc,
                self._generation,
            )

    async def _follow(self, after: int) -> None:
        while True:
            try:
                async with self._store.watch(CA_STATE_PREFIX, after_revision=after) as events:
                    async for event in events:
                        after = event.revision
                        seq = state_seq(event.key)
                        if event.kind is EventKind.PUT and seq and seq > (self._ca_store.seq or 0):
                            await self._reload(seq)
            except StoreError as exc:
                log.warning("CA watch broke (%s); reading again in %.1fs", exc, self._retry_s)
            await asyncio.sleep(self._retry_s)
            with contextlib.suppress(StoreError):
                after = await self._catch_up()

    async def _renew_on_time(self) -> None:
        failures = 0
        while True:
            self._renewed.clear()
            wait_s = (self.renew_at - self._clock()).total_seconds()
            if wait_s > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait_s):
                        await self._renewed.wait()
                if self._renewed.is_set():
                    continue  # renewed meanwhile (a CA change): a new deadline
            try:
                await self.renew("renewal due")
            except Exception as exc:  # the loop must outlive any one failure
                failures += 1
                delay_s = min(self._retry_s * 2 ** min(failures - 1, 10), _MAX_RETRY_S)
                log.error(
                    "server certificate renewal failed (%d in a row): %s; retrying in %.1fs",
                    failures,
                    exc,
                    delay_s,
                    exc_info=not isinstance(exc, IdentityError),
                )
                await asyncio.sleep(delay_s)
            else:
                failures = 0
