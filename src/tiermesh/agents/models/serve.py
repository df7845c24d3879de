"""``python -m tiermesh.agents.models.serve <llama_cpp.server args>``: the llama.cpp
OpenAI server, with models loaded `without_extra_buffers` (see `buffers` for why).

Arguments pass through unchanged to ``llama_cpp.server``; exit codes and logs are its own.
"""

from __future__ import annotations

import sys

from tiermesh.agents.models.buffers import without_extra_buffers

__all__ = ["main"]


def main() -> None:
    from llama_cpp.server.__main__ import main as serve  # noqa: PLC0415 - heavy, server only

    sys.argv[0] = "llama_cpp.server"
    with without_extra_buffers():
        serve()  # type: ignore[no-untyped-call]


if __name__ == "__main__":
    main()
