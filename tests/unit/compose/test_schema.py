"""``compose/compose.yaml`` against the official Compose Specification JSON schema.

The schema is vendored (see SCHEMA_SOURCE.md). Full validation needs ``jsonschema``; where it
is not installed that test is skipped, and the key check below still runs: it proves every
mapping key is one the spec defines, and nothing about types or values.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import pytest

from tests.unit.compose.conftest import SCHEMA_FILE

SCHEMA_SHA256 = "0dc04bd346dcfee1b1419628fff79937bbf076925f298f272a2b490e2b112bac"


def _schema() -> dict[str, Any]:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert isinstance(schema, dict)
    return schema


def test_vendored_schema_is_the_file_named_in_schema_source() -> None:
    digest = hashlib.sha256(SCHEMA_FILE.read_bytes()).hexdigest()
    assert digest == SCHEMA_SHA256
    assert SCHEMA_SHA256 in SCHEMA_FILE.with_name("SCHEMA_SOURCE.md").read_text(encoding="utf-8")


def test_compose_file_is_valid_against_the_compose_spec(compose: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip(
        "jsonschema", reason="jsonschema is not installed (it belongs in the dev group)"
    )
    # The file declares draft 2019-09 under a URI jsonschema does not recognise; say it here.
    validator_class = jsonschema.Draft201909Validator
    schema = _schema()
    validator_class.check_schema(schema)
    validator = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
    errors = [
        f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
        for error in validator.iter_errors(compose)
    ]
    assert errors == []


def test_schema_rejects_what_it_should(compose: dict[str, Any]) -> None:
    """The validator is really applied: an unknown service key and a bad condition fail."""
    jsonschema = pytest.importorskip(
        "jsonschema", reason="jsonschema is not installed (it belongs in the dev group)"
    )
    validator = jsonschema.Draft201909Validator(_schema())
    broken = json.loads(json.dumps(compose))
    broken["services"]["etcd-1"]["imagee"] = "typo"
    broken["services"]["edge-1-envoy"]["depends_on"]["edge-1-agent"]["condition"] = "healthy"
    paths = {tuple(map(str, error.absolute_path)) for error in validator.iter_errors(broken)}
    assert ("services", "etcd-1") in paths
    assert ("services", "edge-1-envoy", "depends_on") in paths


def _allowed(definition: dict[str, Any]) -> tuple[set[str], list[re.Pattern[str]]]:
    names = set(definition.get("properties", {}))
    patterns = [re.compile(p) for p in definition.get("patternProperties", {})]
    return names, patterns


def _unknown(mapping: dict[str, Any], definition: dict[str, Any]) -> list[str]:
    names, patterns = _allowed(definition)
    return [key for key in mapping if key not in names and not any(p.search(key) for p in patterns)]


def test_every_key_is_one_the_compose_spec_defines(compose: dict[str, Any]) -> None:
    """Key names only, at the levels below; types and values are the jsonschema test's job."""
    schema = _schema()
    definitions = schema["definitions"]
    problems = [f"top level: {key}" for key in _unknown(compose, schema)]
    for name, service in compose["services"].items():
        problems += [f"services.{name}: {k}" for k in _unknown(service, definitions["service"])]
        if "healthcheck" in service:
            problems += [
                f"services.{name}.healthcheck: {k}"
                for k in _unknown(service["healthcheck"], definitions["healthcheck"])
            ]
        conditions = definitions["service"]["properties"]["depends_on"]["oneOf"][1]
        allowed_conditions = next(iter(conditions["patternProperties"].values()))["properties"][
            "condition"
        ]["enum"]
        for dep, spec in (service.get("depends_on") or {}).items():
            if spec["condition"] not in allowed_conditions:
                problems.append(f"services.{name}.depends_on.{dep}: {spec['condition']}")
    for section, definition in [
        ("networks", "network"),
        ("volumes", "volume"),
        ("secrets", "secret"),
        ("configs", "config"),
    ]:
        for name, entry in (compose.get(section) or {}).items():
            problems += [
                f"{section}.{name}: {k}" for k in _unknown(entry or {}, definitions[definition])
            ]
    assert problems == []
