"""The agent's side of the node identity API: join with a token, renew with the current SVID.

Both calls make an EC/RSA CSR from a key the caller holds (the key never leaves the node),
open a short-lived TLS channel, make one call and close the channel. The control plane is
authenticated by its certificate chaining to the trust bundle and naming ``server_name``
(``controlplane.<trust-domain>``; see ``control_plane_dns_name``); grpcio checks the DNS
SAN against it.

- :func:`join` goes to the control plane's *join* port (TLS, no client certificate). Where
  the agent gets the first trust bundle from (a file shipped with the token) is the
  operator's business; it must be the real one, or the token goes to an impostor.
- :func:`renew` goes to the *node* port and presents the current SVID as the mTLS client
  certificate.

Each returns ``(chain_pem, bundle_pem)``: the new SVID chain (leaf first) and the trust
bundle to use from now on. A refused or failed call raises :class:`NodeApiCallError` with
the gRPC status. Safe to call from any task; nothing is shared between calls.
"""

from __future__ import annotations

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tiermesh.controlplane.api.join import (
    JOIN_METHOD,
    RENEW_METHOD,
    JoinRequest,
    RenewRequest,
    SvidResponse,
    method_path,
)

__all__ = ["NodeApiCallError", "SigningKey", "csr_pem", "join", "renew"]

SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
"""Key types a node may hold (the CA accepts EC P-256/P-384 and RSA 2048-8192)."""

DEFAULT_TIMEOUT_S = 10.0


class NodeApiCallError(Exception):
    """A node API call failed: refused by the control plane, or it could not be reached.

    ``code`` is the gRPC status (UNAUTHENTICATED, PERMISSION_DENIED, INVALID_ARGUMENT,
    UNAVAILABLE — also for a TLS handshake the server refused — …).
    """

    def __init__(self, method: str, code: grpc.StatusCode, details: str) -> None:
        self.method = method
        self.code = code
        self.details = details
        super().__init__(f"{method} failed: {code.name}: {details}")


def csr_pem(key: SigningKey) -> str:
    """A PEM PKCS#10 request for ``key``'s public half, empty subject, no extensions: the CA
    names the SVID itself."""
    request = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    return request.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


async def join(
    target: str,
    token: str,
    key: SigningKey,
    *,
    trust_bundle_pem: bytes,
    server_name: str,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> tuple[bytes, bytes]:
    """Join at ``target`` (``host:join-port``) with a one-time ``token``; the SVID is for
    ``key``.

    Raises:
        NodeApiCallError: the call failed (a used or expired token is UNAUTHENTICATED).
    """
    credentials = grpc.ssl_channel_credentials(root_certificates=trust_bundle_pem)
    request = JoinRequest(token=token, csr_pem=csr_pem(key))
    return await _call(
        target,
        credentials,
        server_name=server_name,
        method=JOIN_METHOD,
        request=request,
        timeout_s=timeout_s,
    )


async def renew(
    target: str,
    current_chain_pem: bytes,
    key_pem: bytes,
    new_key: SigningKey,
    *,
    trust_bundle_pem: bytes,
    server_name: str,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> tuple[bytes, bytes]:
    """Renew at ``target`` (``host:node-port``), authenticated by the current SVID
    (``current_chain_pem`` with its private key ``key_pem``, PEM); the new SVID is for
    ``new_key`` (it may be the same key).

    Raises:
        NodeApiCallError: the call failed (an expired or foreign SVID fails the handshake:
        UNAVAILABLE).
    """
    credentials = grpc.ssl_channel_credentials(
        root_certificates=trust_bundle_pem,
        private_key=key_pem,
        certificate_chain=current_chain_pem,
    )
    request = RenewRequest(csr_pem=csr_pem(new_key))
    return await _call(
        target,
        credentials,
        server_name=server_name,
        method=RENEW_METHOD,
        request=request,
        timeout_s=timeout_s,
    )


async def _call(
    target: str,
    credentials: grpc.ChannelCredentials,
    *,
    server_name: str,
    method: str,
    request: JoinRequest | RenewRequest,
    timeout_s: float,
) -> tuple[bytes, bytes]:
    options = [("grpc.ssl_target_name_override", server_name)]
    async with grpc.aio.secure_channel(target, credentials, options=options) as channel:
        call = channel.unary_unary(
            method_path(method),
            request_serializer=_encode,
            response_deserializer=SvidResponse.model_validate_json,
        )
        try:
            response: SvidResponse = await call(request, timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise NodeApiCallError(method, exc.code(), exc.details() or "") from exc
    return response.svid_chain_pem.encode(), response.bundle_pem.encode()


def _encode(request: JoinRequest | RenewRequest) -> bytes:
    return request.model_dump_json().encode()
