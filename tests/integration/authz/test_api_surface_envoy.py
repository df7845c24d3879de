"""Only the catalog's API surface is routed, through a real Envoy: any other path or
method is answered on the node and reaches no backend, however the path is spelled."""

from __future__ import annotations

import http.client

import pytest

from tests.integration.authz.conftest import AuthzMesh, chat
from tiermesh.controlplane.api import OPENAI_API
from tiermesh.controlplane.generators.api_surface import not_served_body

pytestmark = pytest.mark.envoy

PUBLIC_REASONING = {
    "x-tiermesh-tenant": "acme",
    "x-tiermesh-sensitivity": "public",
    "x-tiermesh-task": "reasoning",
    "content-type": "application/json",
}


def send(mesh: AuthzMesh, method: str, path: str, body: bytes | None = None) -> tuple[int, str]:
    """``method path`` exactly as written (no client-side normalisation)."""
    connection = http.client.HTTPConnection("127.0.0.1", mesh.listener, timeout=10)
    try:
        connection.putrequest(method, path, skip_host=False, skip_accept_encoding=True)
        for name, value in PUBLIC_REASONING.items():
            connection.putheader(name, value)
        connection.putheader("content-length", str(len(body or b"")))
        connection.endheaders(body or b"")
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        connection.close()


@pytest.mark.parametrize(
    "path",
    [
        "/v1/files",
        "/v1/chat/completions/../../v1/files",
        "/v1/chat/completions/",
        "/v1//chat/completions",
        "/v1/chat%2Fcompletions",
        "/v1/chat/completions%3Fx",
        "/V1/chat/completions",
        "/v1/chat/completions;x=1",
        "/v1/fine_tuning/jobs",
        "/",
    ],
)
def test_a_path_outside_the_surface_is_404_and_reaches_no_backend(
    authz_mesh: AuthzMesh, path: str
) -> None:
    status, body = send(authz_mesh, "POST", path, chat("hello"))
    assert (status, body) == (404, not_served_body(OPENAI_API))
    assert authz_mesh.reached() == 0


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/chat/completions"),
        ("DELETE", "/v1/chat/completions"),
        ("PUT", "/v1/embeddings"),
        ("POST", "/v1/models"),
        ("DELETE", "/v1/models"),
    ],
)
def test_a_method_the_path_does_not_accept_is_405_and_reaches_no_backend(
    authz_mesh: AuthzMesh, method: str, path: str
) -> None:
    status, _ = send(authz_mesh, method, path, chat("hello") if method != "GET" else None)
    assert status == 405
    assert authz_mesh.reached() == 0


def test_the_surface_itself_is_routed_with_a_query_string(authz_mesh: AuthzMesh) -> None:
    status, _ = send(authz_mesh, "POST", "/v1/chat/completions?stream=false", chat("hello"))
    assert status == 200
    assert len(authz_mesh.backends["cloud"].models) == 1
    status, _ = send(authz_mesh, "GET", "/v1/models")
    assert status == 200


@pytest.mark.parametrize(
    "path",
    [
        "/v1/chat/completions?user=jane.doe%40example.com",
        "/v1/chat/completions?card=4111+1111+1111+1111",
    ],
)
def test_pii_in_the_query_string_never_reaches_the_cloud(authz_mesh: AuthzMesh, path: str) -> None:
    status, _ = send(authz_mesh, "POST", path, chat("hello"))
    assert status == 200
    assert authz_mesh.backends["cloud"].models == []
    assert len(authz_mesh.backends["edge"].models) == 1


def test_pii_in_a_header_never_reaches_the_cloud(authz_mesh: AuthzMesh) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", authz_mesh.listener, timeout=10)
    try:
        body = chat("hello")
        headers = {**PUBLIC_REASONING, "x-customer": "jane.doe@example.com"}
        connection.request("POST", "/v1/chat/completions", body=body, headers=headers)
        assert connection.getresponse().status == 200
    finally:
        connection.close()
    assert authz_mesh.backends["cloud"].models == []
