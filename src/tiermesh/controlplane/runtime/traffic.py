"""Live traffic figures: the answer counts nodes report, kept in memory per minute.

Nodes send :class:`~tiermesh.controlplane.api.AnswerCounts` with their usage reports
(:mod:`tiermesh.controlplane.api.registry`); the node API hands each applied report's
counts to :meth:`LiveTraffic.add`. :meth:`LiveTraffic.document` is the ``traffic`` section
of the status document, JSON (version ``v1``)::

    {"since": "<UTC ISO time the figures start>", "window_minutes": int,
     "total": {"answers": int, "by_tier": {tier: int}, "first_choice": int,
               "fallback": int, "fallback_rate": float | null,
               "fallback_reasons": {reason: int}, "refused": {status: int},
               "refused_total": int},
     "recent": {…same shape, the last ``recent_minutes`` minutes…},
     "nodes": {node_id: {…same shape, since start…}},
     "minutes": [{"minute": "<UTC ISO minute>", …same shape…}, …oldest first]}

``total`` and ``nodes`` count everything reported since this replica started (one
replica's memory: nothing survives a restart, and another replica sees only its own
nodes' reports); ``minutes`` holds the last ``window_minutes`` minutes that had any
report, by the minute a report arrived (a node reports every load interval, so a figure
lags its answers by up to one interval). ``fallback_rate`` is ``fallback / answers`` (null
with no answers).

Not thread-safe: use from the control plane's event loop (the node API's callback and the
admin servers run there).
"""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from tiermesh.controlplane.api import AnswerCounts

__all__ = ["TRAFFIC_VERSION", "Figures", "LiveTraffic"]

TRAFFIC_VERSION: Final = "v1"


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class Figures:
    """Answer counts added up (mutable; one per minute, node and total)."""

    by_tier: dict[str, int] = field(default_factory=dict)
    first_choice: int = 0
    fallback: int = 0
    fallback_reasons: dict[str, int] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)

    def add(self, counts: AnswerCounts | Figures) -> None:
        """Add ``counts`` in."""
        for table, more in (
            (self.by_tier, counts.by_tier),
            (self.fallback_reasons, counts.fallback_reasons),
            (self.refused, counts.refused),
        ):
            for key, value in more.items():
                table[str(key)] = table.get(str(key), 0) + value
        self.first_choice += counts.first_choice
        self.fallback += counts.fallback

    @property
    def answers(self) -> int:
        return sum(self.by_tier.values())

    def document(self) -> dict[str, Any]:
        """JSON-ready (module doc)."""
        answers = self.answers
        return {
            "answers": answers,
            "by_tier": dict(sorted(self.by_tier.items())),
            "first_choice": self.first_choice,
            "fallback": self.fallback,
            "fallback_rate": None if answers == 0 else self.fallback / answers,
            "fallback_reasons": dict(sorted(self.fallback_reasons.items())),
            "refused": dict(sorted(self.refused.items())),
            "refused_total": sum(self.refused.values()),
        }


class LiveTraffic:
    """Recent answer figures of the mesh (module doc). ``window_minutes`` minutes are kept
    (at least 1); ``recent_minutes`` make the ``recent`` figures."""

    def __init__(
        self,
        *,
        window_minutes: int = 60,
        recent_minutes: int = 5,
        clock: Callable[[], dt.datetime] = _utc_now,
    ) -> None:
        if window_minutes < 1 or recent_minutes < 1:
            raise ValueError("window_minutes and recent_minutes must be at least 1")
        self._window = window_minutes
        self._recent = recent_minutes
        self._clock = clock
        self._since = clock()
        self._total = Figures()
        self._nodes: dict[str, Figures] = {}
        self._minutes: OrderedDict[dt.datetime, Figures] = OrderedDict()

    def _minute(self) -> dt.datetime:
        return self._clock().astimezone(dt.UTC).replace(second=0, microsecond=0)

    def add(self, node_id: str, counts: AnswerCounts) -> None:
        """Count one applied report's answers from ``node_id`` in the current minute."""
        minute = self._minute()
        self._total.add(counts)
        self._nodes.setdefault(node_id, Figures()).add(counts)
        bucket = self._minutes.get(minute)
        if bucket is None:
            bucket = self._minutes[minute] = Figures()
        bucket.add(counts)
        self._trim(minute)

    def _trim(self, now: dt.datetime) -> None:
        oldest = now - dt.timedelta(minutes=self._window - 1)
        while self._minutes and next(iter(self._minutes)) < oldest:
            self._minutes.popitem(last=False)

    def document(self) -> dict[str, Any]:
        """The ``traffic`` section (module doc)."""
        now = self._minute()
        self._trim(now)
        recent = Figures()
        start = now - dt.timedelta(minutes=self._recent - 1)
        for minute, figures in self._minutes.items():
            if minute >= start:
                recent.add(figures)
        return {
            "version": TRAFFIC_VERSION,
            "since": self._since.isoformat(),
            "window_minutes": self._window,
            "recent_minutes": self._recent,
            "total": self._total.document(),
            "recent": recent.document(),
            "nodes": {node: f.document() for node, f in sorted(self._nodes.items())},
            "minutes": [
                {"minute": minute.isoformat(), **figures.document()}
                for minute, figures in self._minutes.items()
            ],
        }
