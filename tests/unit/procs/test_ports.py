"""free_port hands out server ports below the kernel's ephemeral range, never the same one
twice in a row of many, and only ports that can be bound."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tiermesh.procs import ports
from tiermesh.procs.ports import LOOPBACK, free_port


def _ephemeral_low() -> int:
    return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])


@pytest.mark.skipif(
    ports._server_ports() is None,
    reason="this machine's ephemeral port range leaves no room below it (or is unreadable)",
)
def test_ports_come_from_below_the_ephemeral_range_and_do_not_repeat() -> None:
    given = [free_port() for _ in range(500)]
    assert len(set(given)) == len(given)
    assert all(20000 <= port < _ephemeral_low() for port in given)


def test_a_port_in_use_is_skipped() -> None:
    with socket.socket() as busy:
        busy.bind((LOOPBACK, free_port()))
        busy.listen()
        taken = busy.getsockname()[1]
        ports._next = taken
        chosen = free_port()
    assert chosen != taken
    with socket.socket() as sock:
        sock.bind((LOOPBACK, chosen))


def test_without_a_known_range_the_kernel_picks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ports, "_server_ports", lambda: None)
    port = free_port()
    with socket.socket() as sock:
        sock.bind((LOOPBACK, port))
