"""How the agent names a failed Envoy start without running one: Envoy's reason read from
its log."""

from __future__ import annotations

import pytest

from tiermesh.agents.runtime.envoy import envoy_failure_reason

# What Envoy 1.40 writes when its admin port is taken: the reason, then the bare reason again.
BIND_LOG = """\
[2026-11-23 16:35:14.421][13440][critical][main] [source/server/server.cc:449] error \
`cannot bind '127.0.0.1:19902': Address already in use` initializing config \
'goo.gle/debugproto
  /state/envoy/bootstrap.json'
cannot bind '127.0.0.1:19902': Address already in use
"""


@pytest.mark.parametrize(
    ("log", "reason"),
    [
        (BIND_LOG, "cannot bind '127.0.0.1:19902': Address already in use"),
        (
            "[2024-01-01 00:00:00.000][7][critical][main] [source/server/server.cc:131] error "
            "initializing configuration '/b.json': malformed IP address: localhost\n",
            "malformed IP address: localhost",
        ),
        (
            "[2026-11-23 16:35:14.421][1][warning][misc] [source/x.cc:1] something odd\n"
            "[2026-11-23 16:35:14.422][1][critical][main] [source/y.cc:2] cannot open log\n",
            "cannot open log",
        ),
        ("[2026-11-23 16:35:14.421][1][info][main] [source/x.cc:1] starting\n", None),
        ("", None),
    ],
)
def test_envoy_failure_reason_is_envoys_own_words(log: str, reason: str | None) -> None:
    assert envoy_failure_reason(log) == reason
