"""Keeping the served state out of full garbage collections.

A control plane serving thousands of nodes holds a large, long-lived heap: every node's
plan, the shared snapshots, every ADS stream's state. CPython's full (generation 2)
collection walks all of it, and a push allocates enough (plans, findings, the fan-out's
per-stream objects) to trigger one or more: measured at 5 000 nodes, full collections
paused the push for seconds (``bench/results/fleet_scale.md``).

:class:`FrozenHeap` holds automatic collections off while a reconcile runs
(:meth:`~FrozenHeap.hold`: what it allocates and drops is acyclic and freed by reference
counting; what it keeps is the new served state) and then moves what is alive into the
permanent generation (:func:`gc.freeze`), so that later collections walk only what was
allocated since. Freezing alone was not enough: with the heap frozen, one 5 000-node
reconcile still ran three full collections of 0.5-1.4 s each (CPython waits for a
quarter as many survivors as the unfrozen heap holds, which a reconcile's allocations
reach quickly). Frozen objects are still freed by reference counting when they are
dropped (the replaced plans and snapshots are: they hold no reference cycles); only
reference cycles among frozen objects wait: every ``thaw_every`` settles the heap is
unfrozen, and the next collection that runs on its own is a full one again.

Process-wide: :func:`gc.freeze` concerns the whole interpreter. One control plane per
process turns it on (``Reconciler(freeze_heap=True)``); tests and tools leave it off.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from typing import Final

__all__ = ["DEFAULT_THAW_EVERY", "FrozenHeap"]

DEFAULT_THAW_EVERY: Final = 64
"""Settles between two thaws of the frozen heap."""


class FrozenHeap:
    """Freezes the heap after each successful reconcile (see the module doc).

    Not thread-safe: call from the reconciler's event loop only.
    """

    def __init__(self, *, thaw_every: int = DEFAULT_THAW_EVERY) -> None:
        if thaw_every < 1:
            raise ValueError(f"thaw_every must be >= 1, got {thaw_every}")
        self._thaw_every = thaw_every
        self._settles = 0
        self.thaws = 0
        """Times the heap was unfrozen (statistics)."""

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """No automatic collection inside (process-wide); the previous state after."""
        enabled = gc.isenabled()
        gc.disable()
        try:
            yield
        finally:
            if enabled:
                gc.enable()

    def settle(self) -> None:
        """Freeze what is alive now; every ``thaw_every``-th call unfreezes instead."""
        self._settles += 1
        if self._settles % self._thaw_every == 0:
            gc.unfreeze()
            self.thaws += 1
            return
        gc.freeze()

    def release(self) -> None:
        """Unfreeze the heap (the reconciler stops); later collections walk all of it."""
        gc.unfreeze()
