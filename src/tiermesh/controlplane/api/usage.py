"""Spend counters the policy reads as ``data.usage`` (tenant name -> :class:`TenantUsage`)."""

from __future__ import annotations

from typing import TypeAlias

from pydantic import Field

from tiermesh.controlplane.api._base import Contract

__all__ = ["TenantUsage", "Usage"]


class TenantUsage(Contract):
    """What one tenant has spent in the current month."""

    spent_usd: float = Field(ge=0)
    """Spend so far, in USD. A tenant without an entry has spent nothing."""


Usage: TypeAlias = dict[str, TenantUsage]
"""``data.usage``: tenant name -> spend."""
