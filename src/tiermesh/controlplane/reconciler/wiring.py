"""The one place the real compiler gets plugged in.

Everything that compiles for real (the CLI's ``check``, ``push`` and ``diff``, and a
control plane starting a :class:`~tiermesh.controlplane.reconciler.Reconciler`) asks
:func:`default_compiler`. Tests inject their own :class:`Compiler` instead.
"""

from __future__ import annotations

from tiermesh.controlplane.bundle import Compiler

__all__ = ["default_compiler"]


def default_compiler() -> Compiler:
    """The compiler + verifier of the control plane.

    To wire: return a callable that builds the mesh model from ``(plan, catalog)``,
    runs ``generators.compile_snapshot(model, plan.node.id)`` and
    ``verify.verify_snapshot`` on the result, letting ``VerificationError`` (which names
    route and cluster) propagate.

    Raises ``NotImplementedError`` until then.
    """
    raise NotImplementedError("compiler not wired")
