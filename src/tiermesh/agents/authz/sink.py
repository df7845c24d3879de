"""Where every request-time decision goes before its request is answered.

:class:`DecisionSink` is one awaitable ``record``; it returns only once the decision is
durable (or raises). :class:`DecisionLogSink` is the real one, on the node's
:class:`~tiermesh.agents.decisionlog.DecisionLog` (masked, hash-chained, signed, fsynced);
:class:`MemorySink` keeps entries in a list for tests and benchmarks.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from tiermesh.agents.decisionlog import DecisionEntry, DecisionLog

__all__ = ["DecisionLogSink", "DecisionSink", "MemorySink"]


@runtime_checkable
class DecisionSink(Protocol):
    """Takes one decision; returns once it is durable. Any exception means it is not, and
    the caller must not answer the request it decided. Called on the server's event loop."""

    async def record(self, entry: DecisionEntry) -> None: ...


class DecisionLogSink:
    """Appends to a started :class:`DecisionLog` (bound to its event loop; the log's
    masking runs on every input). Does not own the log: starting and closing it is the
    caller's job."""

    def __init__(self, log: DecisionLog) -> None:
        self._log = log

    @property
    def log(self) -> DecisionLog:
        return self._log

    async def record(self, entry: DecisionEntry) -> None:
        await self._log.append(entry)


class MemorySink:
    """Keeps every entry in :attr:`entries`, in order. Not durable: tests and benchmarks."""

    def __init__(self) -> None:
        self.entries: list[DecisionEntry] = []

    async def record(self, entry: DecisionEntry) -> None:
        self.entries.append(entry)
