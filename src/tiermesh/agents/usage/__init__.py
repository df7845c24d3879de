"""Usage accounting on the node: Envoy's access logs → tokens and spend per tenant → the
budget file ext_authz reads (an exhausted tenant is routed to its budget fallback).

Every answer a backend gives a completion request is charged: its reported ``usage``, or
an estimate where that cannot be read (:mod:`~tiermesh.agents.usage.server`). Budgets are
per tenant and monthly: spend is kept per calendar month in UTC and a new month starts at
zero (:mod:`~tiermesh.agents.usage.ledger`)."""

from __future__ import annotations

from tiermesh.agents.usage.errors import LedgerWriteFailed, UsageError
from tiermesh.agents.usage.ledger import (
    Prices,
    TenantUsage,
    Usage,
    UsageLedger,
    cost_micro,
    month_of,
    utc_now,
)
from tiermesh.agents.usage.server import (
    AccessLogService,
    estimate,
    start_usage_server,
    usage_from_entry,
)

__all__ = [
    "AccessLogService",
    "LedgerWriteFailed",
    "Prices",
    "TenantUsage",
    "Usage",
    "UsageError",
    "UsageLedger",
    "cost_micro",
    "estimate",
    "month_of",
    "start_usage_server",
    "usage_from_entry",
    "utc_now",
]
