"""Test helpers for the agent identity tests: a CA-backed SvidSource and a settable clock.

Imported as ``tests.unit.agent_identity.casource`` by the unit and integration tests.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from cryptography import x509

from tiermesh.controlplane.identity import CaConfig, LocalCertificateAuthority

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
TRUST_DOMAIN = "mesh.example"
NODE_ID = "edge-1"
SPIFFE_ID = f"spiffe://{TRUST_DOMAIN}/node/{NODE_ID}"


class FakeClock:
    """A clock that stands still until a test moves it."""

    def __init__(self, now: dt.datetime = T0) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


def make_ca(
    *, clock: object = None, ttl: dt.timedelta = dt.timedelta(hours=1)
) -> LocalCertificateAuthority:
    """A CA for ``TRUST_DOMAIN`` issuing ``ttl`` SVIDs with no backdating."""
    config = CaConfig(TRUST_DOMAIN, svid_ttl=ttl, backdate=dt.timedelta(0))
    if clock is None:
        return LocalCertificateAuthority.create(config)
    return LocalCertificateAuthority.create(config, clock=clock)  # type: ignore[arg-type]


@dataclass
class CaSource:
    """An SvidSource that asks a CA directly, as the join client will ask the control plane.

    ``fail_next`` makes that many coming calls raise ``ConnectionError``; ``answer_as`` makes
    the "control plane" certify the CSR's key for another node id (a misbehaving issuer).
    """

    ca: LocalCertificateAuthority
    node_id: str = NODE_ID
    fail_next: int = 0
    answer_as: str = ""
    calls: int = 0
    csrs: list[bytes] = field(default_factory=list)

    async def renew(self, csr_pem: bytes) -> tuple[bytes, bytes]:
        self.calls += 1
        self.csrs.append(csr_pem)
        if self.fail_next > 0:
            self.fail_next -= 1
            raise ConnectionError("control plane unreachable")
        if self.answer_as:
            key = x509.load_pem_x509_csr(csr_pem).public_key()
            issued = self.ca.issue_for_key(key, self.answer_as)
        else:
            issued = self.ca.issue(csr_pem, self.node_id)
        return issued.chain_pem(), self.ca.bundle().to_pem()
