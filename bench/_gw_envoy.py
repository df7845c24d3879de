"""The plain-Envoy baseline of ``gateway_overhead.py``: the same Envoy binary with the
smallest config that proxies to the same upstream.

One static listener on 127.0.0.1 (HTTP connection manager, router filter only, one
virtual host, ``prefix: /`` → one static cluster with upstream A's one host), admin on
a loopback port, ``--concurrency 1`` as tiermesh's agent runs Envoy. No xDS, no health
checks, no retries, no access log, no stats tags beyond Envoy's defaults: what any
Envoy-based gateway starts from.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from _gw_owned import Owned
from tiermesh.procs.envoy import EnvoyProcess
from tiermesh.procs.ports import free_port

ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
HCM = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
    "HttpConnectionManager"
)


def plain_bootstrap(port: int, admin_port: int, upstream_port: int) -> dict[str, Any]:
    """Static bootstrap: 127.0.0.1:``port`` → 127.0.0.1:``upstream_port``."""
    return {
        "admin": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}
        },
        "static_resources": {
            "listeners": [
                {
                    "name": "plain",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": {
                                        "@type": HCM,
                                        "stat_prefix": "plain",
                                        "route_config": {
                                            "virtual_hosts": [
                                                {
                                                    "name": "all",
                                                    "domains": ["*"],
                                                    "routes": [
                                                        {
                                                            "match": {"prefix": "/"},
                                                            "route": {"cluster": "upstream"},
                                                        }
                                                    ],
                                                }
                                            ]
                                        },
                                        "http_filters": [
                                            {
                                                "name": "envoy.filters.http.router",
                                                "typed_config": {"@type": ROUTER},
                                            }
                                        ],
                                    },
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [
                {
                    "name": "upstream",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {
                        "cluster_name": "upstream",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {
                                                    "address": "127.0.0.1",
                                                    "port_value": upstream_port,
                                                }
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                }
            ],
        },
    }


class PlainEnvoy(Owned):
    """A plain Envoy on 127.0.0.1:``port`` in front of ``upstream_port``; owns its process
    and temp dir (``close`` stops it by PID and removes the dir). Not thread-safe."""

    def __init__(self, upstream_port: int) -> None:
        self.port = free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="tiermesh-gw-plain-envoy-"))
        bootstrap = plain_bootstrap(self.port, free_port(), upstream_port)
        self.envoy = EnvoyProcess(bootstrap, workdir=self._dir, name="plain-envoy")

    @property
    def pid(self) -> int:
        if self.envoy.pid is None:
            raise RuntimeError("plain Envoy not started")
        return self.envoy.pid

    def start(self) -> None:
        self.envoy.start()
        self.envoy.wait_ready(timeout=20)

    def close(self) -> None:
        try:
            self.envoy.stop()
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)
