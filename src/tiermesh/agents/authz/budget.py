"""Where the authz server learns a tenant's budget state: the :class:`BudgetSource` protocol.

A running agent uses :class:`JsonFileBudgetSource` on the budget file its usage ledger
(:mod:`tiermesh.agents.usage`) writes: this node's accounted spend merged with the
mesh-wide totals the control plane answers its usage reports with. Tests and other
setups may use :class:`StaticBudgetSource` (in memory) or a file an operator writes. A
source that cannot answer raises :class:`BudgetUnavailable`; the server then passes
``known: false`` to the policy, which decides.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from tiermesh.agents.authz.errors import BudgetUnavailable

__all__ = [
    "BudgetSource",
    "BudgetState",
    "JsonFileBudgetSource",
    "StaticBudgetSource",
]


@dataclass(frozen=True, slots=True)
class BudgetState:
    """A tenant's budget as the policy sees it (``input.budget``)."""

    known: bool
    """False when the source has no entry for the tenant or could not answer."""
    exhausted: bool = False
    """The tenant's spend reached its limit."""
    spent_usd: float | None = None
    limit_usd: float | None = None

    @classmethod
    def of(cls, spent_usd: float, limit_usd: float) -> BudgetState:
        """A known state; exhausted once ``spent_usd >= limit_usd``."""
        return cls(True, spent_usd >= limit_usd, spent_usd, limit_usd)

    def to_json(self) -> dict[str, Any]:
        return {
            "known": self.known,
            "exhausted": self.exhausted,
            "spent_usd": self.spent_usd,
            "limit_usd": self.limit_usd,
        }


UNKNOWN = BudgetState(known=False)


@runtime_checkable
class BudgetSource(Protocol):
    """Answers a tenant's budget state. Called once per request on the server's event loop:
    it must be fast (serve from memory; refresh in the background) and must not block."""

    async def state(self, tenant: str) -> BudgetState:
        """The state of ``tenant``; ``known=False`` for a tenant it has no entry for.

        Raises:
            BudgetUnavailable: the source cannot answer right now.
        """
        ...


class StaticBudgetSource:
    """A fixed table, replaceable with :meth:`set`. Task-safe on one event loop."""

    def __init__(self, states: Mapping[str, BudgetState] | None = None) -> None:
        self._states = dict(states or {})

    def set(self, tenant: str, state: BudgetState) -> None:
        self._states[tenant] = state

    async def state(self, tenant: str) -> BudgetState:
        return self._states.get(tenant, UNKNOWN)


class JsonFileBudgetSource:
    """Reads ``{"<tenant>": {"spent_usd": x, "limit_usd": y}, …}`` from ``path``, again
    whenever its modification time or size changes (one ``stat`` per call).

    A missing file means every tenant is unknown; an unreadable or malformed one raises
    :class:`BudgetUnavailable` until it is fixed. Entries without both numbers are unknown.
    """

    def __init__(self, path: str | Path) -> None:
        self._path = Path(path)
        self._stamp: tuple[int, int] | None = None
        self._states: dict[str, BudgetState] = {}

    async def state(self, tenant: str) -> BudgetState:
        self._refresh()
        return self._states.get(tenant, UNKNOWN)

    def _refresh(self) -> None:
        try:
            info = os.stat(self._path)
        except FileNotFoundError:
            self._stamp, self._states = None, {}
            return
        except OSError as exc:
            raise BudgetUnavailable(str(self._path), str(exc)) from exc
        stamp = (info.st_mtime_ns, info.st_size)
        if stamp == self._stamp:
            return
        try:
            document = json.loads(self._path.read_bytes())
        except (OSError, ValueError) as exc:
            raise BudgetUnavailable(str(self._path), str(exc)) from exc
        if not isinstance(document, dict):
            raise BudgetUnavailable(str(self._path), "expected a JSON object of tenants")
        states: dict[str, BudgetState] = {}
        for name, entry in document.items():
            spent = entry.get("spent_usd") if isinstance(entry, dict) else None
            limit = entry.get("limit_usd") if isinstance(entry, dict) else None
            numbers = [v for v in (spent, limit) if isinstance(v, int | float)]
            if len(numbers) == 2 and not any(isinstance(v, bool) for v in numbers):
                states[str(name)] = BudgetState.of(float(numbers[0]), float(numbers[1]))
        self._stamp, self._states = stamp, states
