"""Steering the running demo's cloud stand-ins over HTTP, to watch the mesh route around
a slow, failing or vanished cloud.

``tiermesh up`` serves this on a loopback port (``cloud_control`` in ``mesh.json``):

- ``GET /standins`` → ``{"<name>": {"up", "first_byte_delay_s", "failure_status",
  "requests", "posts", "unauthorized"}, ...}`` (``posts``: the requests that brought a
  body, which health checks never do)
- ``POST /standins/<name>`` with a JSON object of the fields to change — ``up`` (false:
  stop listening and cut open connections, as a crashed provider; true: listen again),
  ``first_byte_delay_s`` (0 to 600 s: hold every chat answer this long before its first
  byte), ``failure_status`` (500 to 599: answer every request with it; null: answer
  normally) — answers the stand-in's new state. A field it does not know, a value out of
  range or a name that is not a stand-in is refused (400 / 404, the body names it) and
  changes nothing.

Thread safety: requests are served on their own threads and changes are serialized by one
lock, the only place (besides the owner's start and stop) that steers the stand-ins.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tiermesh.demo.cloud_standin import CloudStandin
from tiermesh.procs.ports import LOOPBACK

__all__ = ["StandinControl", "StandinSteer", "standin_state"]

_MAX_BODY: Final = 4096


class StandinSteer(BaseModel):
    """The body of ``POST /standins/<name>``: only the given fields change."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    up: bool | None = None
    first_byte_delay_s: float | None = Field(default=None, ge=0, le=600)
    failure_status: int | None = Field(default=None, ge=500, le=599)


def standin_state(standin: CloudStandin) -> dict[str, Any]:
    """What ``GET /standins`` shows of one stand-in."""
    return {
        "up": standin.running,
        "first_byte_delay_s": standin.first_byte_delay_s,
        "failure_status": standin.failure_status,
        "requests": standin.requests,
        "posts": standin.posts,
        "unauthorized": standin.unauthorized,
    }


def _apply(standin: CloudStandin, steer: StandinSteer) -> None:
    given = steer.model_fields_set
    if "first_byte_delay_s" in given:
        standin.first_byte_delay_s = steer.first_byte_delay_s or 0.0
    if "failure_status" in given:
        standin.failure_status = steer.failure_status
    if steer.up is True:
        standin.come_up()
    elif steer.up is False:
        standin.go_down()


class StandinControl:
    """The control server over ``standins`` (see the module docstring). It owns its thread
    and port; the stand-ins stay the caller's. `start`, then `stop` before the stand-ins
    are stopped."""

    def __init__(self, standins: Mapping[str, CloudStandin], *, port: int = 0) -> None:
        self.standins = dict(standins)
        self.lock = threading.Lock()
        self._server = _Server((LOOPBACK, port), _Handler, self)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self._server.server_address[1]}"

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving. Idempotent."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def state(self) -> dict[str, Any]:
        with self.lock:
            return {name: standin_state(s) for name, s in self.standins.items()}

    def steer(self, name: str, steer: StandinSteer) -> dict[str, Any]:
        """Apply ``steer`` to stand-in ``name``; raises ``KeyError`` for an unknown name."""
        standin = self.standins[name]
        with self.lock:
            _apply(standin, steer)
            return standin_state(standin)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[_Handler],
                 owner: StandinControl) -> None:  # fmt: skip
        self.owner = owner
        super().__init__(address, handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path.rstrip("/") != "/standins":
            self._json(404, {"error": f"no route for GET {self.path}"})
            return
        self._json(200, self.server.owner.state())

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length > _MAX_BODY:
            self.close_connection = True
            self._json(413, {"error": f"body over {_MAX_BODY} bytes"})
            return
        body = self.rfile.read(length)
        prefix, _, name = self.path.partition("/standins/")
        if prefix or not name:
            self._json(404, {"error": f"no route for POST {self.path}"})
            return
        owner = self.server.owner
        if name not in owner.standins:
            known = ", ".join(sorted(owner.standins))
            self._json(404, {"error": f"no cloud stand-in named {name!r} (known: {known})"})
            return
        try:
            steer = StandinSteer.model_validate_json(body or b"{}")
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
                for e in exc.errors(include_url=False)
            )
            self._json(400, {"error": problems})
            return
        self._json(200, owner.steer(name, steer))

    def _json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the demo's output is its own."""
