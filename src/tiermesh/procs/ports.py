"""Free loopback ports."""

from __future__ import annotations

import random
import socket
import threading
from pathlib import Path
from typing import Final

__all__ = ["LOOPBACK", "free_port"]

LOOPBACK = "127.0.0.1"

_EPHEMERAL_RANGE: Final = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST: Final = 20000
"""Server ports are handed out from here up to just below the ephemeral range (clear of
well-known services and of ``tiermesh up``'s default 10000)."""
_ATTEMPTS: Final = 200
_lock = threading.Lock()
_next: int | None = None


def _server_ports() -> range | None:
    """Ports below the kernel's ephemeral range, or None when it cannot be read or leaves
    too little room. Outgoing connections take their local port from the ephemeral range,
    so a port from here cannot be taken by one between being picked and being bound."""
    try:
        low = int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return range(_LOWEST, low) if low - _LOWEST >= 1000 else None


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
    server. Ports come from below the ephemeral range (:func:`_server_ports`), walked from
    a random start so one process never hands out a port twice in a row of thousands and
    two processes rarely meet; where that range is unknown, the kernel picks one.
    """
    global _next  # noqa: PLW0603 - the walk is per process
    ports = _server_ports()
    if ports is not None:
        with _lock:
            if _next is None or _next not in ports:
                _next = random.randrange(ports.start, ports.stop)  # noqa: S311 - not secret
            for _ in range(_ATTEMPTS):
                port, _next = _next, ports.start + (_next + 1 - ports.start) % len(ports)
                if _bindable(host, port):
                    return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        chosen: int = sock.getsockname()[1]
        return chosen
