"""The ADS server's channel arguments: an override replaces the default of its name.

gRPC core keeps the first of two arguments with the same name; an override appended after
the defaults was silently ignored (the control plane's 500 ms minimum PING interval never
took effect, and every Envoy pinging each second got a ``too_many_pings`` GOAWAY). The
integration proof with real servers and a real Envoy is
``tests/integration/controlplane/test_replica_pause.py``.
"""

from __future__ import annotations

from tiermesh.xds.server import PENDING_CALLS, server_options

_PING = "grpc.http2.min_ping_interval_without_data_ms"


def test_defaults_without_overrides() -> None:
    options = dict(server_options())
    assert options[_PING] == 10_000
    assert options["grpc.so_reuseport"] == 0
    assert options["grpc.server.max_pending_requests"] == PENDING_CALLS


def test_an_override_replaces_the_default_and_names_are_unique() -> None:
    options = server_options([(_PING, 500), ("grpc.max_send_message_length", 1)])
    names = [name for name, _ in options]
    assert len(names) == len(set(names))
    assert dict(options)[_PING] == 500
    assert dict(options)["grpc.max_send_message_length"] == 1
    assert dict(options)["grpc.keepalive_time_ms"] == 30_000
