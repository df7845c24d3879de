"""The real request-time policy beside a test's Envoy.

Every app listener that forwards runs ext_authz: the verifier refuses one that does not,
and a node without :class:`~tiermesh.controlplane.model.AuthzSettings` compiles to a
listener that answers every request 503. Suites that route real traffic through Envoy
therefore run the real authz server — regorus with ``policies/request``, a durable
decision log, the gRPC server on a background loop
(:class:`~tests.integration.authz.harness.AuthzThread`) — and give their node
:func:`authz_settings` of it.

What the real policy changes for such suites: a request without ``x-tiermesh-tenant`` is
refused 403 by the policy (no default tenant is configured), a missing or unknown
sensitivity label is routed as ``restricted``, and a body with personal data, or one the
server could not read whole, is ``restricted`` whatever its label. The policy here has no
catalog, so it lets an unknown tenant through to the route table (which answers 404).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.integration.authz.harness import AuthzThread
from tiermesh.agents.authz import BudgetState, StaticBudgetSource
from tiermesh.controlplane.model import AuthzSettings

__all__ = ["MAX_BODY", "authz_settings", "running_authz", "start_authz"]

MAX_BODY = 16 * 1024
"""Bytes of a request body Envoy sends with each check (and the server reads)."""


def start_authz(
    spool: Path,
    *,
    budgets: dict[str, BudgetState] | None = None,
    max_body_bytes: int = MAX_BODY,
) -> AuthzThread:
    """A started authz server whose decisions go to ``spool``; the caller closes it.

    ``budgets``: the tenants' budget states (default: every budget unknown, so no budget
    fallback is taken).
    """
    return AuthzThread(spool, StaticBudgetSource(budgets or {}), max_body_bytes)


@contextmanager
def running_authz(
    spool: Path,
    *,
    budgets: dict[str, BudgetState] | None = None,
    max_body_bytes: int = MAX_BODY,
) -> Iterator[AuthzThread]:
    """:func:`start_authz`, closed on exit."""
    authz = start_authz(spool, budgets=budgets, max_body_bytes=max_body_bytes)
    try:
        yield authz
    finally:
        authz.close()


def authz_settings(authz: AuthzThread) -> AuthzSettings:
    """The node settings' ext_authz entry for ``authz``."""
    return AuthzSettings(port=authz.port, max_body_bytes=authz.max_body_bytes)
