"""LoadMiddleware around a plain ASGI app (no model): the body replayed byte for byte,
requests counted in flight, the load endpoint answered without reaching the app."""

from __future__ import annotations

import asyncio
import json

from starlette.types import Message, Receive, Scope, Send

from tiermesh.agents.models.load import TokenRate
from tiermesh.agents.models.middleware import LoadMiddleware, ModelQueue


class EchoApp:
    """Answers with the body it received; holds each answer until ``release`` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.seen: list[Message] = []
        self.calls = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        body = b""
        while True:
            message = await receive()
            self.seen.append(message)
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})


def _scope(method: str, path: str) -> Scope:
    return {"type": "http", "method": method, "path": path, "headers": []}


async def _call(app: LoadMiddleware, scope: Scope, parts: list[bytes]) -> list[Message]:
    incoming: list[Message] = [
        {"type": "http.request", "body": part, "more_body": i < len(parts) - 1}
        for i, part in enumerate(parts)
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        if incoming:
            return incoming.pop(0)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


async def test_body_in_parts_reaches_the_app_whole_and_unchanged() -> None:
    echo = EchoApp()
    echo.release.set()
    app = LoadMiddleware(echo, rate=TokenRate(), model_queue=lambda: ModelQueue(False, 0))
    body = json.dumps({"prompt": "é\u2028 \x00", "stream": True, "pad": "x" * 70_000}).encode()
    parts = [body[i : i + 1000] for i in range(0, len(body), 1000)]
    sent = await _call(app, _scope("POST", "/v1/completions"), parts)
    assert sent[-1]["body"] == body
    assert [m.get("body") for m in echo.seen] == [body]


async def test_in_flight_counts_completions_until_answered() -> None:
    echo = EchoApp()
    app = LoadMiddleware(echo, rate=TokenRate(), model_queue=lambda: ModelQueue(True, 5))
    calls = [
        asyncio.create_task(_call(app, _scope("POST", "/v1/chat/completions"), [b"{}"]))
        for _ in range(3)
    ]
    other = asyncio.create_task(_call(app, _scope("POST", "/v1/embeddings"), [b"{}"]))
    for _ in range(100):
        if echo.calls == 4:
            break
        await asyncio.sleep(0.01)
    assert app.in_flight == 3
    report = app.report()
    assert (report.in_flight, report.queue_depth) == (3, 2)  # 5 waiting, bounded by 3 - 1
    echo.release.set()
    await asyncio.gather(*calls, other)
    assert app.in_flight == 0


async def test_load_endpoint_does_not_reach_the_app() -> None:
    echo = EchoApp()
    rate = TokenRate()
    rate.add(20)
    app = LoadMiddleware(echo, rate=rate, model_queue=lambda: ModelQueue(False, 0))
    sent = await _call(app, _scope("GET", "/tiermesh/load"), [b""])
    assert echo.calls == 0
    assert sent[0]["status"] == 200
    assert json.loads(sent[1]["body"]) == {
        "in_flight": 0,
        "queue_depth": 0,
        "tokens_per_s": 2.0,
        "completion_tokens_total": 20,
    }
