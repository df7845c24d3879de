"""``python -m tiermesh.agents.models.serve <llama_cpp.server args>``: the llama.cpp
OpenAI server, with models loaded `without_extra_buffers` (see `buffers` for why), and its
app wrapped in `LoadMiddleware`: ``GET /tiermesh/load`` answers the live load, and a
streamed completion that asks for ``stream_options.include_usage`` gets its usage chunk.

Arguments pass through unchanged to ``llama_cpp.server``; exit codes and logs are its own.

How the server queues: every completion takes the model through ``get_llama_proxy`` in
``llama_cpp.server.app``, which acquires ``llama_outer_lock``, then ``llama_inner_lock``,
then releases the outer one and holds the inner one until the answer is generated. So the
request being answered holds the inner lock, at most one request waits on the inner lock
(holding the outer one), and the rest wait on the outer lock: the requests waiting for the
model are the waiters of both locks (anyio's ``Lock.statistics().tasks_waiting``), and the
model is busy while the inner lock is held.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from tiermesh.agents.models.buffers import without_extra_buffers
from tiermesh.agents.models.generation import counting_generated_tokens
from tiermesh.agents.models.load import TokenRate
from tiermesh.agents.models.middleware import LoadMiddleware, ModelQueue

if TYPE_CHECKING:
    from llama_cpp.server.settings import ModelSettings, ServerSettings, Settings

__all__ = ["main"]


def main() -> None:
    # heavy, server only
    import llama_cpp.server.__main__ as server_main  # noqa: PLC0415
    from llama_cpp.server import app as server_app  # noqa: PLC0415

    def model_queue() -> ModelQueue:
        outer = server_app.llama_outer_lock.statistics()
        inner = server_app.llama_inner_lock.statistics()
        return ModelQueue(busy=inner.locked, waiting=outer.tasks_waiting + inner.tasks_waiting)

    rate = TokenRate()
    create_app = server_app.create_app

    def create_measured_app(
        settings: Settings | None = None,
        server_settings: ServerSettings | None = None,
        model_settings: list[ModelSettings] | None = None,
    ) -> LoadMiddleware:
        app = create_app(settings, server_settings, model_settings)
        return LoadMiddleware(app, rate=rate, model_queue=model_queue)

    sys.argv[0] = "llama_cpp.server"
    server_main.create_app = create_measured_app  # type: ignore[attr-defined]
    try:
        with without_extra_buffers(), counting_generated_tokens(rate.add):
            server_main.main()  # type: ignore[no-untyped-call]
    finally:
        server_main.create_app = create_app  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
