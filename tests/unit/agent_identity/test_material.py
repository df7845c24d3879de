"""What the agent accepts as its identity, and how it hands it out."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from spiffe import X509Svid

from tests.unit.agent_identity.casource import SPIFFE_ID, TRUST_DOMAIN, FakeClock, make_ca
from tiermesh.agents.identity import (
    SpiffeIdChangedError,
    SvidRejectedError,
    build_csr,
    generate_key,
    load_material,
)
from tiermesh.controlplane.identity import LocalCertificateAuthority, TrustBundle, verify_svid


def _issue(
    ca: LocalCertificateAuthority, node_id: str = "edge-1"
) -> tuple[ec.EllipticCurvePrivateKey, bytes, bytes]:
    key = generate_key()
    issued = ca.issue(build_csr(key, node_id=node_id), node_id)
    return key, issued.chain_pem(), ca.bundle().to_pem()


def test_accepts_a_ca_issued_svid_and_exposes_it(
    ca: LocalCertificateAuthority, clock: FakeClock
) -> None:
    key, chain, bundle = _issue(ca)
    material = load_material(key, chain, bundle, now=clock())
    assert material.spiffe_id == SPIFFE_ID
    assert material.trust_domain == TRUST_DOMAIN
    assert material.chain_pem() == chain
    assert material.bundle_pem() == bundle
    assert material.rotation_due_at == clock() + dt.timedelta(minutes=30)
    assert "PRIVATE" not in repr(material)
    assert "private_key" not in repr(material)
    parsed = X509Svid.parse_raw(material.chain_der(), material.key_der())
    assert str(parsed.spiffe_id) == SPIFFE_ID
    assert str(material.to_x509_svid().spiffe_id) == SPIFFE_ID
    assert material.to_x509_bundle().x509_authorities == set(material.bundle)
    verified = verify_svid(
        material.chain_der(), TrustBundle.from_pem(TRUST_DOMAIN, bundle), now=clock()
    )
    assert verified.node_id == "edge-1"


def test_a_leaf_for_another_key_is_rejected(
    ca: LocalCertificateAuthority, clock: FakeClock
) -> None:
    _key, chain, bundle = _issue(ca)
    with pytest.raises(SvidRejectedError, match="different key"):
        load_material(generate_key(), chain, bundle, now=clock())


def test_a_chain_from_a_foreign_ca_is_rejected(
    ca: LocalCertificateAuthority, clock: FakeClock
) -> None:
    key, chain, _bundle = _issue(ca)
    foreign = make_ca(clock=clock).bundle().to_pem()
    with pytest.raises(SvidRejectedError, match="bundle root"):
        load_material(key, chain, foreign, now=clock())


def test_expired_and_not_yet_valid_are_rejected(
    ca: LocalCertificateAuthority, clock: FakeClock
) -> None:
    key, chain, bundle = _issue(ca)
    with pytest.raises(SvidRejectedError, match="expired"):
        load_material(key, chain, bundle, now=clock() + dt.timedelta(hours=2))
    with pytest.raises(SvidRejectedError, match="not valid before"):
        load_material(key, chain, bundle, now=clock() - dt.timedelta(minutes=1))


def test_a_renewal_may_not_change_the_spiffe_id(
    ca: LocalCertificateAuthority, clock: FakeClock
) -> None:
    key, chain, bundle = _issue(ca, "edge-2")
    with pytest.raises(SpiffeIdChangedError) as info:
        load_material(key, chain, bundle, now=clock(), expected_spiffe_id=SPIFFE_ID)
    assert info.value.offered.endswith("/node/edge-2")


@pytest.mark.parametrize(
    ("chain", "bundle", "message"),
    [
        (b"not pem", None, "unparseable chain"),
        (None, b"", "bundle"),
        (None, "leaf", "not a CA"),
    ],
)
def test_garbage_is_rejected(
    ca: LocalCertificateAuthority,
    clock: FakeClock,
    chain: bytes | None,
    bundle: bytes | str | None,
    message: str,
) -> None:
    key, good_chain, good_bundle = _issue(ca)
    if bundle == "leaf":
        bundle = good_chain
    with pytest.raises(SvidRejectedError, match=message):
        load_material(
            key,
            chain if chain is not None else good_chain,
            bundle if isinstance(bundle, bytes) else good_bundle,
            now=clock(),
        )


def test_naive_now_is_refused(ca: LocalCertificateAuthority) -> None:
    key, chain, bundle = _issue(ca)
    with pytest.raises(ValueError, match="timezone"):
        load_material(key, chain, bundle, now=dt.datetime(2026, 3, 1))


def test_csr_carries_only_public_material() -> None:
    key = generate_key()
    csr = x509.load_pem_x509_csr(build_csr(key, node_id="edge-1", spiffe_id=SPIFFE_ID))
    assert csr.is_signature_valid
    assert csr.public_key() == key.public_key()
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [SPIFFE_ID]
