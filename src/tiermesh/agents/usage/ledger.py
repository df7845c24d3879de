"""Per-tenant token and spend totals, and the budget file ext_authz reads.

:class:`Prices` maps a backend to its catalog price and a tenant to its monthly budget.
:class:`UsageLedger` adds each answered request's tokens and cost to its tenant and
rewrites the budget file (``{"<tenant>": {"spent_usd": x, "limit_usd": y}, …}``, the
format :class:`~tiermesh.agents.authz.JsonFileBudgetSource` reads) atomically: a temporary
file in the same directory, then ``os.replace``, so a reader sees the old or the new file,
never a partial one. ext_authz therefore marks a tenant exhausted from the first request
after the one that brought ``spent_usd`` to ``limit_usd`` or above.

Spend is kept in integer micro-dollars (no float drift over many small requests). On
construction the ledger takes the ``spent_usd`` already in the file, so totals survive an
agent restart; entries of tenants the catalog does not know are kept as they are. Monthly
reset is not done here (an operator or the control plane rewrites the file).

Reporting to the control plane (not implemented yet): the store's ``add_usage(tenant,
tokens=, cost_micro=)`` is the sink. The agent would send the deltas this ledger returns
from :meth:`UsageLedger.record` over the node API session (mTLS, its SVID) in batches,
and the control plane would call ``add_usage`` per tenant, so that the reconciler's
``data.usage`` (and so compile-time routes) follow the same counts; the budget file would
then be refreshed from the control plane's totals instead of only this node's.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tiermesh.agents.usage.errors import LedgerWriteFailed
from tiermesh.controlplane.api import Catalog

__all__ = ["Prices", "TenantUsage", "Usage", "UsageLedger", "cost_micro"]


@dataclass(frozen=True, slots=True)
class Usage:
    """One answered request, as the access log reports it."""

    tenant: str
    backend: str | None
    """The answering backend (endpoint metadata); None when Envoy did not name one."""
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class TenantUsage:
    """A tenant's totals since the ledger (or its file) started."""

    tokens: int = 0
    cost_micro: int = 0

    @property
    def spent_usd(self) -> float:
        return self.cost_micro / 1_000_000


def cost_micro(prompt_tokens: int, completion_tokens: int, price: tuple[float, float]) -> int:
    """Micro-dollars for the tokens at ``price`` = (input, output) USD per 1000 tokens,
    rounded to the nearest micro-dollar."""
    per_input, per_output = price
    return round(prompt_tokens * per_input * 1000 + completion_tokens * per_output * 1000)


@dataclass(frozen=True, slots=True)
class Prices:
    """Backend prices (USD per 1000 input/output tokens) and tenants' monthly budgets."""

    backends: dict[str, tuple[float, float]]
    budgets: dict[str, float]

    @classmethod
    def from_catalog(cls, catalog: Catalog) -> Prices:
        return cls(
            backends={
                b.name: (float(b.cost_per_1k_tokens.input), float(b.cost_per_1k_tokens.output))
                for b in catalog.backends
            },
            budgets={t.name: float(t.monthly_budget_usd) for t in catalog.tenants},
        )

    def cost(self, usage: Usage) -> int:
        """Micro-dollars of ``usage``; 0 for a backend the catalog does not price."""
        price = self.backends.get(usage.backend or "")
        if price is None:
            return 0
        return cost_micro(usage.prompt_tokens, usage.completion_tokens, price)


class UsageLedger:
    """Totals per tenant and the budget file (see the module doc).

    Not thread-safe: use it from one thread or one event loop. :meth:`record` does a small
    synchronous file write.
    """

    def __init__(self, budget_file: str | Path, prices: Prices) -> None:
        self._path = Path(budget_file)
        self._prices = prices
        self._totals: dict[str, TenantUsage] = {}
        self._foreign: dict[str, object] = {}
        self._load()

    @property
    def path(self) -> Path:
        return self._path

    def totals(self, tenant: str) -> TenantUsage:
        """The tenant's totals (zero for a tenant never seen)."""
        return self._totals.get(tenant, TenantUsage())

    def record(self, entries: Iterable[Usage]) -> dict[str, TenantUsage]:
        """Add ``entries`` and rewrite the budget file once. Returns the deltas per tenant
        (what a control-plane report would carry).

        Raises:
            LedgerWriteFailed: the file could not be written; the totals include the
                entries anyway and the next successful write carries them.
        """
        deltas: dict[str, TenantUsage] = {}
        for usage in entries:
            tokens = usage.prompt_tokens + usage.completion_tokens
            cost = self._prices.cost(usage)
            for table in (self._totals, deltas):
                before = table.get(usage.tenant, TenantUsage())
                table[usage.tenant] = TenantUsage(before.tokens + tokens, before.cost_micro + cost)
        if deltas:
            self._write()
        return deltas

    def _load(self) -> None:
        try:
            document = json.loads(self._path.read_bytes())
        except FileNotFoundError:
            return
        except (OSError, ValueError):
            return  # rewritten whole on the first record
        if not isinstance(document, dict):
            return
        for name, entry in document.items():
            spent = entry.get("spent_usd") if isinstance(entry, dict) else None
            if name in self._prices.budgets and isinstance(spent, int | float):
                self._totals[name] = TenantUsage(0, round(float(spent) * 1_000_000))
            elif name not in self._prices.budgets:
                self._foreign[name] = entry

    def _document(self) -> dict[str, object]:
        document: dict[str, object] = dict(self._foreign)
        for name, limit in sorted(self._prices.budgets.items()):
            spent = self.totals(name).spent_usd
            document[name] = {"spent_usd": spent, "limit_usd": limit}
        return document

    def _write(self) -> None:
        data = json.dumps(self._document(), sort_keys=True).encode()
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(prefix=".budget-", dir=self._path.parent)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temporary, self._path)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise LedgerWriteFailed(str(self._path), str(exc)) from exc
