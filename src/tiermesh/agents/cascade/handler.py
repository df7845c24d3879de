"""The cascade handler: asks a chain's steps in order through Envoy, serves one answer.

Envoy sends a cascade route's requests here with two headers it set itself
(``x-tiermesh-cascade-chain``: the number of steps, ``x-tiermesh-cascade-min-confidence``:
the threshold). For ``i`` in ``0 .. chain-1`` the handler sends the request back to the
node's app listener with ``x-tiermesh-cascade-step: i`` and, when the handler has a secret
(``token``, drawn per start and handed to the node's ext_authz server in-process, never
registered or compiled), ``x-tiermesh-cascade-token: <secret>``; ext_authz recognises the
secret and tells the routes the step (dynamic metadata), and the compiled per-step route
sends the request to step ``i``'s cluster (so mTLS, API keys, breakers apply) without
those two headers. A client's own step or token
header is dropped from the step requests. Every step but the last
is asked with ``logprobs: true`` (and ``top_logprobs`` at least 1) and without streaming;
its answer is served when its status is 2xx and its confidence
(:mod:`.confidence`) is at least the threshold, else dropped. The last step is asked with
the client's own body and its answer (any status) is served as is. An unreachable step
counts as a dropped answer; an unreachable last step is a 502.

The answer carries ``x-tiermesh-cascade-steps`` (steps asked) and, when it was judged,
``x-tiermesh-cascade-confidence``. Log-probabilities the client did not ask for are
removed (set to null). A body that is not a JSON object cannot be judged: only the last
step is asked.

**Streaming** (``stream: true``): the judged steps are asked without streaming (an
answer must be complete to be judged); an accepted one is sent as a short event stream
(one ``chat.completion.chunk`` with the whole message, a usage chunk when
``stream_options.include_usage``, then ``[DONE]``). The last step is asked with
streaming, and its event stream is relayed once complete (the handler buffers it).

A request that carries the handler's own secret (without a secret: any
``x-tiermesh-cascade-step``) reached the handler from itself (no step route matched): it
is refused with 508, so a misconfiguration cannot loop. With a secret, a client that set
the step header (and perhaps a wrong token) matched no step route and reached the
handler like any client: its cascade is walked from the first step. The secret is
compared in constant time and never logged.

Task safety: one handler serves any number of concurrent requests on its event loop;
``start``/``stop`` belong to that loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import os
import socket
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import uvicorn

from tiermesh.agents.cascade.confidence import answer_confidence, strip_logprobs
from tiermesh.agents.identity.errors import SocketPathError
from tiermesh.agents.identity.workload_api import bind_unix_socket_path, release_unix_socket_path

__all__ = [
    "CHAIN_HEADER",
    "CONFIDENCE_HEADER",
    "MAX_STEPS",
    "SOCKET_MODE",
    "STEPS_HEADER",
    "STEP_HEADER",
    "THRESHOLD_HEADER",
    "TOKEN_HEADER",
    "CascadeHandler",
]

SOCKET_MODE: Final = 0o600
"""Mode of the handler's Unix socket: only the node's own user may call it."""
STEP_HEADER = "x-tiermesh-cascade-step"
"""Set on each step request; equals the compiler's ``names.CASCADE_STEP_HEADER``."""
TOKEN_HEADER = "x-tiermesh-cascade-token"  # noqa: S105 - a header name
"""Set on each step request when the handler has a secret; equals the compiler's
``names.CASCADE_TOKEN_HEADER``."""
CHAIN_HEADER = "x-tiermesh-cascade-chain"
"""Set by the cascade route: the chain's length (``names.CASCADE_CHAIN_HEADER``)."""
THRESHOLD_HEADER = "x-tiermesh-cascade-min-confidence"
"""Set by the cascade route: ``min_confidence`` (``names.CASCADE_THRESHOLD_HEADER``)."""
STEPS_HEADER = "x-tiermesh-cascade-steps"
"""Response header: how many steps were asked (``names.CASCADE_STEPS_HEADER``)."""
CONFIDENCE_HEADER = "x-tiermesh-cascade-confidence"
"""Response header: the served answer's confidence, when it was judged."""
MAX_STEPS = 8
"""Longest chain the handler walks; a longer one is refused (502)."""

_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "upgrade",
        "content-length",
        "host",
        CHAIN_HEADER,
        THRESHOLD_HEADER,
        STEP_HEADER,
        TOKEN_HEADER,
    }
)
_MAX_RESPONSE = 64 * 1024 * 1024

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


@dataclass
class _Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def _unix_listener(path: Path) -> socket.socket:
    """A stream socket bound at ``path`` with mode :data:`SOCKET_MODE`, set before it
    listens so that no connection is accepted under a laxer mode."""
    try:
        bind_unix_socket_path(path)
    except SocketPathError as exc:
        raise RuntimeError(str(exc)) from exc
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        os.chmod(path, SOCKET_MODE)
    except OSError:
        sock.close()
        release_unix_socket_path(path)
        raise
    return sock


class CascadeHandler:
    """The HTTP server on ``host:port`` (``port=0``: a free one, see :attr:`port`), or on
    the Unix socket ``socket_path`` when given (mode 0600, created on start and removed on
    stop; only processes of the same Unix user can call it), that walks cascades through
    the Envoy app listener at ``envoy_host:envoy_port``.

    ``step_timeout_s`` bounds each step request (Envoy's route timeouts apply as well).
    ``token`` is the secret the step requests carry (give it to the node's ext_authz
    server, :meth:`~tiermesh.agents.authz.Authorizer.trust_reentry`), or None: then
    every request with a step header is taken for the handler's own.
    """

    def __init__(
        self,
        envoy_port: int,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        envoy_host: str = "127.0.0.1",
        step_timeout_s: float = 120.0,
        token: str | None = None,
        socket_path: Path | None = None,
    ) -> None:
        self.envoy_host = envoy_host
        self.envoy_port = envoy_port
        self.host = host
        self.step_timeout_s = step_timeout_s
        self._port = port
        self._token = token
        self.socket_path = socket_path
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`, the real one when 0 was asked; 0 on a
        Unix socket)."""
        return self._port

    @property
    def token(self) -> str | None:
        """The secret the step requests carry (for the node's ext_authz server only)."""
        return self._token

    async def start(self) -> None:
        """Bind and serve; returns once the server accepts connections.

        Raises:
            RuntimeError: the socket path cannot be used, or the server did not start.
        """
        if self.socket_path is not None:
            sock = _unix_listener(self.socket_path)
            self._port = 0
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self._port))
            self._port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            self._app,
            interface="asgi3",
            log_level="warning",
            lifespan="off",
            access_log=False,
            proxy_headers=False,
            server_header=False,
            date_header=False,
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        deadline = time.monotonic() + 10
        while not self._server.started:
            if self._task.done() or time.monotonic() > deadline:
                await self.stop()
                where = self.socket_path or f"{self.host}:{self._port}"
                raise RuntimeError(f"cascade handler did not start on {where}")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """Stop serving and wait for the server to finish; idempotent."""
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._server = None
        self._task = None
        if self.socket_path is not None:
            release_unix_socket_path(self.socket_path)

    async def __aenter__(self) -> CascadeHandler:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- one request ----------------------------------------------------------------------

    async def _app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        target = scope.get("raw_path") or scope["path"].encode()
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        reply = await self.handle(
            scope["method"], target.decode("latin-1"), headers, b"".join(chunks)
        )
        await send(
            {
                "type": "http.response.start",
                "status": reply.status,
                "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers],
            }
        )
        await send({"type": "http.response.body", "body": reply.body})

    async def handle(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes
    ) -> _Reply:
        """The answer to one request Envoy sent to the handler (see the module docstring)."""
        found = {k.lower(): v for k, v in headers}
        if self._own(found):
            return _text(508, "tiermesh: cascade step request matched no step route\n")
        try:
            chain = int(found[CHAIN_HEADER])
            threshold = float(found[THRESHOLD_HEADER])
        except (KeyError, ValueError):
            return _text(502, "tiermesh: request reached the cascade handler without a chain\n")
        if not 1 <= chain <= MAX_STEPS:
            return _text(502, f"tiermesh: cascade chain of {chain} steps is not walked\n")
        return await self._walk(method, target, headers, body, chain, threshold)

    def _own(self, found: dict[str, str]) -> bool:
        """Is the request (lower-cased headers) one of the handler's own step requests?"""
        if self._token is None:
            return STEP_HEADER in found
        sent = found.get(TOKEN_HEADER)
        return sent is not None and hmac.compare_digest(
            sent.encode("latin-1"), self._token.encode("latin-1")
        )

    async def _walk(  # noqa: PLR0917 - one request's parts
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes,
        chain: int,
        threshold: float,
    ) -> _Reply:
        try:
            request = json.loads(body)
        except ValueError:
            request = None
        judged = isinstance(request, dict)
        forwarded = [(k, v) for k, v in headers if k.lower() not in _HOP]
        first = 0 if judged else chain - 1
        for index in range(first, chain):
            step_headers = [*forwarded, (STEP_HEADER, str(index))]
            if self._token is not None:
                step_headers.append((TOKEN_HEADER, self._token))
            if index == chain - 1:
                reply = await self._ask(method, target, step_headers, body)
                if reply is None:
                    return _text(502, "tiermesh: the cascade's last step was unreachable\n")
                return _served(reply, index + 1, None)
            assert isinstance(request, dict)
            reply = await self._ask(method, target, step_headers, _judged_body(request))
            if reply is None or not 200 <= reply.status < 300:
                continue
            try:
                answer = json.loads(reply.body)
            except ValueError:
                continue
            confidence = answer_confidence(answer)
            if confidence >= threshold:
                return _accepted(request, reply, answer, index + 1, confidence)
        return _text(502, "tiermesh: cascade ended without an answer\n")  # pragma: no cover

    async def _ask(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes
    ) -> _Reply | None:
        """One request to the app listener; None when Envoy cannot be reached or is slow."""
        try:
            return await asyncio.wait_for(
                _http(
                    self.envoy_host,
                    self.envoy_port,
                    method=method,
                    target=target,
                    headers=headers,
                    body=body,
                ),
                self.step_timeout_s,
            )
        except (OSError, TimeoutError, ValueError):
            return None


def _text(status: int, text: str) -> _Reply:
    return _Reply(status, [("content-type", "text/plain")], text.encode())


def _judged_body(request: dict[str, Any]) -> bytes:
    asked = dict(request)
    asked["logprobs"] = True
    top = request.get("top_logprobs")
    asked["top_logprobs"] = top if isinstance(top, int) and top >= 1 else 1
    asked["stream"] = False
    asked.pop("stream_options", None)
    return json.dumps(asked).encode()


def _served(reply: _Reply, steps: int, confidence: float | None) -> _Reply:
    headers = [(k, v) for k, v in reply.headers if k.lower() not in _HOP]
    headers.append((STEPS_HEADER, str(steps)))
    if confidence is not None:
        headers.append((CONFIDENCE_HEADER, f"{confidence:.6f}"))
    return _Reply(reply.status, headers, reply.body)


def _accepted(
    request: dict[str, Any], reply: _Reply, answer: Any, steps: int, confidence: float
) -> _Reply:
    if request.get("logprobs") is not True:
        strip_logprobs(answer)
    if request.get("stream") is True:
        headers = [(k, v) for k, v in reply.headers if k.lower() != "content-type"]
        headers.append(("content-type", "text/event-stream"))
        body = _as_events(answer, request)
        return _served(_Reply(reply.status, headers, body), steps, confidence)
    body = json.dumps(answer).encode()
    return _served(_Reply(reply.status, reply.headers, body), steps, confidence)


def _as_events(answer: Any, request: dict[str, Any]) -> bytes:
    """A complete chat answer as the event stream a streaming request expects."""
    choices = answer.get("choices") if isinstance(answer, dict) else None
    base = {
        key: answer[key]
        for key in ("id", "created", "model", "system_fingerprint")
        if isinstance(answer, dict) and key in answer
    }
    chunk = {
        **base,
        "object": "chat.completion.chunk",
        "choices": [
            {
                "index": choice.get("index", 0),
                "delta": choice.get("message", {}),
                "logprobs": choice.get("logprobs"),
                "finish_reason": choice.get("finish_reason"),
            }
            for choice in (choices if isinstance(choices, list) else [])
            if isinstance(choice, dict)
        ],
    }
    events = [chunk]
    options = request.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") and "usage" in answer:
        events.append(
            {**base, "object": "chat.completion.chunk", "choices": [], "usage": answer["usage"]}
        )
    lines = [f"data: {json.dumps(event)}\n\n" for event in events]
    lines.append("data: [DONE]\n\n")
    return "".join(lines).encode()


async def _http(
    host: str, port: int, *, method: str, target: str, headers: list[tuple[str, str]], body: bytes
) -> _Reply:
    """One HTTP/1.1 exchange on a fresh connection (closed after it)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        head = [f"{method} {target} HTTP/1.1", f"host: {host}:{port}", "connection: close"]
        head += [f"{k}: {v}" for k, v in headers]
        head.append(f"content-length: {len(body)}")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()
        raw = await reader.read(_MAX_RESPONSE)
        while True:
            more = await reader.read(_MAX_RESPONSE)
            if not more:
                break
            raw += more
            if len(raw) > _MAX_RESPONSE:
                raise ValueError("response too large")
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return _parse(raw)


def _parse(raw: bytes) -> _Reply:
    head, separator, rest = raw.partition(b"\r\n\r\n")
    if not separator:
        raise ValueError("incomplete HTTP response")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split(" ", 2)[1])
    headers = [(k.strip().lower(), v.strip()) for k, _, v in (ln.partition(":") for ln in lines)]
    found = dict(headers)
    if "chunked" in found.get("transfer-encoding", "").lower():
        rest = _dechunk(rest)
    elif "content-length" in found:
        rest = rest[: int(found["content-length"])]
    return _Reply(status, headers, rest)


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    position = 0
    while position < len(data):
        line_end = data.index(b"\r\n", position)
        size = int(data[position:line_end].split(b";")[0], 16)
        if size == 0:
            break
        start = line_end + 2
        out += data[start : start + size]
        position = start + size + 2
    return bytes(out)
