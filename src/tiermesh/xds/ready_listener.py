"""A bootstrap listener that answers readiness and nothing else.

Container health checks need "is Envoy serving its config yet?" without Envoy's admin
interface, which has no authentication (``/quitquitquit``, ``/runtime_modify``, config
dumps) and therefore belongs on a private Unix socket. This listener answers
``GET /ready`` with Envoy's own ``health_check`` filter (not pass-through): 200 while the
server is healthy, 503 once it is draining or ``/healthcheck/fail`` was called on the
admin socket. Every other request gets a 404 from a direct response; nothing is routed
anywhere.

Envoy starts accepting on its listeners, static ones included, only when its
initialisation is done (the first cluster and listener fetch, or their
``initial_fetch_timeout``), so a connection that is answered at all comes from a server
past the point the admin interface's ``/ready`` calls ``LIVE``.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["READY_LISTENER", "READY_PATH", "ready_listener"]

READY_LISTENER: Final = "tiermesh_ready"
READY_PATH: Final = "/ready"
_TYPE = "type.googleapis.com/"


def ready_listener(host: str, port: int) -> dict[str, Any]:
    """The listener on ``host:port`` (Bootstrap JSON shape, for ``static_resources``)."""
    manager = {
        "@type": _TYPE
        + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": READY_LISTENER,
        "http_protocol_options": {"accept_http_10": True},
        "route_config": {
            "name": READY_LISTENER,
            "virtual_hosts": [
                {
                    "name": READY_LISTENER,
                    "domains": ["*"],
                    "routes": [
                        {
                            "match": {"prefix": "/"},
                            "direct_response": {"status": 404},
                        }
                    ],
                }
            ],
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.health_check",
                "typed_config": {
                    "@type": _TYPE + "envoy.extensions.filters.http.health_check.v3.HealthCheck",
                    "pass_through_mode": False,
                    "headers": [
                        {"name": ":path", "string_match": {"exact": READY_PATH}},
                    ],
                },
            },
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": _TYPE + "envoy.extensions.filters.http.router.v3.Router"},
            },
        ],
    }
    return {
        "name": READY_LISTENER,
        "address": {"socket_address": {"address": host, "port_value": port}},
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": manager,
                    }
                ]
            }
        ],
    }
