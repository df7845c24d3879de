"""The node identity API: how an agent joins the mesh and renews its X.509-SVID.

gRPC service :data:`NODE_IDENTITY_SERVICE` with two unary methods. Messages are these
models as UTF-8 JSON (``model_dump_json`` / ``model_validate_json``), not protobuf, so the
contract needs no generated code. Version ``v1``: an incompatible change gets a new service
name (``tiermesh.node.v2.…``); fields are only ever added with defaults within ``v1``.

- ``Join`` (:class:`JoinRequest` → :class:`SvidResponse`) is served on the control plane's
  *join* port: server-authenticated TLS, no client certificate. The one-time join token
  authenticates the node and names its node id.
- ``Renew`` (:class:`RenewRequest` → :class:`SvidResponse`) is served on the *node* port:
  mutual TLS. The node id comes from the client SVID the TLS handshake verified, never from
  the request.

Either way the CSR contributes only its public key; it may name no identity but the node's
own (``spiffe://<td>/node/<node-id>``, ``<node-id>.node.<td>``) and ask for no CA powers.
The control plane presents a certificate with URI SAN ``spiffe://<td>/controlplane`` and
DNS SAN :func:`control_plane_dns_name`; clients check the DNS name (grpcio's TLS client does).

Status codes: INVALID_ARGUMENT (undecodable request, malformed CSR), UNAUTHENTICATED (token
unknown, reused or expired; no verified client SVID), PERMISSION_DENIED (the CSR asks for
another identity or CA powers), RESOURCE_EXHAUSTED (request over
:data:`MAX_REQUEST_BYTES`), UNAVAILABLE (the control plane cannot reach its store).
Nothing is issued when a call fails.
"""

from __future__ import annotations

from typing import Final

from pydantic import AwareDatetime, Field

from tiermesh.controlplane.api._base import Contract

__all__ = [
    "CONTROL_PLANE_PATH",
    "JOIN_METHOD",
    "MAX_CSR_PEM_CHARS",
    "MAX_REQUEST_BYTES",
    "MAX_TOKEN_CHARS",
    "NODE_API_VERSION",
    "NODE_IDENTITY_SERVICE",
    "RENEW_METHOD",
    "JoinRequest",
    "RenewRequest",
    "SvidResponse",
    "control_plane_dns_name",
    "control_plane_spiffe_id",
    "method_path",
]

NODE_API_VERSION: Final = "v1"
"""Version of this contract; part of the service name."""

NODE_IDENTITY_SERVICE: Final = f"tiermesh.node.{NODE_API_VERSION}.NodeIdentity"
"""Fully qualified gRPC service name."""

JOIN_METHOD: Final = "Join"
"""Method name: first identity from a join token."""

RENEW_METHOD: Final = "Renew"
"""Method name: a fresh SVID for the node named by the caller's current SVID."""

MAX_REQUEST_BYTES: Final = 64 * 1024
"""Largest request message the server accepts (gRPC max receive size)."""

MAX_CSR_PEM_CHARS: Final = 16 * 1024
"""Largest accepted CSR, in PEM characters (an RSA-8192 CSR is about 2.5 KiB)."""

MAX_TOKEN_CHARS: Final = 128
"""Longest accepted join token (issued tokens are 43 characters)."""

CONTROL_PLANE_PATH: Final = "/controlplane"
"""SPIFFE ID path of the control plane's own certificate."""


def method_path(method: str) -> str:
    """The gRPC path of ``method`` (``/tiermesh.node.v1.NodeIdentity/Join``)."""
    return f"/{NODE_IDENTITY_SERVICE}/{method}"


def control_plane_spiffe_id(trust_domain: str) -> str:
    """``spiffe://<trust-domain>/controlplane``: the URI SAN the control plane presents."""
    return f"spiffe://{trust_domain}{CONTROL_PLANE_PATH}"


def control_plane_dns_name(trust_domain: str) -> str:
    """``controlplane.<trust-domain>``: the DNS SAN clients check (TLS server name)."""
    return f"controlplane.{trust_domain}"


class JoinRequest(Contract):
    """First contact of a node: trade a one-time join token for an SVID."""

    token: str = Field(min_length=1, max_length=MAX_TOKEN_CHARS)
    """The join token an operator created for this node (``tiermesh node token``). Consumed
    by a successful call; a second use is refused with UNAUTHENTICATED."""
    csr_pem: str = Field(min_length=1, max_length=MAX_CSR_PEM_CHARS)
    """PKCS#10 certificate signing request, PEM, signed by the node's new private key
    (EC P-256 recommended). The private key never leaves the node."""


class RenewRequest(Contract):
    """Renewal by a node that holds a live SVID (sent as its mTLS client certificate)."""

    csr_pem: str = Field(min_length=1, max_length=MAX_CSR_PEM_CHARS)
    """PKCS#10 CSR, PEM, for the node's next key. The issued SVID names the node of the
    client certificate, whatever the CSR's subject says."""


class SvidResponse(Contract):
    """An issued X.509-SVID and the trust bundle to verify peers with."""

    svid_chain_pem: str
    """The SVID chain, PEM: the leaf first, then the intermediate that signed it (the root is
    in ``bundle_pem``). Serve it as Envoy's ``certificate_chain``."""
    bundle_pem: str
    """The trust domain's root certificates, PEM. During a CA rollover it holds the old and
    the new root; replace the stored bundle with it."""
    spiffe_id: str
    """The leaf's SPIFFE ID, ``spiffe://<trust-domain>/node/<node-id>``."""
    expires_at: AwareDatetime
    """The leaf's ``not_after`` (UTC). Renew at half-life (``not_before`` + half the
    lifetime), leaving the rest for retries."""
