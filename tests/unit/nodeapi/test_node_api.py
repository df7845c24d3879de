"""The node identity API over real gRPC TLS on loopback: join, renew, and what is refused."""

from __future__ import annotations

import datetime as dt
import logging

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.unit.nodeapi.conftest import TRUST_DOMAIN, ControlPlane, key_pem
from tiermesh.agents.identity.join_client import NodeApiCallError, join, renew
from tiermesh.controlplane.api.join import (
    JOIN_METHOD,
    MAX_REQUEST_BYTES,
    RENEW_METHOD,
    JoinRequest,
    RenewRequest,
    method_path,
)
from tiermesh.controlplane.identity import (
    CaConfig,
    LocalCertificateAuthority,
    NodeIdentity,
    TrustBundle,
    utc_now,
    verify_svid,
)

NODE = "edge-1"
SPIFFE = NodeIdentity(TRUST_DOMAIN, NODE).spiffe_id


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def csr_with(key: ec.EllipticCurvePrivateKey, *names: x509.GeneralName, ca: bool = False) -> str:
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
    if ca:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=None), critical=True
        )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


async def raw_call(
    cp: ControlPlane,
    method: str,
    payload: bytes,
    *,
    client: tuple[bytes, bytes] | None = None,
) -> tuple[grpc.StatusCode, str]:
    """Send ``payload`` as is; ``client`` = (chain, key) selects the mTLS node port."""
    target = cp.api.node_target if client is not None else cp.api.join_target
    credentials = grpc.ssl_channel_credentials(
        cp.bundle_pem,
        private_key=client[1] if client else None,
        certificate_chain=client[0] if client else None,
    )
    options = [("grpc.ssl_target_name_override", cp.server_name)]
    async with grpc.aio.secure_channel(target, credentials, options=options) as channel:
        call = channel.unary_unary(method_path(method))
        try:
            await call(payload, timeout=5)
        except grpc.aio.AioRpcError as exc:
            return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


async def joined(cp: ControlPlane, node: str = NODE) -> tuple[bytes, bytes, bytes]:
    """A node that joined: (chain, key PEM, bundle)."""
    key = new_key()
    token = await cp.tokens.create(node, dt.timedelta(minutes=5))
    chain, bundle = await join(
        cp.api.join_target, token, key, trust_bundle_pem=cp.bundle_pem, server_name=cp.server_name
    )
    return chain, key_pem(key), bundle


def leaf_key(chain: bytes) -> object:
    return x509.load_pem_x509_certificates(chain)[0].public_key()


async def test_join_issues_an_svid_that_verifies_against_the_bundle(cp: ControlPlane) -> None:
    key = new_key()
    token = await cp.tokens.create(NODE, dt.timedelta(minutes=5))
    chain, bundle_pem = await join(
        cp.api.join_target, token, key, trust_bundle_pem=cp.bundle_pem, server_name=cp.server_name
    )
    bundle = TrustBundle.from_pem(TRUST_DOMAIN, bundle_pem)
    verified = verify_svid(chain, bundle, now=utc_now(), expected_spiffe_id=SPIFFE)
    assert verified.node_id == NODE
    assert leaf_key(chain) == key.public_key()
    assert bundle.fingerprints == cp.ca.bundle().fingerprints


async def test_a_token_joins_once(cp: ControlPlane) -> None:
    token = await cp.tokens.create(NODE, dt.timedelta(minutes=5))
    args = {"trust_bundle_pem": cp.bundle_pem, "server_name": cp.server_name}
    await join(cp.api.join_target, token, new_key(), **args)  # type: ignore[arg-type]
    with pytest.raises(NodeApiCallError) as info:
        await join(cp.api.join_target, token, new_key(), **args)  # type: ignore[arg-type]
    assert info.value.code is grpc.StatusCode.UNAUTHENTICATED
    assert cp.issued() == 1


async def test_an_expired_or_unknown_token_is_unauthenticated(cp: ControlPlane) -> None:
    token = await cp.tokens.create(NODE, dt.timedelta(minutes=5))
    cp.clock.offset = dt.timedelta(minutes=6)
    for candidate in (token, "x" * 43):
        with pytest.raises(NodeApiCallError) as info:
            await join(
                cp.api.join_target,
                candidate,
                new_key(),
                trust_bundle_pem=cp.bundle_pem,
                server_name=cp.server_name,
            )
        assert info.value.code is grpc.StatusCode.UNAUTHENTICATED
    assert cp.issued() == 0


async def test_renew_is_authenticated_by_the_current_svid(cp: ControlPlane) -> None:
    chain, key, bundle = await joined(cp)
    fresh = new_key()
    new_chain, _ = await renew(
        cp.api.node_target, chain, key, fresh, trust_bundle_pem=bundle, server_name=cp.server_name
    )
    verified = verify_svid(new_chain, cp.ca.bundle(), now=utc_now(), expected_spiffe_id=SPIFFE)
    assert (
        verified.certificate.serial_number
        != x509.load_pem_x509_certificates(chain)[0].serial_number
    )
    assert leaf_key(new_chain) == fresh.public_key()


async def test_renew_on_the_join_port_has_no_client_svid(cp: ControlPlane) -> None:
    code, details = await raw_call(
        cp, RENEW_METHOD, RenewRequest(csr_pem=csr_with(new_key())).model_dump_json().encode()
    )
    assert code is grpc.StatusCode.UNAUTHENTICATED
    assert "no client certificate" in details


async def test_renew_with_a_foreign_or_expired_svid_fails_the_handshake(cp: ControlPlane) -> None:
    foreign_ca = LocalCertificateAuthority.create(CaConfig(TRUST_DOMAIN))
    key = new_key()
    foreign = foreign_ca.issue(csr_with(key).encode(), NODE).chain_pem()

    expired_key = new_key()
    cp.clock.offset = -dt.timedelta(hours=2, minutes=50)
    expired = cp.ca.issue(csr_with(expired_key).encode(), NODE, ttl=dt.timedelta(hours=1))
    cp.clock.offset = dt.timedelta(0)
    assert expired.not_after < utc_now()
    before = cp.issued()

    for chain, pem in ((foreign, key_pem(key)), (expired.chain_pem(), key_pem(expired_key))):
        with pytest.raises(NodeApiCallError) as info:
            await renew(
                cp.api.node_target,
                chain,
                pem,
                new_key(),
                trust_bundle_pem=cp.bundle_pem,
                server_name=cp.server_name,
            )
        assert info.value.code is grpc.StatusCode.UNAVAILABLE
    assert cp.issued() == before


async def test_renew_is_refused_when_the_ca_clock_says_the_svid_expired(cp: ControlPlane) -> None:
    """The handshake checks the system clock; the service re-verifies at its own clock."""
    chain, key, bundle = await joined(cp)
    cp.clock.offset = dt.timedelta(hours=2)
    with pytest.raises(NodeApiCallError) as info:
        await renew(
            cp.api.node_target, chain, key, new_key(), trust_bundle_pem=bundle,
            server_name=cp.server_name,
        )  # fmt: skip
    assert info.value.code is grpc.StatusCode.UNAUTHENTICATED
    assert "expired" in info.value.details


async def test_a_csr_for_another_node_or_for_ca_powers_is_permission_denied(
    cp: ControlPlane, caplog: pytest.LogCaptureFixture
) -> None:
    chain, key, _ = await joined(cp)
    other = x509.UniformResourceIdentifier(NodeIdentity(TRUST_DOMAIN, "edge-2").spiffe_id)
    before = cp.issued()
    with caplog.at_level(logging.WARNING, logger="tiermesh.nodeapi"):
        for csr in (csr_with(new_key(), other), csr_with(new_key(), ca=True)):
            payload = RenewRequest(csr_pem=csr).model_dump_json().encode()
            code, _ = await raw_call(cp, RENEW_METHOD, payload, client=(chain, key))
            assert code is grpc.StatusCode.PERMISSION_DENIED
    assert cp.issued() == before
    assert sum("PERMISSION_DENIED" in r.getMessage() for r in caplog.records) == 2


async def test_a_bad_csr_at_join_does_not_burn_the_token(cp: ControlPlane) -> None:
    token = await cp.tokens.create(NODE, dt.timedelta(minutes=5))
    other = x509.UniformResourceIdentifier(NodeIdentity(TRUST_DOMAIN, "edge-2").spiffe_id)
    cases = [
        (csr_with(new_key(), other), grpc.StatusCode.PERMISSION_DENIED),
        ("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n", grpc.StatusCode.INVALID_ARGUMENT),
    ]
    for csr, expected in cases:
        payload = JoinRequest(token=token, csr_pem=csr).model_dump_json().encode()
        assert (await raw_call(cp, JOIN_METHOD, payload))[0] is expected
    chain, _ = await join(
        cp.api.join_target, token, new_key(), trust_bundle_pem=cp.bundle_pem,
        server_name=cp.server_name,
    )  # fmt: skip
    verify_svid(chain, cp.ca.bundle(), now=utc_now(), expected_spiffe_id=SPIFFE)


async def test_the_control_planes_own_certificate_is_not_a_node(cp: ControlPlane) -> None:
    client = (cp.certificate.chain_pem(), cp.certificate.key_pem())
    payload = RenewRequest(csr_pem=csr_with(new_key())).model_dump_json().encode()
    code, details = await raw_call(cp, RENEW_METHOD, payload, client=client)
    assert code is grpc.StatusCode.UNAUTHENTICATED
    assert "not a node SVID" in details


@pytest.mark.parametrize(
    "payload",
    [b"\x00\xff garbage", b"{}", b'{"token": 1, "csr_pem": "x"}', b'{"extra": true}', b""],
)
async def test_undecodable_requests_are_invalid_argument(cp: ControlPlane, payload: bytes) -> None:
    code, _ = await raw_call(cp, JOIN_METHOD, payload)
    assert code is grpc.StatusCode.INVALID_ARGUMENT


async def test_oversized_requests_are_refused_and_the_service_keeps_working(
    cp: ControlPlane,
) -> None:
    code, _ = await raw_call(cp, JOIN_METHOD, b"x" * (MAX_REQUEST_BYTES + 1))
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
    chain, _, _ = await joined(cp)
    verify_svid(chain, cp.ca.bundle(), now=utc_now(), expected_spiffe_id=SPIFFE)


async def test_join_port_does_not_accept_plaintext(cp: ControlPlane) -> None:
    async with grpc.aio.insecure_channel(cp.api.join_target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await channel.unary_unary(method_path(JOIN_METHOD))(b"{}", timeout=5)
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE


async def test_node_port_requires_a_client_certificate(cp: ControlPlane) -> None:
    token = await cp.tokens.create(NODE, dt.timedelta(minutes=5))
    with pytest.raises(NodeApiCallError) as info:
        await join(
            cp.api.node_target, token, new_key(), trust_bundle_pem=cp.bundle_pem,
            server_name=cp.server_name,
        )  # fmt: skip
    assert info.value.code is grpc.StatusCode.UNAVAILABLE
