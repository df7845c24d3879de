"""What a gRPC server learns about its TLS peer, read from ``context.auth_context()``.

grpcio (1.85) fills these properties on an mTLS connection after its handshake verified
the client chain against the server's root certificates (which includes validity at the
current system time): ``peer_spiffe_id`` (set only when the leaf has exactly one
``spiffe://`` URI SAN), ``x509_pem_cert`` (the leaf) and ``x509_pem_cert_chain`` (the
certificates the client sent after the leaf). Without a client certificate none of them is
present. Pure functions, thread-safe.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

__all__ = ["AuthContextSource", "peer_chain_pem", "peer_spiffe_id"]

_SPIFFE_ID = "peer_spiffe_id"
_LEAF = "x509_pem_cert"
_CHAIN = "x509_pem_cert_chain"


class AuthContextSource(Protocol):
    """Anything with grpc's ``auth_context()`` (a ``grpc.aio.ServicerContext``)."""

    def auth_context(self) -> Mapping[str, Iterable[bytes]]: ...


def peer_spiffe_id(context: AuthContextSource) -> str | None:
    """The SPIFFE ID of the verified client certificate, or None (no cert, none, several)."""
    values = list(context.auth_context().get(_SPIFFE_ID) or ())
    if len(values) != 1:
        return None
    try:
        return values[0].decode("ascii")
    except UnicodeDecodeError:
        return None


def peer_chain_pem(context: AuthContextSource) -> bytes | None:
    """The client's leaf followed by the certificates it sent with it, PEM; None without
    a client certificate."""
    properties = context.auth_context()
    leaf = list(properties.get(_LEAF) or ())
    if len(leaf) != 1:
        return None
    rest = list(properties.get(_CHAIN) or ())
    return b"\n".join((leaf[0], *rest))
