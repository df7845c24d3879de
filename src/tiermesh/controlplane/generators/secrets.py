"""SDS: the SPIFFE trust bundle upstream SAN checks validate against, when a node has one."""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2

from tiermesh.controlplane.model import MeshModel, names

__all__ = ["generate"]


def generate(model: MeshModel, node_id: str) -> list[secret_pb2.Secret]:
    """The trust bundle as a validation-context secret, only when a cluster needs it.

    Certificates and cloud API credentials are not served yet (the node's own SVID
    comes from its agent's local SDS).
    """
    node = model.node(node_id)
    bundle = node.settings.trust_bundle_pem
    needed = any(u.backend.endpoint.tls and u.backend.spiffe_id for u in node.upstreams)
    if bundle is None or not needed:
        return []
    return [
        secret_pb2.Secret(
            name=names.TRUST_BUNDLE_SECRET,
            validation_context=common_pb2.CertificateValidationContext(
                trusted_ca=base_pb2.DataSource(inline_string=bundle)
            ),
        )
    ]
