"""TEST-ONLY stand-in for an OPA server; never use it outside tests.

No OPA server binary can be installed on the project's machines, so this
serves the subset of OPA's REST API v1 that ``opa-python-client`` uses, on
127.0.0.1 over real HTTP/1.1, and evaluates with the real OPA Go engine from
``opa_bindings``. What it implements:

- ``GET /health``; ``GET /v1/policies[/]``
- ``PUT /v1/policies/<id>`` (body: Rego text), ``DELETE /v1/policies/<id>``
- ``PUT /v1/data/<path>`` (body: JSON), ``DELETE /v1/data/<path>``
- ``POST /v1/data/<path>`` (body ``{"input": ...}``), ``GET /v1/data/<path>``

Responses follow OPA's shapes (``{"result": ...}``, ``{}`` when undefined,
``{"code", "message", "errors": [{"code", "message", "location"}]}`` on
failures) closely enough for the client; it is not a faithful OPA server
(no bundles, no auth, no query parameters, no ``/v1/query``; an input of
``null`` counts as no input; error locations have no column).

Every policy or data change rebuilds one OPA engine from everything stored;
evaluations share that engine. Sockets use TCP_NODELAY and each response is
written with a single ``write`` (headers and body together).
"""

from __future__ import annotations

import copy
import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from opa_bindings import OpaEngine, OpaError, OpaUndefinedError  # type: ignore[import-untyped]

__all__ = ["OpaTestServer"]

_LOCATED = re.compile(r"(?P<file>[^\s:][^:\n]*?):(?P<row>\d+): (?P<code>[a-z_]+): (?P<msg>[^\n]*)")


def _opa_errors(message: str) -> list[dict[str, Any]]:
    """OPA REST ``errors`` entries from an OPA library error text."""
    return [
        {
            "code": m["code"],
            "message": m["msg"],
            "location": {"file": m["file"], "row": int(m["row"]), "col": 0},
        }
        for m in _LOCATED.finditer(message)
    ]


class _Store:
    """Policies and data of the fake server, and the engine built from them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.policies: dict[str, str] = {}
        self.data: dict[str, Any] = {}
        self.engine = OpaEngine()

    def rebuild(self, policies: dict[str, str], data: dict[str, Any]) -> None:
        """Replace the state; raises OpaError (and keeps the old state) if OPA rejects it."""
        engine = OpaEngine()
        try:
            for policy_id, source in policies.items():
                engine.add_policy(policy_id, source)
            if data:
                engine.add_data(data)
            engine.eval_query("true")
        except BaseException:
            engine.close()
            raise
        old, self.engine = self.engine, engine
        self.policies, self.data = policies, data
        old.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        return

    # -- plumbing ---------------------------------------------------------

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _reply(self, status: int, body: Any = None) -> None:
        payload = b"" if status == 204 else json.dumps(body if body is not None else {}).encode()
        head = [f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}"]
        if status != 204:
            head += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
        self.log_request(status)
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + payload)
        self.wfile.flush()

    def _route(self) -> tuple[str, str]:
        path = unquote(urlsplit(self.path).path)
        for prefix in ("/v1/policies", "/v1/data"):
            if path == prefix or path.startswith(prefix + "/"):
                return prefix, path[len(prefix) :].strip("/")
        return path, ""

    def _error(self, status: int, code: str, message: str) -> None:
        self._reply(status, {"code": code, "message": message, "errors": _opa_errors(message)})

    # -- verbs ------------------------------------------------------------

    def do_GET(self) -> None:
        prefix, rest = self._route()
        store = self.server.store
        if prefix == "/health":
            self._reply(200, {})
        elif prefix == "/v1/policies" and not rest:
            with store.lock:
                items = [{"id": k, "raw": v} for k, v in store.policies.items()]
            self._reply(200, {"result": items})
        elif prefix == "/v1/data":
            self._evaluate(rest, None)
        else:
            self._error(404, "resource_not_found", f"no route for GET {self.path}")

    def do_POST(self) -> None:
        prefix, rest = self._route()
        raw = self._body()
        if prefix != "/v1/data":
            self._error(404, "resource_not_found", f"no route for POST {self.path}")
            return
        try:
            request = json.loads(raw) if raw else {}
        except ValueError as exc:
            self._error(400, "invalid_parameter", f"body is not JSON: {exc}")
            return
        self._evaluate(rest, request.get("input") if isinstance(request, dict) else None)

    def do_PUT(self) -> None:
        prefix, rest = self._route()
        raw = self._body()
        store = self.server.store
        with store.lock:
            if prefix == "/v1/policies" and rest:
                policies = {**store.policies, rest: raw.decode("utf-8")}
                self._apply(policies, store.data, 200, "invalid_parameter")
            elif prefix == "/v1/data":
                try:
                    value = json.loads(raw)
                except ValueError as exc:
                    self._error(400, "invalid_parameter", f"body is not JSON: {exc}")
                    return
                data = _set_path(copy.deepcopy(store.data), rest, value)
                self._apply(store.policies, data, 204, "invalid_parameter")
            else:
                self._error(404, "resource_not_found", f"no route for PUT {self.path}")

    def do_DELETE(self) -> None:
        prefix, rest = self._route()
        store = self.server.store
        with store.lock:
            if prefix == "/v1/policies" and rest in store.policies:
                policies = {k: v for k, v in store.policies.items() if k != rest}
                self._apply(policies, store.data, 200, "invalid_parameter")
            elif prefix == "/v1/data" and rest and _has_path(store.data, rest):
                data = _del_path(copy.deepcopy(store.data), rest)
                self._apply(store.policies, data, 204, "invalid_parameter")
            else:
                self._error(404, "resource_not_found", f"storage_not_found_error: {rest}")

    def _apply(self, policies: dict[str, str], data: dict[str, Any], ok: int, code: str) -> None:
        try:
            self.server.store.rebuild(policies, data)
        except OpaError as exc:
            self._reply(
                400,
                {
                    "code": code,
                    "message": "error(s) occurred while compiling module(s)",
                    "errors": _opa_errors(exc.message)
                    or [{"code": exc.code, "message": exc.message}],
                },
            )
            return
        self._reply(ok, {})

    def _evaluate(self, rest: str, input: Any) -> None:
        with self.server.store.lock:
            engine = self.server.store.engine
        try:
            value = engine.eval_document(rest.replace("/", "."), input)
        except OpaUndefinedError:
            self._reply(200, {})
        except OpaError as exc:
            self._error(500, "internal_error", exc.message)
        else:
            self._reply(200, {"result": value})


def _segments(path: str) -> list[str]:
    return [s for s in path.split("/") if s]


def _set_path(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    parts = _segments(path)
    if not parts:
        return value if isinstance(value, dict) else data
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return data


def _has_path(data: dict[str, Any], path: str) -> bool:
    node: Any = data
    for part in _segments(path):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _del_path(data: dict[str, Any], path: str) -> dict[str, Any]:
    parts = _segments(path)
    node = data
    for part in parts[:-1]:
        node = node[part]
    del node[parts[-1]]
    return data


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    store: _Store


class OpaTestServer:
    """TEST-ONLY OPA REST stand-in on 127.0.0.1 (see the module docstring).

    Use as a context manager: the server thread starts on enter and is shut
    down, joined and its socket closed on exit.
    """

    def __init__(self) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.store = _Store()
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.01},
            name="opa-test-server",
            daemon=True,
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> OpaTestServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        self._server.store.engine.close()
