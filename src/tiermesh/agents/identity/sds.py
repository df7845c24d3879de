"""SDS for the node's own Envoy: the SVID and the trust bundle as Envoy ``Secret``s.

The agent runs a *local* xDS server (``tiermesh.xds``: a snapshot cache and the ADS server's
SotW/delta streams) that only its Envoy talks to, and sets a new snapshot on every change
of the :class:`SvidStore`. Envoy reaches it through a static cluster and SDS configs whose
``api_config_source`` is gRPC (see ``sds_bootstrap``), so Envoy calls
``SecretDiscoveryService``, which the xDS server also serves (``start_server(sds=True)``).

The private key crosses only this local hop (prefer a unix socket with mode 0600: anyone who
can connect receives the key). Nothing here talks to the control plane.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2
from envoy.type.matcher.v3 import string_pb2

from tiermesh.agents.identity.material import SvidMaterial
from tiermesh.agents.identity.svid_store import SvidStore, Unsubscribe
from tiermesh.agents.identity.workload_api import (
    bind_unix_socket_path,
    release_unix_socket_path,
)
from tiermesh.xds import AdsServer, Snapshot, SnapshotCache, start_server

__all__ = [
    "BUNDLE_SDS_NAME",
    "SVID_SDS_NAME",
    "LocalSdsServer",
    "SdsNames",
    "sds_secrets",
    "tls_certificate_secret",
    "validation_context_secret",
]

log = logging.getLogger("tiermesh.agents.identity")

SVID_SDS_NAME = "tiermesh_svid"
"""Default name of the ``tls_certificate`` secret (the node's SVID and key)."""

BUNDLE_SDS_NAME = "tiermesh_trust_bundle"
"""Default name of the ``validation_context`` secret (the trust domain's roots)."""

_LOCAL_KEY = "local"


def tls_certificate_secret(material: SvidMaterial, name: str = SVID_SDS_NAME) -> secret_pb2.Secret:
    """A ``tls_certificate`` secret: the chain (PEM) and the private key, inline."""
    return secret_pb2.Secret(
        name=name,
        tls_certificate=common_pb2.TlsCertificate(
            certificate_chain=base_pb2.DataSource(inline_bytes=material.chain_pem()),
            private_key=base_pb2.DataSource(inline_bytes=material.key_pem()),
        ),
    )


def validation_context_secret(
    material: SvidMaterial,
    name: str = BUNDLE_SDS_NAME,
    *,
    peer_spiffe_ids: Sequence[str] = (),
) -> secret_pb2.Secret:
    """A ``validation_context`` secret: the bundle's roots as ``trusted_ca``.

    With ``peer_spiffe_ids`` the peer must also present one of them as a URI SAN (exact
    match); without, any SVID of the trust domain passes.
    """
    return secret_pb2.Secret(
        name=name,
        validation_context=common_pb2.CertificateValidationContext(
            trusted_ca=base_pb2.DataSource(inline_bytes=material.bundle_pem()),
            match_typed_subject_alt_names=[
                common_pb2.SubjectAltNameMatcher(
                    san_type=common_pb2.SubjectAltNameMatcher.URI,
                    matcher=string_pb2.StringMatcher(exact=spiffe_id),
                )
                for spiffe_id in peer_spiffe_ids
            ],
        ),
    )


@dataclass(frozen=True, slots=True)
class SdsNames:
    """Secret names served, and the SPIFFE IDs per extra validation secret.

    ``peers`` maps a validation secret name to the SPIFFE IDs it accepts, e.g.
    ``{"peer_gpu_1": ("spiffe://mesh.example/node/gpu-1",)}`` for an upstream cluster that
    must reach exactly that node.
    """

    svid: str = SVID_SDS_NAME
    bundle: str = BUNDLE_SDS_NAME
    peers: dict[str, tuple[str, ...]] = field(default_factory=dict)


def sds_secrets(material: SvidMaterial, names: SdsNames | None = None) -> list[secret_pb2.Secret]:
    """Every secret the local SDS server serves for ``material``."""
    names = names or SdsNames()
    return [
        tls_certificate_secret(material, names.svid),
        validation_context_secret(material, names.bundle),
        *(
            validation_context_secret(material, name, peer_spiffe_ids=ids)
            for name, ids in sorted(names.peers.items())
        ),
    ]


class LocalSdsServer:
    """Serves :func:`sds_secrets` of the store's identity to the node's Envoy.

    ``address`` is ``unix:/abs/path`` (created with ``mode``, removed on stop) or
    ``127.0.0.1:port`` (port 0 picks one, see :attr:`address`). Every Envoy that connects
    gets the same snapshot whatever its node id. Also serves ADS, so an Envoy may use it as
    its ADS source in tests.

    Task safety: start, stop and every update run on the store's event loop. A new snapshot
    is set synchronously inside ``store.update``; identical content pushes nothing.
    """

    def __init__(
        self,
        store: SvidStore,
        address: str,
        *,
        names: SdsNames | None = None,
        mode: int = 0o600,
    ) -> None:
        self._store = store
        self._requested = address
        self._names = names or SdsNames()
        self._mode = mode
        self.cache = SnapshotCache(node_key=lambda _node: _LOCAL_KEY)
        self.ads: AdsServer | None = None
        self._server: grpc.aio.Server | None = None
        self._unsubscribe: Unsubscribe | None = None
        self.address = address
        """Where Envoy connects; the bound port replaces 0 once started."""
        self.pushes = 0
        """How many distinct snapshots were set."""

    @property
    def unix_path(self) -> Path | None:
        """The socket file when serving on a unix socket."""
        if self._requested.startswith("unix:"):
            return Path(self._requested.removeprefix("unix:"))
        return None

    async def start(self) -> None:
        """Bind and serve; publish the current identity if the store has one.

        Raises :class:`SocketPathError` for an unusable unix path, ``RuntimeError`` if the
        address cannot be bound.
        """
        if self._server is not None:
            raise RuntimeError("the SDS server is already running")
        path = self.unix_path
        if path is not None:
            bind_unix_socket_path(path)
        self.ads = AdsServer(self.cache)
        server, port = await start_server(self.ads, self._requested, sds=True)
        self._server = server
        if path is not None:
            os.chmod(path, self._mode)
        elif self._requested.endswith(":0"):
            self.address = f"{self._requested.rsplit(':', 1)[0]}:{port}"
        self._unsubscribe = self._store.subscribe(self._publish)
        if self._store.current is not None:
            self._publish(self._store.current)
        log.info("local SDS serving on %s", self.address)

    def _publish(self, material: SvidMaterial) -> None:
        snapshot = Snapshot.build(secrets=sds_secrets(material, self._names))
        if self.cache.set_snapshot(_LOCAL_KEY, snapshot):
            self.pushes += 1

    async def stop(self, grace: float | None = None) -> None:
        """Stop serving and unsubscribe; a unix socket file is removed. Idempotent."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        server, self._server = self._server, None
        if server is not None:
            await server.stop(grace)
        path = self.unix_path
        if path is not None:
            release_unix_socket_path(path)

    async def __aenter__(self) -> LocalSdsServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
