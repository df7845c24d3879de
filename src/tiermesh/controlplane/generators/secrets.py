"""SDS: the SPIFFE trust bundle upstream SAN checks validate against, when a node has one,
and the API keys of credentialed backends as generic secrets.

Where the keys come from: the operator stores each key with the control plane, which
puts it in :attr:`~tiermesh.controlplane.model.NodeSettings.credentials` (never in the
catalog, the plan, the decision log or a ``repr``); this generator serves a key only to
nodes whose plan uses a backend naming it. It reaches Envoy over the node's mTLS ADS
stream, and Envoy's admin ``config_dump`` redacts generic secrets.
"""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2

from tiermesh.controlplane.generators.mesh_tls import uses_mesh_tls
from tiermesh.controlplane.model import MeshModel, names

__all__ = ["generate"]


def generate(model: MeshModel, node_id: str) -> list[secret_pb2.Secret]:
    """The trust bundle as a validation-context secret, only when a cluster needs it, then
    one generic secret per credentialed backend (sorted by backend), holding the header
    value ``prefix + key``.

    The node's own SVID is not served here (it comes from its agent's local SDS).
    :meth:`~tiermesh.controlplane.model.NodeModel.build` guarantees every key exists.
    """
    node = model.node(node_id)
    found: list[secret_pb2.Secret] = []
    bundle = node.settings.trust_bundle_pem
    needed = any(
        u.backend.endpoint.tls and u.backend.spiffe_id and not uses_mesh_tls(node, u)
        for u in node.upstreams
    )
    if bundle is not None and needed:
        found.append(
            secret_pb2.Secret(
                name=names.TRUST_BUNDLE_SECRET,
                validation_context=common_pb2.CertificateValidationContext(
                    trusted_ca=base_pb2.DataSource(inline_string=bundle)
                ),
            )
        )
    for upstream in node.upstreams:
        credential = upstream.backend.credential
        if credential is None:
            continue
        key = node.settings.credentials[credential.secret]
        found.append(
            secret_pb2.Secret(
                name=names.credential_secret(upstream.name),
                generic_secret=secret_pb2.GenericSecret(
                    secret=base_pb2.DataSource(inline_string=credential.prefix + key)
                ),
            )
        )
    return found
