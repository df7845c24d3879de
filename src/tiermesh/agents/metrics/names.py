"""Metric names, attributes and bucket boundaries, in one place.

GenAI names and attributes are the OpenTelemetry GenAI semantic conventions' own, taken
from ``opentelemetry-semantic-conventions`` (``opentelemetry.semconv._incubating``: the
GenAI conventions are still "development" there, hence the incubating module). Their
Prometheus spelling follows the OpenTelemetry → Prometheus compatibility rules: dots
become underscores, and a unit of seconds adds ``_seconds`` (prometheus-client appends
it from ``unit=``); ``{token}`` adds nothing. Bucket boundaries are the conventions'
advised explicit boundaries for each instrument.
"""

from __future__ import annotations

from typing import Final

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as _attr
from opentelemetry.semconv._incubating.metrics import gen_ai_metrics as _metrics
from opentelemetry.semconv.attributes import error_attributes as _error

__all__ = [
    "ATTR_ERROR_TYPE",
    "ATTR_OPERATION_NAME",
    "ATTR_PROVIDER_NAME",
    "ATTR_REQUEST_MODEL",
    "ATTR_RESPONSE_MODEL",
    "ATTR_TOKEN_TYPE",
    "CHUNK_BUCKETS",
    "CLIENT_OPERATION_DURATION",
    "CLIENT_TIME_PER_OUTPUT_CHUNK",
    "CLIENT_TIME_TO_FIRST_CHUNK",
    "CLIENT_TOKEN_USAGE",
    "DURATION_BUCKETS",
    "FIRST_TOKEN_BUCKETS",
    "OUTPUT_TOKEN_BUCKETS",
    "SERVER_REQUEST_DURATION",
    "SERVER_TIME_PER_OUTPUT_TOKEN",
    "SERVER_TIME_TO_FIRST_TOKEN",
    "TOKEN_BUCKETS",
    "TOKEN_INPUT",
    "TOKEN_OUTPUT",
    "label",
    "prometheus_name",
]

CLIENT_TOKEN_USAGE: Final = _metrics.GEN_AI_CLIENT_TOKEN_USAGE
CLIENT_OPERATION_DURATION: Final = _metrics.GEN_AI_CLIENT_OPERATION_DURATION
CLIENT_TIME_TO_FIRST_CHUNK: Final = _metrics.GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK
CLIENT_TIME_PER_OUTPUT_CHUNK: Final = _metrics.GEN_AI_CLIENT_OPERATION_TIME_PER_OUTPUT_CHUNK
SERVER_REQUEST_DURATION: Final = _metrics.GEN_AI_SERVER_REQUEST_DURATION
SERVER_TIME_TO_FIRST_TOKEN: Final = _metrics.GEN_AI_SERVER_TIME_TO_FIRST_TOKEN
SERVER_TIME_PER_OUTPUT_TOKEN: Final = _metrics.GEN_AI_SERVER_TIME_PER_OUTPUT_TOKEN

ATTR_OPERATION_NAME: Final = _attr.GEN_AI_OPERATION_NAME
ATTR_PROVIDER_NAME: Final = _attr.GEN_AI_PROVIDER_NAME
ATTR_REQUEST_MODEL: Final = _attr.GEN_AI_REQUEST_MODEL
ATTR_RESPONSE_MODEL: Final = _attr.GEN_AI_RESPONSE_MODEL
ATTR_TOKEN_TYPE: Final = _attr.GEN_AI_TOKEN_TYPE
ATTR_ERROR_TYPE: Final = _error.ERROR_TYPE
TOKEN_INPUT: Final = _attr.GenAiTokenTypeValues.INPUT.value
TOKEN_OUTPUT: Final = _attr.GenAiTokenTypeValues.OUTPUT.value

TOKEN_BUCKETS: Final = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)
"""``gen_ai.client.token.usage`` (advised boundaries, cut at 4 Mi tokens)."""
DURATION_BUCKETS: Final = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
"""``gen_ai.client.operation.duration``, ``gen_ai.server.request.duration``."""
FIRST_TOKEN_BUCKETS: Final = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
"""``gen_ai.server.time_to_first_token``, ``gen_ai.client.operation.time_to_first_chunk``."""
OUTPUT_TOKEN_BUCKETS: Final = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
)  # fmt: skip
"""``gen_ai.server.time_per_output_token``."""
CHUNK_BUCKETS: Final = OUTPUT_TOKEN_BUCKETS
"""``gen_ai.client.operation.time_per_output_chunk``."""


def prometheus_name(otel_name: str) -> str:
    """The Prometheus spelling of an OpenTelemetry metric name, before the unit suffix."""
    return otel_name.replace(".", "_")


def label(attribute: str) -> str:
    """The Prometheus label name of an OpenTelemetry attribute."""
    return attribute.replace(".", "_")
