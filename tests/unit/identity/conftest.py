"""Fixtures for the identity tests: a settable clock, a CA, node keys and CSR builders.

Tests reach the helpers only through fixtures (``conftest`` is not importable reliably);
they import the helper types under ``TYPE_CHECKING`` for annotations.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from tiermesh.controlplane.identity import CaConfig, LocalCertificateAuthority

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
TRUST_DOMAIN = "mesh.example"

CsrFactory = Callable[..., bytes]


class FakeClock:
    """A clock that stands still until a test moves it."""

    def __init__(self, now: dt.datetime = T0) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, delta: dt.timedelta) -> None:
        self.now += delta


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def config() -> CaConfig:
    return CaConfig(TRUST_DOMAIN)


@pytest.fixture
def ca(config: CaConfig, clock: FakeClock) -> LocalCertificateAuthority:
    return LocalCertificateAuthority.create(config, clock=clock)


@pytest.fixture(scope="session")
def node_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 2048)


def build_csr(
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    *,
    names: Sequence[x509.GeneralName] = (),
    extensions: Sequence[x509.ExtensionType] = (),
    common_name: str = "node",
    encoding: serialization.Encoding = serialization.Encoding.PEM,
) -> bytes:
    """A CSR signed by ``key`` asking for ``names`` as SANs and ``extensions``."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
    for ext in extensions:
        builder = builder.add_extension(ext, critical=True)
    return builder.sign(key, hashes.SHA256()).public_bytes(encoding)


@pytest.fixture
def make_csr(node_key: ec.EllipticCurvePrivateKey) -> CsrFactory:
    def factory(**kwargs: object) -> bytes:
        return build_csr(node_key, **kwargs)  # type: ignore[arg-type]

    return factory


@pytest.fixture(scope="session")
def csr_builder() -> Callable[..., bytes]:
    return build_csr
