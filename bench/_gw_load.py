"""Load generators of ``gateway_overhead.py``, each in a process of its own.

- :func:`run_wrk`: Debian's ``wrk`` (C, closed loop: each of ``c`` connections sends its
  next request when the previous answer arrived), POST bodies from a Lua script whose
  ``done`` hook prints the counts and latency percentiles as JSON. Bounded by ``-d``
  seconds, and killed by PID if it overruns.
- ``paced`` (this module as a script): one connection, open loop at a fixed rate, for
  latency below saturation; latency counted from the scheduled send time.
- ``record`` (this module as a script): a closed-loop asyncio client that records every request
  (monotonic start/end in ns, status, answering tier) to a JSON file, for the failover
  test. Bounded by ``--count`` requests and ``--seconds``. ``time.monotonic_ns`` is
  CLOCK_MONOTONIC, shared by all processes on the machine, so the orchestrator can place
  its kill on the same clock.

    python bench/_gw_load.py record --port P --concurrency C --seconds S --count N \
        --out F --header k=v ... --body JSON
    python bench/_gw_load.py paced --port P --rate R --seconds S --count N --out F ...
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WRK_TIMEOUT_S = 10


@dataclass(frozen=True, slots=True)
class WrkResult:
    """One wrk run; latencies in microseconds."""

    requests: int
    seconds: float
    errors: int
    """Connect, read, write and timeout errors plus non-2xx/3xx answers."""
    p50_us: float
    p90_us: float
    p99_us: float
    max_us: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def _lua_quote(text: str) -> str:
    return "[==[" + text + "]==]"


def _wrk_script(body: str, headers: dict[str, str]) -> str:
    lines = ['wrk.method = "POST"', f"wrk.body = {_lua_quote(body)}"]
    lines.append('wrk.headers["content-type"] = "application/json"')
    lines += [f"wrk.headers[ {_lua_quote(k)} ] = {_lua_quote(v)}" for k, v in headers.items()]
    lines.append(
        """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"errors":%d,"p50":%d,"p90":%d,"p99":%d,"max":%d}\\n',
    summary.requests, summary.duration,
    e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""
    )
    return "\n".join(lines)


def wrk_version() -> str:
    binary = shutil.which("wrk")
    if binary is None:
        return "not installed"
    done = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10, check=False)
    return (done.stdout + done.stderr).split("Copyright")[0].strip()


def run_wrk(
    url: str,
    *,
    connections: int,
    seconds: float,
    body: str,
    headers: dict[str, str],
    threads: int = 1,
) -> WrkResult:
    """One closed-loop wrk run of ``seconds`` with ``connections`` connections."""
    binary = shutil.which("wrk")
    if binary is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    workdir = Path(tempfile.mkdtemp(prefix="tiermesh-gw-wrk-"))
    try:
        script = workdir / "post.lua"
        script.write_text(_wrk_script(body, headers))
        command = [
            binary,
            f"-t{min(threads, connections)}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            f"--timeout={WRK_TIMEOUT_S}s",
            "-s",
            str(script),
            url,
        ]
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            output, _ = process.communicate(timeout=seconds + WRK_TIMEOUT_S + 20)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.communicate(timeout=10)
            raise RuntimeError(f"wrk overran {seconds}s: killed") from None
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    for line in output.splitlines():
        if line.startswith("WRK_JSON "):
            data = json.loads(line.removeprefix("WRK_JSON "))
            return WrkResult(
                requests=int(data["requests"]),
                seconds=data["duration_us"] / 1e6,
                errors=int(data["errors"]),
                p50_us=float(data["p50"]),
                p90_us=float(data["p90"]),
                p99_us=float(data["p99"]),
                max_us=float(data["max"]),
            )
    raise RuntimeError(f"wrk printed no result:\n{output[-2000:]}")


@dataclass(frozen=True, slots=True)
class PacedResult:
    """One paced run; latencies in microseconds."""

    samples: int
    errors: int
    p50_us: float
    p99_us: float
    max_us: float


def run_paced(
    port: int,
    *,
    rate: float,
    seconds: float,
    count: int,
    body: str,
    headers: dict[str, str],
    realtime: bool = False,
) -> PacedResult:
    """``paced`` in a child process (its own GIL), killed by PID if it overruns; with
    ``realtime`` the client runs SCHED_FIFO (needs root)."""
    workdir = Path(tempfile.mkdtemp(prefix="tiermesh-gw-paced-"))
    try:
        out = workdir / "paced.json"
        command = [sys.executable, __file__, "paced", "--port", str(port), "--rate", str(rate)]
        command += ["--seconds", str(seconds), "--count", str(count), "--body", body]
        command += ["--out", str(out), *(["--realtime"] if realtime else [])]
        for key, value in headers.items():
            command += ["--header", f"{key}={value}"]
        process = subprocess.Popen(command, start_new_session=True)
        try:
            code = process.wait(timeout=seconds + 30)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
            raise RuntimeError(f"paced client overran {seconds}s: killed") from None
        if code != 0:
            raise RuntimeError(f"paced client exited with {code}")
        data = json.loads(out.read_text())
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    latencies = sorted(data["latencies_ns"])
    if not latencies:
        raise RuntimeError("paced client recorded nothing")

    def at(q: float) -> float:
        return float(latencies[min(len(latencies) - 1, int(q * len(latencies)))]) / 1000

    return PacedResult(len(latencies), int(data["errors"]), at(0.5), at(0.99), latencies[-1] / 1000)


# ------------------------------------------------------------------ recording client


async def _worker(
    port: int,
    request: bytes,
    deadline_ns: int,
    budget: list[int],
    records: list[tuple[int, int, int, str]],
) -> None:
    """One connection, one request at a time; reconnects after an error. A record is
    (start_ns, end_ns, status, tier); status 0 is a connection error or timeout."""
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    while budget[0] > 0 and time.monotonic_ns() < deadline_ns:
        budget[0] -= 1
        started = time.monotonic_ns()
        status, tier = 0, ""
        try:
            if writer is None:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", port), WRK_TIMEOUT_S
                )
            assert reader is not None
            assert writer is not None
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WRK_TIMEOUT_S)
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            length, close = 0, False
            for line in lines[1:]:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                if key == "content-length":
                    length = int(value)
                elif key == "x-tiermesh-tier":
                    tier = value.strip()
                elif key == "connection" and value.strip().lower() == "close":
                    close = True
            if length:
                await asyncio.wait_for(reader.readexactly(length), WRK_TIMEOUT_S)
            if close:
                writer.close()
                reader = writer = None
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
            status = 0
            if writer is not None:
                writer.close()
            reader = writer = None
            await asyncio.sleep(0.001)  # a refused connection must not spin
        records.append((started, time.monotonic_ns(), status, tier))
    if writer is not None:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _record(
    port: int, concurrency: int, seconds: float, count: int, headers: dict[str, str], body: str
) -> list[tuple[int, int, int, str]]:
    head = f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
    head += "content-type: application/json\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    data = body.encode()
    request = (head + f"content-length: {len(data)}\r\n\r\n").encode() + data
    deadline = time.monotonic_ns() + int(seconds * 1e9)
    budget = [count]
    records: list[tuple[int, int, int, str]] = []
    await asyncio.gather(
        *(_worker(port, request, deadline, budget, records) for _ in range(concurrency))
    )
    return records


def _read_response(sock: socket.socket, buffer: bytearray) -> int:
    """Read one HTTP/1.1 response with a content-length from ``sock``; returns its status.
    Bytes past it stay in ``buffer``."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response head")
        buffer += chunk
    end = buffer.index(b"\r\n\r\n") + 4
    lines = bytes(buffer[:end]).decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = 0
    for line in lines[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == "content-length":
            length = int(value)
    while len(buffer) < end + length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response body")
        buffer += chunk
    del buffer[: end + length]
    return status


def paced(
    port: int, rate: float, seconds: float, count: int, headers: dict[str, str], body: str
) -> dict[str, Any]:
    """One keep-alive connection, requests sent on a fixed schedule of ``rate`` per second
    (open loop). Latency runs from the scheduled send time to the last byte, so a late
    answer also delays the next sample (no coordinated omission)."""
    head = f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
    head += "content-type: application/json\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    data = body.encode()
    request = (head + f"content-length: {len(data)}\r\n\r\n").encode() + data
    interval = int(1e9 / rate)
    total = min(count, int(rate * seconds))
    latencies: list[int] = []
    errors = 0
    buffer = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=WRK_TIMEOUT_S) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        start = time.perf_counter_ns()
        for index in range(total):
            scheduled = start + index * interval
            wait = scheduled - time.perf_counter_ns()
            if wait > 0:
                time.sleep(wait / 1e9)
            sock.sendall(request)
            if _read_response(sock, buffer) != 200:
                errors += 1
            latencies.append(time.perf_counter_ns() - scheduled)
        elapsed = (time.perf_counter_ns() - start) / 1e9
    return {"latencies_ns": latencies, "errors": errors, "seconds": elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=("record", "paced"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--count", type=int, default=2_000_000)
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--body", default="{}")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--realtime", action="store_true", help="run SCHED_FIFO (root)")
    args = parser.parse_args()
    if args.realtime:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    headers = dict(item.split("=", 1) for item in args.header)
    if args.mode == "paced":
        result: Any = paced(args.port, args.rate, args.seconds, args.count, headers, args.body)
    else:
        result = asyncio.run(
            _record(args.port, args.concurrency, args.seconds, args.count, headers, args.body)
        )
    args.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
