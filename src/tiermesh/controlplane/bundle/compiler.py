"""The compile step, injected: a plan and its catalog in, a verified Envoy snapshot out."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol, runtime_checkable

from tiermesh.controlplane.api import Catalog, Plan
from tiermesh.xds import Snapshot

__all__ = ["Compiler", "PlanAwareCompiler", "compile_findings"]


class Compiler(Protocol):
    """Compiles one node's plan into a complete snapshot and verifies it.

    Contract: a pure function of its arguments, callable from any thread (checks and the
    reconciler run it on a worker thread, one call at a time per caller). It raises when
    the plan cannot be compiled or the compiled configuration fails verification; an
    exception with a ``findings`` attribute (an iterable of messages, each naming the
    route and cluster at fault) is reported finding by finding, any other exception by
    its message. ``NotImplementedError`` means "no compiler is wired here".
    """

    def __call__(self, plan: Plan, catalog: Catalog, /) -> Snapshot: ...


@runtime_checkable
class PlanAwareCompiler(Compiler, Protocol):
    """A :class:`Compiler` whose output for one node depends on the other nodes' plans
    (whom a node's inbound mTLS listener admits depends on whose plans call it).

    :func:`~tiermesh.controlplane.bundle.evaluate_bundle` evaluates every node's plan
    first, binds them with :meth:`with_plans`, and only then compiles each node."""

    def with_plans(self, plans: Mapping[str, Plan], /) -> Compiler:
        """This compiler for one evaluation pass whose plans (by node id) are ``plans``."""
        ...


def compile_findings(exc: BaseException) -> list[str]:
    """The messages a compile failure carries (see :class:`Compiler`)."""
    findings = getattr(exc, "findings", None)
    if isinstance(findings, Iterable) and not isinstance(findings, str | bytes):
        messages = [str(finding) for finding in findings]
        if messages:
            return messages
    return [f"{type(exc).__name__}: {exc}"]
