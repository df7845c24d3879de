"""What the gateway benchmark's servers share: ``with Server(...) as server`` starts one
and closes it on the way out, and a start that fails closes what it had started."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any, Self


def log_tail(path: Path, chars: int = 3000) -> str:
    """The last ``chars`` characters of a server's log, or ``(no log)``."""
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


class Owned:
    """A server a benchmark owns: subclasses define ``start`` (may raise) and ``close``
    (idempotent, safe after a failed or partial start)."""

    def start(self) -> Any:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
