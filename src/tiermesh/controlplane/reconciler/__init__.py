"""The reconciler: keeps every node's snapshot equal to what the stored bundle compiles to.

Events (bundle pushes, node registrations) → debounce → one evaluation of the bundle
for every node → all snapshots set, or none (the last good ones keep serving).
:func:`~tiermesh.controlplane.reconciler.wiring.default_compiler` is where the real
compiler is plugged in.
"""

from __future__ import annotations

from tiermesh.controlplane.reconciler.clock import Clock, MonotonicClock
from tiermesh.controlplane.reconciler.reconciler import (
    BUNDLE_PREFIX,
    NODES_PREFIX,
    USAGE_PREFIX,
    HealthAwareCompiler,
    Reconciler,
    SnapshotSink,
)
from tiermesh.controlplane.reconciler.registration import (
    InvalidRegistration,
    Registration,
    node_from_registration,
    read_registration,
    registration_digest,
)
from tiermesh.controlplane.reconciler.results import ReconcileError, ReconcileResult
from tiermesh.controlplane.reconciler.wiring import (
    CompileCache,
    MeshCompiler,
    default_compiler,
    offline_compiler,
)

__all__ = [
    "BUNDLE_PREFIX",
    "NODES_PREFIX",
    "USAGE_PREFIX",
    "Clock",
    "CompileCache",
    "HealthAwareCompiler",
    "InvalidRegistration",
    "MeshCompiler",
    "MonotonicClock",
    "ReconcileError",
    "ReconcileResult",
    "Reconciler",
    "Registration",
    "SnapshotSink",
    "default_compiler",
    "node_from_registration",
    "offline_compiler",
    "read_registration",
    "registration_digest",
]
