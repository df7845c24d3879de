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
    ports.server_ports() is None,
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


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def _free_block(size: int) -> int:
    """The first port of ``size`` consecutive ports, all free now, inside the range this
    process may hand out (a parallel test worker's own; servers of other tests in this
    worker may hold ports of it)."""
    own = ports._server_ports()
    assert own is not None
    for first in range(own.start + 100, own.stop - size, size):
        if all(_bindable(port) for port in range(first, first + size)):
            return first
    raise AssertionError(f"no {size} consecutive free ports in {own.start}-{own.stop - 1}")


needs_range = pytest.mark.skipif(
    ports.server_ports() is None,
    reason="this machine's ephemeral port range leaves no room below it (or is unreadable)",
)


@needs_range
def test_a_port_range_from_the_environment_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    first = _free_block(50)
    monkeypatch.setenv(ports.PORT_RANGE_ENV, f"{first}-{first + 49}")
    given = [free_port() for _ in range(40)]
    assert len(set(given)) == len(given)
    assert all(first <= port <= first + 49 for port in given)


@needs_range
@pytest.mark.parametrize(
    ("value", "problem"),
    [("20000", "expected LOW-HIGH"), ("a-b", "expected LOW-HIGH"), ("19000-19999", "within"),
     ("25000-24000", "within")],
)  # fmt: skip
def test_a_bad_port_range_is_named(
    monkeypatch: pytest.MonkeyPatch, value: str, problem: str
) -> None:
    monkeypatch.setenv(ports.PORT_RANGE_ENV, value)
    with pytest.raises(ValueError, match=problem) as raised:
        free_port()
    assert ports.PORT_RANGE_ENV in str(raised.value)


@needs_range
def test_a_reserved_port_is_never_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    full = ports.server_ports()
    assert full is not None
    first = full.start + 200
    monkeypatch.setenv(ports.PORT_RANGE_ENV, f"{first}-{first + 9}")
    monkeypatch.setattr(ports, "_reserved", set())
    ports.reserve_port(first + 3)
    given = {free_port() for _ in range(30)}
    assert first + 3 not in given
    assert given <= set(range(first, first + 10))
