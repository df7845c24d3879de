"""Generators: one pure function per xDS type, from the mesh model to Envoy resources.

:data:`GENERATORS` maps each type URL to its generator (:mod:`.listeners`,
:mod:`.routes`, :mod:`.clusters`, :mod:`.endpoints`, :mod:`.secrets`);
:func:`compile_snapshot` runs them all for one node. The Envoy mapping is documented
in :mod:`.routes` (routing, failover, hedging) and :mod:`.clusters` (backends).
"""

from __future__ import annotations

from tiermesh.controlplane.generators.registry import GENERATORS, Generator, compile_snapshot
from tiermesh.controlplane.generators.routes import refusal_body

__all__ = ["GENERATORS", "Generator", "compile_snapshot", "refusal_body"]
