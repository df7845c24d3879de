"""The ASGI middleware around llama-cpp-python's server app: live load and streamed usage.

`LoadMiddleware` wraps the whole app (pure ASGI, below every other middleware):

- ``GET /tiermesh/load`` is answered here, never by the app, so it does not wait for the
  model: a `LoadReport` as JSON.
- A ``POST`` to ``/v1/chat/completions`` or ``/v1/completions`` is counted in flight until
  its answer is sent. Its body is read whole and replayed to the app byte for byte; when it
  asks for a streamed usage chunk (`wants_usage`), the answer's SSE stream goes through a
  `UsageStream` fed with the request's own `Generation` counts.
- Everything else passes through untouched.

Queue depth is read from the server's model lock through ``model_queue`` (see
`tiermesh.agents.models.serve`): the requests waiting for the model, but never more than
the completions in flight less the one being answered. The bound matters: other requests
take the same lock (``GET /v1/models``, the supervisor's health check, waits behind a long
answer) and are not completions. All methods run on the server's event loop; tokens are
counted by `counting_generated_tokens` into ``rate``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tiermesh.agents.models.generation import Generation, current_generation
from tiermesh.agents.models.load import LOAD_PATH, LoadReport, TokenRate
from tiermesh.agents.models.usage_stream import Usage, UsageStream, wants_usage

__all__ = ["COMPLETION_PATHS", "LoadMiddleware", "ModelQueue"]

COMPLETION_PATHS: Final = frozenset({"/v1/chat/completions", "/v1/completions"})
"""The paths whose requests generate tokens and are counted in flight."""


@dataclass(frozen=True)
class ModelQueue:
    """Who has the model now: ``busy`` when a request holds it, ``waiting`` requests
    (of any path) blocked until it is free."""

    busy: bool
    waiting: int


class LoadMiddleware:
    """See the module docstring. ``model_queue()`` tells who has the model now; ``rate``
    counts the tokens generated."""

    def __init__(
        self, app: ASGIApp, *, rate: TokenRate, model_queue: Callable[[], ModelQueue]
    ) -> None:
        self.app = app
        self.rate = rate
        self._model_queue = model_queue
        self.in_flight = 0

    def report(self) -> LoadReport:
        queue = self._model_queue()
        return LoadReport(
            in_flight=self.in_flight,
            queue_depth=max(0, min(queue.waiting, self.in_flight - queue.busy)),
            tokens_per_s=self.rate.rate(),
            completion_tokens_total=self.rate.total,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
        elif scope["path"] == LOAD_PATH and scope["method"] in {"GET", "HEAD"}:
            await self._send_report(scope, send)
        elif scope["path"] in COMPLETION_PATHS and scope["method"] == "POST":
            await self._completion(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _send_report(self, scope: Scope, send: Send) -> None:
        body = self.report().to_json()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
        )

    async def _completion(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.in_flight += 1
        generation = Generation()
        token = current_generation.set(generation)
        try:
            body, disconnect = await _read_body(receive)
            replay = _replay(body, disconnect, receive)
            if wants_usage(body):
                await self.app(scope, replay, _with_usage(send, generation))
            else:
                await self.app(scope, replay, send)
        finally:
            current_generation.reset(token)
            self.in_flight -= 1


async def _read_body(receive: Receive) -> tuple[bytes, Message | None]:
    """The whole request body, and the disconnect that cut it short (if one did)."""
    parts: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(parts), message
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts), None


def _replay(body: bytes, disconnect: Message | None, receive: Receive) -> Receive:
    """A receive that gives the body (as one message), then what ``receive`` gives."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": False}]
    if disconnect is not None:
        pending.append(disconnect)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed


def _with_usage(send: Send, generation: Generation) -> Send:
    """A send that puts the usage chunk into an SSE answer (other answers pass as they
    are), with the counts of ``generation``."""

    def usage() -> Usage | None:
        if generation.prompt_tokens is None:
            return None
        return Usage(generation.prompt_tokens, generation.completion_tokens)

    stream: UsageStream | None = None

    async def rewriting(message: Message) -> None:
        nonlocal stream
        if message["type"] == "http.response.start":
            headers = dict(message.get("headers", []))
            if headers.get(b"content-type", b"").startswith(b"text/event-stream"):
                stream = UsageStream(usage)
        elif message["type"] == "http.response.body" and stream is not None:
            data = stream.feed(message.get("body", b""))
            if not message.get("more_body", False):
                data += stream.flush()
            message = {**message, "body": data}
        await send(message)

    return rewriting
