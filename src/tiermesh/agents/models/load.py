"""The model server's live load: the ``GET /tiermesh/load`` reply and the token rate.

The reply is a contract between the model server (`tiermesh.agents.models.serve`) and the
node agent (`LlamaServer.read_load`): one JSON object, `LoadReport`, field by field:

- ``in_flight``: completion requests (``/v1/chat/completions``, ``/v1/completions``) the
  server has received and not finished answering, the one being generated included;
- ``queue_depth``: of those, the ones waiting for the model (the server generates one
  answer at a time);
- ``tokens_per_s``: completion tokens generated over the last `TokenRate.window_s`
  seconds, divided by that window;
- ``completion_tokens_total``: completion tokens generated since the server started.

Completion tokens are counted as llama.cpp counts them in ``usage.completion_tokens``.
This module has no dependency beyond the standard library, so both sides import it.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from math import inf
from typing import Final

__all__ = ["LOAD_PATH", "LoadReport", "TokenRate"]

LOAD_PATH: Final = "/tiermesh/load"
"""Where the model server answers with a `LoadReport`."""


@dataclass(frozen=True)
class LoadReport:
    """One ``GET /tiermesh/load`` reply; see the module docstring for the fields."""

    in_flight: int
    queue_depth: int
    tokens_per_s: float
    completion_tokens_total: int

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_json(cls, data: bytes) -> LoadReport:
        """Parse a reply; `ValueError` when it is not a well-formed `LoadReport`."""
        raw = json.loads(data)
        if not isinstance(raw, dict):
            raise ValueError("a load report is a JSON object")
        counts = {}
        for name in ("in_flight", "queue_depth", "completion_tokens_total"):
            value = raw.get(name)
            if type(value) is not int or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, not {value!r}")
            counts[name] = value
        rate = raw.get("tokens_per_s")
        if not isinstance(rate, int | float) or isinstance(rate, bool) or not 0 <= rate < inf:
            raise ValueError(f"tokens_per_s must be a non-negative number, not {rate!r}")
        return cls(tokens_per_s=float(rate), **counts)


class TokenRate:
    """Generated tokens: the total, and the rate over a sliding window of ``window_s``.

    `rate` is the tokens added in the last ``window_s`` seconds divided by ``window_s``
    (so for the first ``window_s`` seconds of a burst it climbs towards the burst's rate,
    and it falls back to 0 ``window_s`` after the last token). Thread-safe: tokens are
    added from the thread that generates them, read from the event loop.
    """

    def __init__(self, window_s: float = 10.0, *, clock: Callable[[], float] = time.monotonic):
        if window_s <= 0:
            raise ValueError(f"window_s must be positive, not {window_s}")
        self.window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._recent: deque[tuple[float, int]] = deque()
        self._in_window = 0
        self._total = 0

    def add(self, tokens: int = 1) -> None:
        with self._lock:
            now = self._clock()
            self._recent.append((now, tokens))
            self._in_window += tokens
            self._total += tokens
            self._expire(now)

    @property
    def total(self) -> int:
        with self._lock:
            return self._total

    def rate(self) -> float:
        """Tokens per second over the last ``window_s`` seconds."""
        with self._lock:
            self._expire(self._clock())
            return self._in_window / self.window_s

    def _expire(self, now: float) -> None:
        horizon = now - self.window_s
        recent = self._recent
        while recent and recent[0][0] <= horizon:
            self._in_window -= recent.popleft()[1]
