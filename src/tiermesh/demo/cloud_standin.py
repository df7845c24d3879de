"""A stand-in for the cloud tier: an OpenAI-compatible HTTPS API on loopback.

It stands where a real provider (an external HTTPS model API) would be, so the mesh can be
run and tested without one. It is not a model: a completion's text says which backend
answered, and the ``x-tiermesh-backend`` header on every response names it too.

Like a provider it serves TLS only (a CA and a ``localhost``/``127.0.0.1`` server cert made
on `CloudStandin.start`; the CA is written to `CloudStandin.ca_path` for clients and Envoy
to trust) and requires ``Authorization: Bearer <api key>``, answering 401 with an
OpenAI-shaped error otherwise. It serves ``GET /v1/models`` and ``POST
/v1/chat/completions``, non-streaming (with ``usage``) and streaming (SSE ``data: {...}``
chunks, a usage chunk when ``stream_options.include_usage`` asks for one, then ``data:
[DONE]``). Tests steer it while it runs: `first_byte_delay_s` delays chat answers (for
hedging), `fail` answers chat and model requests with a 5xx, `go_down` closes the port and
cuts open connections, `come_up` reopens the same port.
"""

from __future__ import annotations

import contextlib
import datetime
import hmac
import ipaddress
import json
import secrets
import shutil
import socket
import ssl
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tiermesh.procs.ports import LOOPBACK, free_port

__all__ = ["CloudStandin"]

_CERT_DAYS: Final = 7


class CloudStandin:
    """One stand-in provider on ``https://127.0.0.1:<port>``; see the module docstring.

    Owns a server thread, its port and, unless ``workdir`` is given, a temp dir with the
    cert files (removed on `stop`). The steering attributes (`first_byte_delay_s`,
    `failure_status`) may be set from any thread while it runs; the other methods belong to
    one owner thread.
    """

    def __init__(
        self,
        *,
        name: str = "cloud",
        api_key: str | None = None,
        models: tuple[str, ...] = ("cloud-large",),
        host: str = LOOPBACK,
        port: int = 0,
        workdir: Path | None = None,
    ) -> None:
        self.name = name
        self.api_key = api_key or f"sk-standin-{secrets.token_urlsafe(24)}"
        self.models = models
        self.host = host
        self.first_byte_delay_s = 0.0
        self.failure_status: int | None = None
        self._requests = 0
        self._posts = 0
        self._unauthorized = 0
        self._count_lock = threading.Lock()
        self._port = port
        self._workdir = workdir
        self._tmp: Path | None = None
        self._context: ssl.SSLContext | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- addresses ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        """``https://127.0.0.1:<port>`` (append ``/v1/...``)."""
        return f"https://{self.host}:{self._port}"

    @property
    def ca_path(self) -> Path:
        """PEM of the CA that signed the server cert. Valid after `start`."""
        return self._dir() / "ca.pem"

    @property
    def requests(self) -> int:
        """Requests received so far (refused ones included)."""
        return self._requests

    @property
    def posts(self) -> int:
        """POST requests received so far (refused ones included): the requests that brought
        a body here. Health checks are GETs and never count."""
        return self._posts

    @property
    def unauthorized(self) -> int:
        """Requests refused with 401 so far (no or a wrong API key)."""
        return self._unauthorized

    def _count(self, *, unauthorized: bool = False, post: bool = False) -> None:
        with self._count_lock:
            if post:
                self._posts += 1
            elif unauthorized:
                self._unauthorized += 1
            else:
                self._requests += 1

    @property
    def running(self) -> bool:
        return self._server is not None

    def _dir(self) -> Path:
        directory = self._workdir or self._tmp
        if directory is None:
            raise RuntimeError("the cloud stand-in is not started")
        return directory

    # -- steering ----------------------------------------------------------------------------

    def fail(self, status: int = 503) -> None:
        """Answer every authorised request with ``status`` (a 5xx) until `recover`."""
        self.failure_status = status

    def recover(self) -> None:
        self.failure_status = None

    def go_down(self) -> None:
        """Stop listening and cut every open connection, as a crashed provider would."""
        server, self._server = self._server, None
        if server is None:
            return
        server.down.set()
        server.shutdown()
        server.server_close()
        server.cut_connections()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def come_up(self) -> None:
        """Listen again on the same port with the same cert and key."""
        if self._server is not None:
            return
        assert self._context is not None, "start() first"
        server = _Server((self.host, self._port), _Handler, self, self._context)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    # -- lifetime ----------------------------------------------------------------------------

    def start(self) -> None:
        """Make the cert files, bind the port (a free one if 0) and serve."""
        if self._workdir is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="tiermesh-cloud-"))
        directory = self._dir()
        directory.mkdir(parents=True, exist_ok=True)
        self._context = _make_tls(directory, self.host)
        if not self._port:
            self._port = free_port(self.host)
        self.come_up()

    def stop(self) -> None:
        """Stop serving and remove the temp dir (a given ``workdir`` is kept). Idempotent."""
        self.go_down()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> CloudStandin:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[_Handler],
        owner: CloudStandin,
        context: ssl.SSLContext,
    ) -> None:
        self.owner = owner
        self.context = context
        self.down = threading.Event()
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        super().__init__(address, handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake runs here, in the connection's own thread, so a slow or broken
        # client never stalls the accept loop.
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return
        with self._lock:
            self._conns.add(tls)
        try:
            super().finish_request(tls, client_address)
        finally:
            with self._lock:
                self._conns.discard(tls)
            with contextlib.suppress(OSError):
                tls.shutdown(socket.SHUT_WR)
            tls.close()

    def cut_connections(self) -> None:
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up (or a cut connection) is normal here: stay quiet."""


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if not self._admit():
            return
        if self.path.split("?")[0] == "/v1/models":
            owner = self.server.owner
            data = [
                {"id": m, "object": "model", "created": 0, "owned_by": owner.name}
                for m in owner.models
            ]
            self._json(200, {"object": "list", "data": data})
        else:
            self._error(404, f"no route for GET {self.path}", "invalid_request_error")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        self.server.owner._count(post=True)
        if not self._admit():
            return
        if self.path.split("?")[0] != "/v1/chat/completions":
            self._error(404, f"no route for POST {self.path}", "invalid_request_error")
            return
        try:
            request = json.loads(body or b"{}")
            messages = request["messages"]
        except (ValueError, KeyError, TypeError):
            self._error(400, "body must be JSON with 'messages'", "invalid_request_error")
            return
        if self.server.down.wait(self.server.owner.first_byte_delay_s):
            return  # went down while this request waited: the connection is cut
        if request.get("stream"):
            self._stream(request, messages)
        else:
            self._json(200, _completion(self.server.owner, request, messages))

    # -- pieces ------------------------------------------------------------------------------

    def _admit(self) -> bool:
        """Check the API key, then the failure switch; answers and returns False if refused."""
        owner = self.server.owner
        owner._count()
        given = self.headers.get("authorization", "")
        expected = f"Bearer {owner.api_key}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            owner._count(unauthorized=True)
            self._error(
                401,
                "Incorrect API key provided.",
                "invalid_request_error",
                code="invalid_api_key",
            )
            return False
        status = owner.failure_status
        if status is not None:
            self._error(status, f"{owner.name} is failing on purpose", "server_error")
            return False
        return True

    def _stream(self, request: dict[str, Any], messages: list[dict[str, Any]]) -> None:
        owner = self.server.owner
        full = _completion(owner, request, messages)
        base = {k: full[k] for k in ("id", "created", "model")} | {
            "object": "chat.completion.chunk"
        }
        self.send_response(200)
        self._common_headers("text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        text = full["choices"][0]["message"]["content"]
        deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
        deltas += [{"content": piece} for piece in _pieces(text)]
        for delta in deltas:
            self._event(base | {"choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
        self._event(base | {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if (request.get("stream_options") or {}).get("include_usage"):
            self._event(base | {"choices": [], "usage": full["usage"]})
        self._chunk(b"data: [DONE]\n\n")
        self._chunk(b"")

    def _event(self, payload: dict[str, Any]) -> None:
        self._chunk(b"data: " + json.dumps(payload).encode() + b"\n\n")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _error(self, status: int, message: str, kind: str, *, code: str | None = None) -> None:
        self._json(
            status, {"error": {"message": message, "type": kind, "param": None, "code": code}}
        )

    def _json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self._common_headers("application/json")
        self.send_header("content-length", str(len(data)))
        if status == 401:
            self.send_header("www-authenticate", "Bearer")
        self.end_headers()
        self.wfile.write(data)

    def _common_headers(self, content_type: str) -> None:
        self.send_header("content-type", content_type)
        self.send_header("x-tiermesh-backend", self.server.owner.name)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests and the demo read answers, not access logs."""


def _completion(
    owner: CloudStandin, request: dict[str, Any], messages: list[dict[str, Any]]
) -> dict[str, Any]:
    last = next(
        (str(m.get("content", "")) for m in reversed(messages) if m.get("role") == "user"), ""
    )
    text = f"answered by {owner.name} (cloud stand-in, not a model) to: {last[:80]}"
    prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
    completion_tokens = len(text.split())
    return {
        "id": f"chatcmpl-standin-{secrets.token_hex(8)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": str(request.get("model") or owner.models[0]),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _pieces(text: str) -> list[str]:
    words = text.split(" ")
    return [w if i == 0 else f" {w}" for i, w in enumerate(words)]


def _make_tls(directory: Path, host: str) -> ssl.SSLContext:
    """Write ``ca.pem``, ``server.pem`` and ``server.key`` under ``directory``; return the
    server's TLS context. The server cert names ``localhost`` and ``host``."""
    now = datetime.datetime.now(datetime.UTC)
    not_after = now + datetime.timedelta(days=_CERT_DAYS)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tiermesh cloud stand-in CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    with contextlib.suppress(ValueError):
        names.append(x509.IPAddress(ipaddress.ip_address(host)))
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (directory / "ca.pem").write_bytes(ca.public_bytes(pem))
    (directory / "server.pem").write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    key_path = directory / "server.key"
    key_path.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(directory / "server.pem", key_path)
    context.set_alpn_protocols(["http/1.1"])
    return context


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )
