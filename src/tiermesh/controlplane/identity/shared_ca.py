"""The CA a replica signs with, replaceable when the shared CA changes in the store.

Services that issue or verify SVIDs (the node API, the audit collector) hold a
:class:`SharedCa` instead of one :class:`LocalCertificateAuthority`: when another replica
rolls the CA over, this replica loads the new state and :meth:`SharedCa.replace` makes
every later call sign with the new active generation and verify against the new bundle.
"""

from __future__ import annotations

import datetime as dt

from tiermesh.controlplane.identity.bundle import TrustBundle
from tiermesh.controlplane.identity.ca import IssuedSvid, LocalCertificateAuthority
from tiermesh.controlplane.identity.errors import InvalidCaConfigError

__all__ = ["SharedCa"]


class SharedCa:
    """A :class:`~tiermesh.controlplane.identity.ca.CertificateAuthority` that delegates to
    the current :class:`LocalCertificateAuthority`.

    Thread safety: as the CA's own; :meth:`replace` swaps one reference, so a call sees
    either the old CA or the new one, whole.
    """

    def __init__(self, ca: LocalCertificateAuthority) -> None:
        self._ca = ca

    @property
    def current(self) -> LocalCertificateAuthority:
        """The CA every call goes to now."""
        return self._ca

    def replace(self, ca: LocalCertificateAuthority) -> None:
        """Send every later call to ``ca``.

        Raises:
            InvalidCaConfigError: ``ca`` is of another trust domain.
        """
        if ca.trust_domain != self._ca.trust_domain:
            raise InvalidCaConfigError(
                "trust_domain", f"{ca.trust_domain!r} cannot replace {self._ca.trust_domain!r}"
            )
        self._ca = ca

    @property
    def trust_domain(self) -> str:
        """The trust domain every SVID belongs to."""
        return self._ca.trust_domain

    def issue(self, csr: bytes, node_id: str, *, ttl: dt.timedelta | None = None) -> IssuedSvid:
        """:meth:`LocalCertificateAuthority.issue` of the current CA."""
        return self._ca.issue(csr, node_id, ttl=ttl)

    def bundle(self) -> TrustBundle:
        """The current CA's trust bundle."""
        return self._ca.bundle()
