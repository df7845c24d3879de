"""mTLS for the ADS port: who may open an xDS stream, and for which node.

:func:`server_credentials` makes the port demand a client certificate that chains to the
trust bundle (the TLS handshake refuses anyone else: no certificate, a foreign CA, an
expired SVID). :func:`spiffe_node_authorizer` then binds the stream to the SVID: the node id
a DiscoveryRequest claims must be the one in the peer's SPIFFE ID, so one node's SVID
cannot fetch another node's configuration. Both are thread-safe.
"""

from __future__ import annotations

import grpc
from envoy.config.core.v3 import base_pb2

from tiermesh.controlplane.identity.bundle import TrustBundle
from tiermesh.controlplane.identity.peer import peer_spiffe_id
from tiermesh.controlplane.identity.server_cert import ServerCertificate
from tiermesh.controlplane.identity.spiffe_id import parse_node_spiffe_id, validate_trust_domain
from tiermesh.xds import NodeAuthorizer
from tiermesh.xds.stream import ServicerContext

__all__ = ["server_credentials", "spiffe_node_authorizer"]


def server_credentials(server: ServerCertificate, bundle: TrustBundle) -> grpc.ServerCredentials:
    """TLS credentials that present ``server`` and require a client certificate chaining to
    ``bundle``'s roots.

    Certificate and roots are fixed when the credentials are made; a server that must
    follow CA rollovers and renewals without a restart takes
    :meth:`~tiermesh.controlplane.identity.live_credentials.LiveCredentials.server_credentials`
    instead (the control plane does).
    """
    return grpc.ssl_server_credentials(
        [(server.key_pem(), server.chain_pem())],
        root_certificates=bundle.to_pem(),
        require_client_auth=True,
    )


def spiffe_node_authorizer(trust_domain: str) -> NodeAuthorizer:
    """An ``AdsServer`` authorizer: allow a stream only if the peer's verified SPIFFE ID is
    ``spiffe://<trust_domain>/node/<node.id>``.

    The returned reason (→ PERMISSION_DENIED, logged by the ADS server) names what was
    wrong: no client SVID, an ID outside the trust domain or not a node ID, or another node.

    Raises:
        InvalidTrustDomainError: ``trust_domain`` is not a valid name.
    """
    validate_trust_domain(trust_domain)

    def authorize(node: base_pb2.Node, context: ServicerContext) -> str | None:
        spiffe_id = peer_spiffe_id(context)
        if spiffe_id is None:
            return "no verified client SVID on the connection"
        peer_node = parse_node_spiffe_id(spiffe_id, trust_domain)
        if peer_node is None:
            return f"peer {spiffe_id!r} is not a node of trust domain {trust_domain!r}"
        if peer_node != node.id:
            return f"peer {spiffe_id!r} may not claim node id {node.id[:80]!r}"
        return None

    return authorize
