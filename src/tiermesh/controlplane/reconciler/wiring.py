"""The one place the real compiler gets plugged in.

Everything that compiles for real (the CLI's ``check``, ``push`` and ``diff``, and a
control plane starting a :class:`~tiermesh.controlplane.reconciler.Reconciler`) asks
:func:`default_compiler`. Tests inject their own :class:`Compiler` instead.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from tiermesh.controlplane.api import Catalog, Plan
from tiermesh.controlplane.bundle import Compiler
from tiermesh.controlplane.identity import CaConfig, LocalCertificateAuthority
from tiermesh.controlplane.model import MeshModel, NodeSettings
from tiermesh.controlplane.verify import compile_and_verify
from tiermesh.xds import Snapshot

__all__ = ["DEFAULT_APP_PORT", "default_compiler", "offline_compiler"]

DEFAULT_APP_PORT = 10000
"""The app listener port of a node whose settings are not given."""


def default_compiler(
    settings_for: Callable[[str], NodeSettings] | None = None,
) -> Compiler:
    """The control plane's compiler: plan → mesh model → generators → verifier.

    ``settings_for(node_id)`` supplies what the plan does not hold (the node's app
    listener port, trust bundle); by default every node listens on
    :data:`DEFAULT_APP_PORT`. The returned callable is a pure function, safe from any
    thread; it raises ``VerificationError`` (with findings naming route and cluster) when
    the compiled configuration breaks an invariant, and ``ModelError`` when the plan and
    the settings do not fit together.
    """
    settings = settings_for or (lambda _node_id: NodeSettings(app_port=DEFAULT_APP_PORT))

    def compile_node(plan: Plan, catalog: Catalog, /) -> Snapshot:
        node_id = plan.node.id
        model = MeshModel.build([plan], {node_id: settings(node_id)})
        return compile_and_verify(model, node_id, catalog)

    return compile_node


@functools.cache
def _throwaway_bundle() -> str:
    ca = LocalCertificateAuthority.create(CaConfig(trust_domain="offline-check.invalid"))
    return ca.bundle().to_pem().decode()


def offline_compiler() -> Compiler:
    """The compiler for checks away from a running mesh (``tiermesh policy check|diff``).

    Backends with a SPIFFE ID make the compiler emit an SDS secret holding the mesh's
    trust bundle, which an offline check does not have: a throwaway CA's bundle stands in
    for it. Only the secret's bytes differ from what the control plane will serve, and the
    verifier judges routes, clusters and endpoints, never certificate contents.
    """
    bundle = _throwaway_bundle()
    return default_compiler(
        lambda _node_id: NodeSettings(app_port=DEFAULT_APP_PORT, trust_bundle_pem=bundle)
    )
