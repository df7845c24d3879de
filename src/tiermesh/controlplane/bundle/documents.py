"""Turning bundle files into what the engine loads: modules, the data document, the catalog.

Bundle path → meaning:

- ``*.rego`` → a Rego module named by its path;
- ``data/<stem>.(yaml|yml|json)`` → the document ``data.<stem>`` (two files with one stem
  are an error); ``data/catalog.*`` is required and validated as a
  :class:`~tiermesh.controlplane.api.Catalog` (inline JWKS keys as Envoy loads them,
  :mod:`.jwks`);
- ``data/nodes.*`` (optional) → the nodes a check plans for, a list of
  :class:`~tiermesh.controlplane.api.NodeInfo` objects;
- ``data/request_config.*`` (optional) → the request policy's mesh-wide settings, a
  mapping of names to scalars validated as a
  :data:`~tiermesh.controlplane.api.request_policy.RequestConfig` (and the known settings
  by type: ``default_tenant`` a string, ``max_request_tokens`` a number,
  ``require_api_key`` and ``require_credential`` booleans); not loaded
  into the engine here (the nodes' request policy reads it, merged with each node's own
  settings), so the bundle's Rego tests do not depend on a mesh's settings;
- anything else (``schemas/*.json``) is not loaded into the engine.

Every function here is pure and returns problems as findings.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from tiermesh.controlplane.api import (
    Catalog,
    CatalogError,
    NodeInfo,
    catalog_from_document,
    load_yaml,
)
from tiermesh.controlplane.api.request_policy import (
    MAX_REQUEST_CONFIG_STRING,
    REQUEST_CONFIG_DOCUMENT,
    validate_request_config,
)
from tiermesh.controlplane.bundle._yaml_lines import field_line
from tiermesh.controlplane.bundle.findings import Finding, Stage
from tiermesh.controlplane.bundle.jwks import inline_jwks_problems
from tiermesh.controlplane.bundle.reader import DATA_SUFFIXES
from tiermesh.rego import JSONValue

__all__ = [
    "CATALOG_DOCUMENT",
    "NODES_DOCUMENT",
    "REQUEST_CONFIG_DOCUMENT",
    "Documents",
    "catalog_line",
    "check_nodes",
    "read_documents",
]

CATALOG_DOCUMENT = "catalog"
"""Stem of the required catalog document (``data/catalog.yaml``)."""
NODES_DOCUMENT = "nodes"
"""Stem of the optional list of nodes to check (``data/nodes.yaml``)."""

_NODES = TypeAdapter(tuple[NodeInfo, ...])
_KNOWN_SETTINGS: dict[str, tuple[str, tuple[type, ...]]] = {
    "default_tenant": ("a string", (str,)),
    "max_request_tokens": ("a number", (int, float)),
    "require_api_key": ("a boolean", (bool,)),
    "require_credential": ("a boolean", (bool,)),
}
"""Settings request.rego (or, for ``require_api_key`` and ``require_credential``, the
authz server) reads, and the type it needs (it ignores any other type)."""
_NAME_UNSAFE = re.compile(r"[^a-z0-9_-]+")
_SUBJECT = re.compile(r"^(tenant|backend) ([a-z0-9][a-z0-9_-]*):")


@dataclass(frozen=True, slots=True)
class Documents:
    """The parsed bundle. ``data`` holds every document but ``request_config`` (request-time
    settings, module doc); the catalog is there as parsed JSON."""

    modules: Mapping[str, str]
    data: Mapping[str, JSONValue]
    sources: Mapping[str, str]
    """Document stem → bundle path, for locating problems."""
    texts: Mapping[str, str]
    """Bundle path → decoded text of each data document."""
    catalog: Catalog | None
    findings: tuple[Finding, ...] = field(default=())

    @property
    def catalog_file(self) -> str | None:
        return self.sources.get(CATALOG_DOCUMENT)


def _parse_document(path: str, text: str) -> tuple[Any, Finding | None]:
    try:
        if path.endswith(".json"):
            return json.loads(text), None
        return load_yaml(text), None
    except json.JSONDecodeError as exc:
        return None, Finding(Stage.DATA, f"invalid JSON: {exc.msg}", path, exc.lineno)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        line = mark.line + 1 if mark is not None else None
        return None, Finding(Stage.DATA, f"invalid YAML: {problem}", path, line)


def read_documents(files: Mapping[str, bytes]) -> Documents:
    """Split and parse bundle files. Problems (undecodable text, bad YAML/JSON, a catalog
    that is missing or invalid, duplicate stems) are findings; ``catalog`` is then None."""
    findings: list[Finding] = []
    modules: dict[str, str] = {}
    data: dict[str, JSONValue] = {}
    sources: dict[str, str] = {}
    texts: dict[str, str] = {}
    for path in sorted(files):
        pure = PurePosixPath(path)
        is_module = path.endswith(".rego")
        is_data = pure.parts[:1] == ("data",) and len(pure.parts) == 2
        if not is_module and not (is_data and pure.suffix in DATA_SUFFIXES):
            continue
        try:
            text = files[path].decode("utf-8")
        except UnicodeDecodeError as exc:
            findings.append(Finding(Stage.READ, f"not UTF-8 text: {exc.reason}", path))
            continue
        if is_module:
            modules[path] = text
            continue
        stem = pure.stem
        if stem in sources:
            findings.append(
                Finding(
                    Stage.DATA, f"document data.{stem} is also defined by {sources[stem]}", path
                )
            )
            continue
        value, problem = _parse_document(path, text)
        if problem is not None:
            findings.append(problem)
            continue
        sources[stem] = path
        texts[path] = text
        data[stem] = value
    catalog = _catalog(sources, texts, data, findings)
    _check_request_config(sources, texts, data, findings)
    # Request-time settings, merged with each node's own there: the compile-time engine
    # (and so the bundle's Rego tests) never sees them.
    data.pop(REQUEST_CONFIG_DOCUMENT, None)
    if catalog is not None:
        data[CATALOG_DOCUMENT] = catalog.model_dump(mode="json")
    return Documents(modules, data, sources, texts, catalog, tuple(findings))


def _catalog(
    sources: Mapping[str, str],
    texts: Mapping[str, str],
    data: Mapping[str, JSONValue],
    findings: list[Finding],
) -> Catalog | None:
    path = sources.get(CATALOG_DOCUMENT)
    if path is None:
        if not any(f.file is not None and f.file.startswith("data/catalog.") for f in findings):
            findings.append(
                Finding(Stage.CATALOG, "missing: the bundle needs data/catalog.yaml", "data/")
            )
        return None
    text = texts[path]
    try:
        catalog = catalog_from_document(data[CATALOG_DOCUMENT], file=path)
        if problems := inline_jwks_problems(catalog):
            raise CatalogError(path, problems)
    except CatalogError as exc:
        for problem in exc.problems:
            line = field_line(text, problem.field)
            findings.append(Finding(Stage.CATALOG, str(problem), path, line))
        return None
    return catalog


def _request_config_problems(value: object, exc: ValidationError) -> dict[str, str]:
    """Setting name (``""`` for the whole document) → what is wrong with it."""
    if not isinstance(value, dict):
        return {"": "must be a mapping of setting names to values"}
    problems: dict[str, str] = {}
    for error in exc.errors(include_url=False):
        loc = error["loc"]
        if not loc:
            problems.setdefault("", error["msg"])
        elif "[key]" in loc:
            problems.setdefault(
                str(loc[0]),
                "not a setting name (letters, digits and _, not starting with a digit, "
                "at most 128 characters)",
            )
        else:
            # A union's errors repeat the key once per member type: one problem per key.
            setting = value.get(loc[0])
            problems.setdefault(
                str(loc[0]),
                f"must be a string (at most {MAX_REQUEST_CONFIG_STRING} characters), "
                f"a finite number or a boolean, not {type(setting).__name__} {setting!r:.40}",
            )
    return problems


def _check_request_config(
    sources: Mapping[str, str],
    texts: Mapping[str, str],
    data: Mapping[str, Any],
    findings: list[Finding],
) -> None:
    path = sources.get(REQUEST_CONFIG_DOCUMENT)
    if path is None:
        return
    text, value = texts[path], data[REQUEST_CONFIG_DOCUMENT]
    try:
        validate_request_config(value)
    except ValidationError as exc:
        problems = _request_config_problems(value, exc)
    else:
        problems = {}
    if isinstance(value, dict):
        for key, (kind, types) in _KNOWN_SETTINGS.items():
            setting = value.get(key)
            if key in problems or setting is None:
                continue
            if isinstance(setting, bool) != (bool in types) or not isinstance(setting, types):
                problems[key] = f"must be {kind}, not {type(setting).__name__} {setting!r:.40}"
    located = [
        Finding(
            Stage.DATA,
            f"{key}: {problem}" if key else problem,
            path,
            field_line(text, key) if key else 1,
        )
        for key, problem in problems.items()
    ]
    findings.extend(sorted(located, key=lambda finding: finding.line or 0))


def catalog_line(documents: Documents, message: str) -> int | None:
    """The catalog line of the tenant or backend a policy message starts with, if any."""
    match = _SUBJECT.match(message)
    path = documents.catalog_file
    if match is None or path is None or documents.catalog is None:
        return None
    kind, name = match.groups()
    entries: Sequence[Any] = (
        documents.catalog.tenants if kind == "tenant" else documents.catalog.backends
    )
    index = next((i for i, entry in enumerate(entries) if entry.name == name), None)
    if index is None:
        return None
    return field_line(documents.texts[path], f"{kind}s[{index}]")


def _synthetic_id(tier: str, region: str) -> str:
    return _NAME_UNSAFE.sub("-", f"check-{tier}-{region}".lower())[:63]


def check_nodes(documents: Documents) -> tuple[tuple[NodeInfo, ...], tuple[Finding, ...]]:
    """The nodes a check plans for, and problems with ``data/nodes.*``.

    1. ``data/nodes.*`` when present: exactly those nodes (a list of NodeInfo objects).
    2. Otherwise every node that hosts a backend (a backend's ``node`` field), with that
       backend's tier, region and residency; a node hosting several takes its first.
    3. If no backend names a node: one synthetic node ``check-<tier>-<region>`` per
       distinct tier and region of the backends.
    """
    path = documents.sources.get(NODES_DOCUMENT)
    if path is not None:
        try:
            return _NODES.validate_python(documents.data[NODES_DOCUMENT]), ()
        except ValidationError as exc:
            text = documents.texts[path]
            problems = []
            for error in exc.errors(include_url=False):
                where = "".join(
                    f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"]
                ).lstrip(".")
                problems.append(
                    Finding(Stage.DATA, f"{where}: {error['msg']}", path, field_line(text, where))
                )
            return (), tuple(problems)
    catalog = documents.catalog
    if catalog is None:
        return (), ()
    hosted: dict[str, NodeInfo] = {}
    for backend in catalog.backends:
        if backend.node is not None and backend.node not in hosted:
            hosted[backend.node] = NodeInfo(
                id=backend.node,
                tier=backend.tier,
                region=backend.region,
                residency=(backend.residency,),
            )
    if hosted:
        return tuple(hosted[name] for name in sorted(hosted)), ()
    synthetic = {
        _synthetic_id(b.tier, b.region): NodeInfo(
            id=_synthetic_id(b.tier, b.region), tier=b.tier, region=b.region
        )
        for b in catalog.backends
    }
    return tuple(synthetic[name] for name in sorted(synthetic)), ()
