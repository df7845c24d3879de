"""TLS credentials whose certificate and client roots change while the ports serve.

Every TLS port of a replica (ADS, node API, join, audit collector) takes its credentials
from one :class:`LiveCredentials`. :meth:`LiveCredentials.update` swaps the server
certificate and the trust bundle; the next handshake on every port presents the new
certificate and verifies the client's chain against the new roots. Connections already
open are not touched: an Envoy's ADS stream or an agent's registry session keeps running
on the handshake it made.

Built on grpcio's ``dynamic_ssl_server_credentials``: grpc calls a fetcher before *every*
new handshake, on one of its own threads (holding the GIL, outside the event loop). The
fetcher here only compares a version number and hands back a configuration built in
:meth:`~LiveCredentials.update`, so a handshake costs no certificate parsing. Returning a
configuration makes grpc build a new TLS context, so a port gets each version exactly once.
An exception in a fetcher makes grpc keep the port's last configuration (and log it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import grpc

from tiermesh.controlplane.identity.bundle import TrustBundle
from tiermesh.controlplane.identity.server_cert import ServerCertificate

__all__ = ["LiveCredentials", "ServingMaterial"]


@dataclass(frozen=True, slots=True)
class ServingMaterial:
    """One version of what the ports present (``certificate``) and trust (``bundle``).
    ``version`` grows by one per :meth:`LiveCredentials.update`. Immutable."""

    certificate: ServerCertificate
    bundle: TrustBundle
    version: int


@dataclass(frozen=True, slots=True)
class _Configs:
    material: ServingMaterial
    mutual: grpc.ServerCertificateConfiguration
    server_only: grpc.ServerCertificateConfiguration


def _configs(material: ServingMaterial) -> _Configs:
    pair = [(material.certificate.key_pem(), material.certificate.chain_pem())]
    return _Configs(
        material,
        grpc.ssl_server_certificate_configuration(pair, root_certificates=material.bundle.to_pem()),
        grpc.ssl_server_certificate_configuration(pair),
    )


class LiveCredentials:
    """The certificate and trust bundle of every TLS port, swappable (module doc).

    Thread safety: every method may be called from any thread; grpc calls the fetchers
    from its own threads. A reader sees one whole :class:`ServingMaterial`, never a
    certificate of one version with the roots of another.
    """

    def __init__(self, certificate: ServerCertificate, bundle: TrustBundle) -> None:
        self._lock = threading.Lock()
        self._configs: _Configs = _configs(ServingMaterial(certificate, bundle, 1))

    @classmethod
    def given(
        cls,
        credentials: LiveCredentials | None,
        certificate: ServerCertificate | None,
        bundle: TrustBundle | None,
    ) -> LiveCredentials:
        """``credentials`` if given, else fixed ones made of ``certificate`` and ``bundle``
        (for servers that take either).

        Raises:
            ValueError: neither ``credentials`` nor both of the others.
        """
        if credentials is not None:
            return credentials
        if certificate is None or bundle is None:
            raise ValueError("give credentials, or a certificate and a bundle")
        return cls(certificate, bundle)

    @property
    def current(self) -> ServingMaterial:
        """What the next handshake on any port gets."""
        return self._configs.material

    def update(self, certificate: ServerCertificate, bundle: TrustBundle) -> ServingMaterial:
        """Serve ``certificate`` and trust ``bundle`` from the next handshake on."""
        with self._lock:
            version = self._configs.material.version + 1
            self._configs = _configs(ServingMaterial(certificate, bundle, version))
            return self._configs.material

    def server_credentials(self, *, require_client_auth: bool = True) -> grpc.ServerCredentials:
        """Credentials for one port. With ``require_client_auth`` the handshake demands a
        client certificate chaining to the current bundle; without it the server asks for
        none (grpc sends no CertificateRequest), as the join port needs.

        Make one per port: each tracks which version its port was last given.
        """
        initial = self._configs
        delivered = initial.material.version
        guard = threading.Lock()

        def pick(configs: _Configs) -> grpc.ServerCertificateConfiguration:
            return configs.mutual if require_client_auth else configs.server_only

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            nonlocal delivered
            configs = self._configs
            with guard:
                if configs.material.version == delivered:
                    return None
                delivered = configs.material.version
            return pick(configs)

        # grpcio's stubs type the fetcher as never returning None, but None is its
        # documented "unchanged" answer (a new configuration rebuilds the TLS context).
        fetcher = cast("Callable[[], grpc.ServerCertificateConfiguration]", fetch)
        return grpc.dynamic_ssl_server_credentials(
            pick(initial), fetcher, require_client_authentication=require_client_auth
        )
