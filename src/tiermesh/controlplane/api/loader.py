"""Reading a catalog file: YAML -> :class:`~tiermesh.controlplane.api.Catalog`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from tiermesh.controlplane.api.catalog import DEFER_REFERENCES, Catalog, reference_problems
from tiermesh.controlplane.api.errors import CatalogError, CatalogProblem

__all__ = ["catalog_from_document", "load_catalog", "load_yaml", "parse_catalog"]

_SAFE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load(text)``, parsed by libyaml when PyYAML was built with it (the same
    documents; ~9x faster on a catalog of 200 tenants). Raises ``yaml.YAMLError``."""
    return yaml.load(text, Loader=_SAFE_LOADER)  # noqa: S506 - a safe loader


def load_catalog(path: str | Path) -> Catalog:
    """Read, parse and validate the catalog at ``path``.

    Raises :class:`CatalogError` naming the file and each bad field when the file
    cannot be read, is not YAML, does not fit the schema, or has broken
    cross-references (see :func:`~tiermesh.controlplane.api.catalog.reference_problems`).
    """
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogError(file, [CatalogProblem("", f"cannot read: {exc}")]) from exc
    return parse_catalog(text, file=file)


def parse_catalog(text: str, *, file: str = "<catalog>") -> Catalog:
    """Parse catalog YAML text; ``file`` names it in errors. Same errors as :func:`load_catalog`."""
    try:
        raw = load_yaml(text)
    except yaml.YAMLError as exc:
        raise CatalogError(file, [CatalogProblem("", _yaml_message(exc))]) from exc
    return catalog_from_document(raw, file=file)


def catalog_from_document(raw: object, *, file: str = "<catalog>") -> Catalog:
    """Validate an already parsed catalog document (what :func:`parse_catalog` does after
    parsing); same errors but for the YAML ones."""
    if not isinstance(raw, dict):
        got = "nothing" if raw is None else type(raw).__name__
        raise CatalogError(file, [CatalogProblem("", f"expected a mapping at the top, got {got}")])
    try:
        catalog = Catalog.model_validate(raw, context={DEFER_REFERENCES: True})
    except ValidationError as exc:
        raise CatalogError(file, _validation_problems(exc)) from exc
    problems = reference_problems(catalog)
    if problems:
        raise CatalogError(file, problems)
    return catalog


def _yaml_message(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is None:
        return f"invalid YAML: {problem}"
    return f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {problem}"


def _field_path(loc: Sequence[int | str]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path


def _validation_problems(exc: ValidationError) -> list[CatalogProblem]:
    problems: list[CatalogProblem] = []
    for error in exc.errors(include_url=False):
        message = error["msg"]
        value = error.get("input")
        if error["type"] not in {"missing", "extra_forbidden"} and isinstance(
            value, str | int | float | bool
        ):
            message = f"{message} (got {value!r})"
        elif error["type"] == "extra_forbidden":
            message = "unknown field"
        problems.append(CatalogProblem(_field_path(error["loc"]), message))
    return problems
