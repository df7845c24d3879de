"""Envoy's ``envoy.service.auth.v3.Authorization/Check`` on ``grpc.aio``.

Mapping of a :class:`~tiermesh.agents.authz.decide.Verdict` to a ``CheckResponse``:

- allow → ``OK`` with ``OkHttpResponse``: the decision's headers set on the request with
  ``OVERWRITE_IF_EXISTS_OR_ADD`` (effective ``x-tiermesh-sensitivity``, ``x-tiermesh-budget:
  exhausted`` when spent, a default ``x-tiermesh-tenant`` when the policy gives one, and
  ``x-tiermesh-decision-id``), owned headers the decision does not set removed, and
  ``x-tiermesh-decision-id`` added to the response to the client, and the verdict's
  metadata (a cascade step) as the response's ``dynamic_metadata``;
- deny → ``PERMISSION_DENIED`` with a 403 ``DeniedHttpResponse`` and a JSON body naming the
  reason and decision id; a policy failure → the same with 503;
- a decision that could not be recorded → the RPC fails with ``UNAVAILABLE`` (nothing is
  answered; Envoy's ``status_on_error`` applies and ``failure_mode_allow: false`` keeps the
  request from any upstream).

A check whose ``context_extensions`` carry the mesh listener's mark
(:data:`~tiermesh.controlplane.api.MESH_HOP_CONTEXT`, set by the compiled configuration,
never by a client) is a mesh hop, its peer the check's ``attributes.source.principal``
(the verified client certificate's URI SAN), and a probe when they also carry the probe
mark (:data:`~tiermesh.controlplane.api.MESH_PROBE_CONTEXT`); see :mod:`.mesh_hop`.

An optional observer (the node's metrics, :mod:`tiermesh.agents.metrics.authz`) is told
of every check once its verdict is durable, before the answer goes to Envoy.

The ``jwt_authn`` filter's verdict comes from the request's metadata context (namespace
``envoy.filters.http.jwt_authn``, which the compiled ext_authz filter asks Envoy to send);
only Envoy writes it, never the client. The body is read from ``raw_body`` (Envoy's
``pack_as_bytes``) or ``body``; Envoy marks a cut body with
``x-envoy-auth-partial-body: true``. A message larger than
:func:`max_message_bytes` is refused by gRPC itself (``RESOURCE_EXHAUSTED``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Final, Literal

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.type.v3 import http_status_pb2
from google.protobuf import json_format, struct_pb2
from google.rpc import code_pb2, status_pb2

from tiermesh.agents.authz.decide import (
    DECISION_ID_HEADER,
    PARTIAL_BODY_HEADER,
    Authorizer,
    CheckInput,
    Verdict,
)
from tiermesh.agents.authz.errors import DecisionNotRecorded
from tiermesh.controlplane.api import MESH_HOP, MESH_HOP_KEY, MESH_PROBE, MESH_PROBE_KEY
from tiermesh.controlplane.api.tenant_jwt import JWT_METADATA_NAMESPACE

__all__ = [
    "HEADER_ROOM_BYTES",
    "AuthorizationService",
    "CheckObserver",
    "max_message_bytes",
    "start_authz_server",
    "to_check_input",
    "to_check_response",
]

log = logging.getLogger("tiermesh.agents.authz")

HEADER_ROOM_BYTES: Final = 256 * 1024
"""Room for headers and attributes on top of the body in one CheckRequest."""

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


def max_message_bytes(max_body_bytes: int) -> int:
    """Largest CheckRequest the server accepts for bodies of ``max_body_bytes``."""
    return max_body_bytes + HEADER_ROOM_BYTES


def to_check_input(request: external_auth_pb2.CheckRequest) -> CheckInput:
    """The parts of Envoy's request the authorizer uses. Never raises on odd content."""
    http = request.attributes.request.http
    headers = {str(k).lower(): str(v) for k, v in http.headers.items()}
    for entry in http.header_map.headers:
        value = entry.value or entry.raw_value.decode("utf-8", errors="replace")
        headers.setdefault(str(entry.key).lower(), value)
    body = bytes(http.raw_body) if http.raw_body else str(http.body).encode("utf-8", "replace")
    context = request.attributes.context_extensions
    mesh = context.get(MESH_HOP_KEY) == MESH_HOP
    jwt = request.attributes.metadata_context.filter_metadata.get(JWT_METADATA_NAMESPACE)
    return CheckInput(
        method=str(http.method) or "GET",
        path=str(http.path) or "/",
        headers=headers,
        body=body,
        partial=_said_partial(headers.get(PARTIAL_BODY_HEADER, "")),
        hop="mesh" if mesh else "app",
        peer=str(request.attributes.source.principal) if mesh else "",
        probe=mesh and context.get(MESH_PROBE_KEY) == MESH_PROBE,
        jwt_metadata={} if jwt is None else json_format.MessageToDict(jwt),
    )


def _said_partial(value: str) -> bool:
    """Envoy's ``x-envoy-auth-partial-body``, read so a client's own copy of the header
    (joined with Envoy's as ``false,true``) cannot hide a cut body."""
    return "true" in (part.strip().lower() for part in value.split(","))


def _option(name: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=name, value=value), append_action=_OVERWRITE
    )


def _struct(values: dict[str, str]) -> struct_pb2.Struct | None:
    if not values:
        return None
    struct = struct_pb2.Struct()
    struct.update(values)
    return struct


def to_check_response(verdict: Verdict) -> external_auth_pb2.CheckResponse:
    """The ``CheckResponse`` of ``verdict`` (see the module docstring)."""
    decision_id = str(verdict.decision_id)
    if verdict.allowed:
        return external_auth_pb2.CheckResponse(
            status=status_pb2.Status(code=code_pb2.OK),
            ok_response=external_auth_pb2.OkHttpResponse(
                headers=[_option(k, v) for k, v in sorted(verdict.set_headers.items())],
                headers_to_remove=list(verdict.remove_headers),
                response_headers_to_add=[_option(DECISION_ID_HEADER, decision_id)],
            ),
            dynamic_metadata=_struct(verdict.metadata),
        )
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(
            code=code_pb2.UNAUTHENTICATED if verdict.status == 401 else code_pb2.PERMISSION_DENIED
        ),
        denied_response=external_auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=verdict.status),
            headers=[
                _option("content-type", "application/json"),
                _option(DECISION_ID_HEADER, decision_id),
            ],
            body=verdict.denial_body().decode(),
        ),
    )


CheckObserver = Callable[[Verdict | None, float, Literal["app", "mesh"]], None]
"""Told of every check once decided: the verdict (None: it could not be recorded), the
seconds from decoded request to durable verdict, and the hop. Runs on the server's loop
before the answer is sent: it must be quick and must not raise."""


class AuthorizationService(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    """The gRPC servicer; one :class:`Authorizer` decides, ``observer`` (optional) is told
    of each check. Runs on the server's loop."""

    def __init__(self, authorizer: Authorizer, observer: CheckObserver | None = None) -> None:
        self._authorizer = authorizer
        self._observer = observer

    async def Check(  # noqa: N802 - the gRPC method name
        self, request: external_auth_pb2.CheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> external_auth_pb2.CheckResponse:
        check = to_check_input(request)
        started = time.perf_counter()
        try:
            verdict = await self._authorizer.decide(check)
        except DecisionNotRecorded as exc:
            log.error("%s; failing the check", exc)
            self._observe(None, started, check.hop)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "decision could not be recorded")
        self._observe(verdict, started, check.hop)
        return to_check_response(verdict)

    def _observe(
        self, verdict: Verdict | None, started: float, hop: Literal["app", "mesh"]
    ) -> None:
        if self._observer is None:
            return
        try:
            self._observer(verdict, time.perf_counter() - started, hop)
        except Exception:
            log.exception("the check observer failed")


async def start_authz_server(
    authorizer: Authorizer, address: str = "127.0.0.1:0", observer: CheckObserver | None = None
) -> tuple[grpc.aio.Server, int]:
    """Start serving ``authorizer`` on ``address`` (plaintext; Envoy is on the same node).
    Prefer ``unix:/path`` in a private directory, made mode 0600 (the agent does): on a
    loopback port any local process could append forged decisions to the node's chain.
    Returns the started server and its port (1 for a Unix socket); stop it with
    ``await server.stop(grace)``.

    Raises:
        RuntimeError: the address cannot be bound.
    """
    limit = max_message_bytes(authorizer.max_body_bytes)
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.so_reuseport", 0),
        ]
    )
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(
        AuthorizationService(authorizer, observer), server
    )
    port = server.add_insecure_port(address)
    if port == 0:
        raise RuntimeError(f"cannot bind the authz server to {address}")
    await server.start()
    return server, port
