"""Signing keys made at test time, tokens signed with them, and a loopback JWKS server."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

__all__ = ["JwksServer", "SigningKey"]


class SigningKey:
    """An RSA key pair (2048 bits) with a ``kid``; signs RS256 tokens."""

    def __init__(self, kid: str | None = None) -> None:
        self.kid = kid or uuid.uuid4().hex[:12]
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwk(self) -> dict[str, Any]:
        """The public key as a JWK."""
        key: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(self.private.public_key()))
        return {**key, "kid": self.kid, "alg": "RS256", "use": "sig"}

    def token(
        self, claims: dict[str, Any], *, kid: str | None = None, lifetime_s: int = 300
    ) -> str:
        """``claims`` signed with this key; ``iat``/``exp`` added unless given."""
        now = int(time.time())
        body = {"iat": now, "exp": now + lifetime_s, **claims}
        return jwt.encode(body, self.private, "RS256", headers={"kid": kid or self.kid})


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        owner = self.server.owner
        with owner.lock:
            owner.fetches += 1
            body = json.dumps({"keys": [k.jwk() for k in owner.keys]}).encode()
        self.send_response(200 if self.path == owner.path else 404)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: JwksServer

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = super().get_request()
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection, address


class JwksServer:
    """Serves the public keys of :attr:`keys` at ``http://127.0.0.1:<port>/jwks`` (a free
    port); :meth:`publish` swaps them (a rotation). Counts fetches. Stop with :meth:`stop`."""

    path = "/.well-known/jwks.json"

    def __init__(self, *keys: SigningKey) -> None:
        self.lock = threading.Lock()
        self.keys = list(keys)
        self.fetches = 0
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def publish(self, *keys: SigningKey) -> None:
        with self.lock:
            self.keys = list(keys)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
