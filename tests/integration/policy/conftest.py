"""Fixtures for the policy engine contract suite: one engine per implementation."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tiermesh.rego import (
    EngineUnavailable,
    JSONValue,
    OpaLibraryEngine,
    OpaRestEngine,
    PolicyEngine,
    RegorusEngine,
)

REGO_DIR = Path(__file__).parent / "rego"
ENGINE_KINDS = ["regorus", "opa", "opa-rest"]


@pytest.fixture(scope="session")
def routing_modules() -> dict[str, str]:
    """The fixture policy and its Rego tests, named as they would be in a repo."""
    return {
        f"policies/fixture/{path.name}": path.read_text(encoding="utf-8")
        for path in sorted(REGO_DIR.glob("*.rego"))
    }


@pytest.fixture(scope="session")
def catalog() -> dict[str, JSONValue]:
    data: dict[str, JSONValue] = json.loads((REGO_DIR / "catalog.json").read_text("utf-8"))
    return data


def _opa_library_or_skip() -> OpaLibraryEngine:
    try:
        return OpaLibraryEngine()
    except EngineUnavailable as exc:
        pytest.skip(f"needs the OPA Go engine (opa_bindings): {exc.reason}")


@pytest.fixture(params=ENGINE_KINDS)
def engine(request: pytest.FixtureRequest) -> Iterator[PolicyEngine]:
    """An empty engine of each kind; opa-rest talks HTTP to a test OPA server."""
    kind: str = request.param
    if kind == "regorus":
        with_engine: PolicyEngine = RegorusEngine()
        yield with_engine
        with_engine.close()
    elif kind == "opa":
        library = _opa_library_or_skip()
        yield library
        library.close()
    else:
        _opa_library_or_skip().close()  # the test server evaluates with opa_bindings
        from tests.integration.policy.opa_test_server import OpaTestServer  # noqa: PLC0415

        with OpaTestServer() as server:
            rest = OpaRestEngine(server.url, timeout=5.0)
            yield rest
            rest.close()


@pytest.fixture
def opa_server() -> Iterator[str]:
    """URL of a test OPA server (real OPA evaluation over real HTTP on 127.0.0.1)."""
    _opa_library_or_skip().close()
    from tests.integration.policy.opa_test_server import OpaTestServer  # noqa: PLC0415

    with OpaTestServer() as server:
        yield server.url
