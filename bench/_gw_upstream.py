"""The fast OpenAI-compatible upstream of ``gateway_overhead.py``: a static chat completion.

Preferred: Debian's nginx, one process (``master_process off``), so that killing its PID
kills the server and every connection it holds, as a crashed model server would.
Fallback when nginx is not installed: this module run as a script, a minimal asyncio
HTTP/1.1 server answering the same bytes (slower; the report names which one ran).

Both answer ``POST /v1/chat/completions`` with :data:`COMPLETION` (and any other path
with a small JSON) plus a header ``x-bench-upstream: <name>`` naming the instance.

    python bench/_gw_upstream.py --port P --name a      # the asyncio fallback
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

COMPLETION = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "bench-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "ok"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
    },
    separators=(",", ":"),
)
"""Body of every chat completion (valid for the OpenAI SDK that LiteLLM uses)."""

OTHER = '{"object":"list","data":[{"id":"bench-model","object":"model"}]}'
"""Body of every other path (health checks, ``/v1/models``)."""

STOP_GRACE_S = 5.0


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


def nginx_version() -> str:
    binary = nginx_binary()
    if binary is None:
        return "not installed"
    done = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10, check=False)
    return (done.stderr or done.stdout).strip().removeprefix("nginx version: ")


def _nginx_conf(workdir: Path, port: int, name: str) -> str:
    quoted = COMPLETION.replace("'", "\\'")
    temp = "\n".join(
        f"  {kind}_temp_path {workdir / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""
daemon off;
master_process off;
worker_processes 1;
pid {workdir / "nginx.pid"};
error_log {workdir / "error.log"} warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
{temp}
  keepalive_requests 10000000;
  keepalive_timeout 120s;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    default_type application/json;
    add_header x-bench-upstream {name} always;
    location = /v1/chat/completions {{ return 200 '{quoted}'; }}
    location / {{ return 200 '{OTHER}'; }}
  }}
}}
"""


def wait_port(port: int, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until something accepts TCP connections on 127.0.0.1:``port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process {process.pid} exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


class Upstream:
    """One upstream instance on 127.0.0.1:``port``; owns its process and temp dir.

    ``kind`` is ``nginx`` when nginx is installed (unless ``force_asyncio``), else
    ``asyncio``. ``kill()`` sends SIGKILL to its PID (the failover test); ``stop()`` ends
    it with SIGTERM then SIGKILL and removes the temp dir. Not thread-safe.
    """

    def __init__(self, port: int, name: str, *, force_asyncio: bool = False) -> None:
        self.port = port
        self.name = name
        binary = None if force_asyncio else nginx_binary()
        self.kind = "nginx" if binary else "asyncio"
        self._binary = binary
        self._dir = Path(tempfile.mkdtemp(prefix=f"tiermesh-gw-up-{name}-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("upstream not started")
        return self.process.pid

    def start(self, timeout: float = 10.0) -> None:
        if self._binary is not None:
            conf = self._dir / "nginx.conf"
            conf.write_text(_nginx_conf(self._dir, self.port, self.name))
            command = [self._binary, "-p", str(self._dir), "-e", str(self._dir / "error.log")]
            command += ["-c", str(conf)]
        else:
            command = [sys.executable, __file__, "--port", str(self.port), "--name", self.name]
        log = (self._dir / "stderr.log").open("wb")
        try:
            self.process = subprocess.Popen(
                command, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True
            )
        finally:
            log.close()
        try:
            wait_port(self.port, timeout, self.process)
        except RuntimeError as exc:
            tail = (self._dir / "stderr.log").read_text(errors="replace")[-2000:]
            self.stop()
            raise RuntimeError(f"upstream {self.name}: {exc}\n{tail}") from exc

    def kill(self) -> None:
        """SIGKILL by PID: the server and its connections die at once."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(STOP_GRACE_S)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(STOP_GRACE_S)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Upstream:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


# --------------------------------------------------------------------- asyncio fallback


async def _serve(port: int, name: str) -> None:
    def answer(body: str) -> bytes:
        data = body.encode()
        head = (
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            f"content-length: {len(data)}\r\nx-bench-upstream: {name}\r\n\r\n"
        )
        return head.encode() + data

    completion, other = answer(COMPLETION), answer(OTHER)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    key, _, value = line.partition(b":")
                    if key.strip().lower() == b"content-length":
                        length = int(value)
                if length:
                    await reader.readexactly(length)
                path = head.split(b" ", 2)[1]
                writer.write(completion if path == b"/v1/chat/completions" else other)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, IndexError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=4096)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="a")
    args = parser.parse_args()
    asyncio.run(_serve(args.port, args.name))


if __name__ == "__main__":
    main()
