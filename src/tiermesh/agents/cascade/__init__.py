"""The confidence cascade on the node: an HTTP handler Envoy's cascade routes send to.

- :class:`CascadeHandler` — asks the chain's steps through Envoy's per-step routes and
  serves the first confident answer (or the last step's).
- :mod:`.confidence` — the confidence measure (mean top-1 token probability).
"""

from __future__ import annotations

from tiermesh.agents.cascade.confidence import answer_confidence, choice_confidence, strip_logprobs
from tiermesh.agents.cascade.handler import STEPS_HEADER, TOKEN_HEADER, CascadeHandler

__all__ = [
    "STEPS_HEADER",
    "TOKEN_HEADER",
    "CascadeHandler",
    "answer_confidence",
    "choice_confidence",
    "strip_logprobs",
]
