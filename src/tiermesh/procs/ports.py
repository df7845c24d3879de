"""Free loopback ports."""

from __future__ import annotations

import os
import random
import socket
import threading
from pathlib import Path
from typing import Final

__all__ = ["LOOPBACK", "PORT_RANGE_ENV", "free_port", "reserve_port", "server_ports"]

LOOPBACK = "127.0.0.1"

_EPHEMERAL_RANGE: Final = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST: Final = 20000
"""Server ports are handed out from here up to just below the ephemeral range (clear of
well-known services and of ``tiermesh up``'s default 10000)."""
_ATTEMPTS: Final = 200
PORT_RANGE_ENV: Final = "TIERMESH_PORT_RANGE"
"""``LOW-HIGH`` (inclusive): hand out server ports only from there (within the range
below the ephemeral one). Processes that pick ports at the same time, e.g. parallel test
workers, each get a range of their own and never meet; child processes inherit it."""
_lock = threading.Lock()
_next: int | None = None
_reserved: set[int] = set()


def server_ports() -> range | None:
    """Ports below the kernel's ephemeral range, or None when it cannot be read or leaves
    too little room. Outgoing connections take their local port from the ephemeral range,
    so a port from here cannot be taken by one between being picked and being bound."""
    try:
        low = int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return range(_LOWEST, low) if low - _LOWEST >= 1000 else None


def _server_ports() -> range | None:
    """:func:`server_ports`, narrowed to :data:`PORT_RANGE_ENV` where it is set."""
    ports = server_ports()
    wanted = os.environ.get(PORT_RANGE_ENV)
    if ports is None or not wanted:
        return ports
    try:
        first, last = (int(part) for part in wanted.split("-"))
    except ValueError:
        raise ValueError(
            f"{PORT_RANGE_ENV}={wanted!r}: expected LOW-HIGH, e.g. 20000-25999"
        ) from None
    if not ports.start <= first <= last < ports.stop:
        raise ValueError(
            f"{PORT_RANGE_ENV}={wanted!r}: must lie within {ports.start}-{ports.stop - 1}"
            " (below the kernel's ephemeral ports)"
        )
    return range(first, last + 1)


def reserve_port(port: int) -> None:
    """Never hand out ``port`` from this process: it is promised to a server that binds it
    later (e.g. ``tiermesh up``'s app listener, bound by Envoy once the mesh is up)."""
    with _lock:
        _reserved.add(port)


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port that was free on ``host`` a moment ago.

    The port is not reserved: a caller binds it soon after, and a test that races another
    process for it fails loudly at bind time rather than silently using someone else's
    server. Ports come from below the ephemeral range (:func:`_server_ports`, narrowed by
    :data:`PORT_RANGE_ENV`), walked from a random start so one process never hands out a
    port twice in a row of thousands and two processes rarely meet, skipping ports
    :func:`reserve_port` promised; where that range is unknown, the kernel picks one.

    Raises:
        ValueError: :data:`PORT_RANGE_ENV` is set but malformed or out of range.
    """
    global _next  # noqa: PLW0603 - the walk is per process
    ports = _server_ports()
    if ports is not None:
        with _lock:
            if _next is None or _next not in ports:
                _next = random.randrange(ports.start, ports.stop)  # noqa: S311 - not secret
            for _ in range(_ATTEMPTS):
                port, _next = _next, ports.start + (_next + 1 - ports.start) % len(ports)
                if port not in _reserved and _bindable(host, port):
                    return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        chosen: int = sock.getsockname()[1]
        return chosen
