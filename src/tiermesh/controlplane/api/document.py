"""The data document the routing policy is loaded with."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tiermesh.controlplane.api.catalog import Catalog
from tiermesh.controlplane.api.usage import TenantUsage

__all__ = ["policy_data"]


def policy_data(catalog: Catalog, usage: Mapping[str, TenantUsage] | None = None) -> dict[str, Any]:
    """``{"catalog": ..., "usage": ...}`` as JSON values, ready for ``PolicyEngine.load``.

    The policy reads ``data.catalog`` and ``data.usage[tenant].spent_usd``;
    tenants without usage have spent nothing.
    """
    return {
        "catalog": catalog.model_dump(mode="json"),
        "usage": {name: entry.model_dump(mode="json") for name, entry in (usage or {}).items()},
    }
