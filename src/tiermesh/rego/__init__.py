"""Rego policy engines behind one :class:`PolicyEngine` protocol.

- :class:`RegorusEngine`: the default, embedded and fast (regorus, Rust).
- :class:`OpaLibraryEngine`: the real OPA Go engine in-process; the oracle.
- :class:`OpaRestEngine`: a standalone OPA server over its REST API.

All accept Rego v1 only, return JSON values (sets as sorted arrays) or
:data:`UNDEFINED`, and raise the errors of :mod:`.errors`.
"""

from __future__ import annotations

from tiermesh.rego.engine import (
    UNDEFINED,
    JSONValue,
    PolicyEngine,
    RegoTestResult,
    Undefined,
)
from tiermesh.rego.errors import (
    EngineClosed,
    EngineUnavailable,
    PolicyError,
    PolicyEvalError,
    RegoCompileError,
    RegoParseError,
    RegoProblem,
)
from tiermesh.rego.opa_engine import OpaLibraryEngine
from tiermesh.rego.opa_rest_engine import OpaRestEngine
from tiermesh.rego.regorus_engine import RegorusEngine

__all__ = [
    "UNDEFINED",
    "EngineClosed",
    "EngineUnavailable",
    "JSONValue",
    "OpaLibraryEngine",
    "OpaRestEngine",
    "PolicyEngine",
    "PolicyError",
    "PolicyEvalError",
    "RegoCompileError",
    "RegoParseError",
    "RegoProblem",
    "RegoTestResult",
    "RegorusEngine",
    "Undefined",
]
