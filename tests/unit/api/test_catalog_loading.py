"""load_catalog: the demo catalog loads; broken catalogs name the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tiermesh.controlplane.api import Catalog, CatalogError, CatalogProblem, load_catalog, load_yaml

DEMO = Path(__file__).resolve().parents[3] / "policies" / "data" / "catalog.yaml"


def _demo_raw() -> dict[str, object]:
    raw: dict[str, object] = yaml.safe_load(DEMO.read_text(encoding="utf-8"))
    return raw


def _write(tmp_path: Path, raw: object) -> Path:
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def _problems(path: Path) -> list[str]:
    with pytest.raises(CatalogError) as caught:
        load_catalog(path)
    assert caught.value.file == str(path)
    lines = str(caught.value).splitlines()
    assert all(line.startswith(f"{path}: ") for line in lines)
    return [line.removeprefix(f"{path}: ") for line in lines]


def test_demo_catalog_loads() -> None:
    catalog = load_catalog(DEMO)
    assert [b.name for b in catalog.backends] == [
        "edge-smollm",
        "onprem-gpu",
        "frontier-us",
        "frontier-eu",
    ]
    assert {b.tier for b in catalog.backends} == {"local", "private", "cloud"}
    assert [t.name for t in catalog.tenants] == ["acme", "globex", "initech"]


def test_unknown_tier_names_the_field(tmp_path: Path) -> None:
    raw = _demo_raw()
    raw["backends"][1]["tier"] = "edge"  # type: ignore[index]
    assert _problems(_write(tmp_path, raw)) == [
        "backends[1].tier: Input should be 'local', 'private' or 'cloud' (got 'edge')"
    ]


def test_unknown_tier_in_a_tenant(tmp_path: Path) -> None:
    raw = _demo_raw()
    raw["tenants"][0]["allowed_tiers"] = ["local", "gpu"]  # type: ignore[index]
    assert _problems(_write(tmp_path, raw)) == [
        "tenants[0].allowed_tiers[1]: Input should be 'local', 'private' or 'cloud' (got 'gpu')"
    ]


def test_duplicate_backend(tmp_path: Path) -> None:
    raw = _demo_raw()
    copy = dict(raw["backends"][0])  # type: ignore[index]
    copy["endpoint"] = {"host": "127.0.0.1", "port": 8082}  # one endpoint per backend
    raw["backends"].append(copy)  # type: ignore[attr-defined]
    assert _problems(_write(tmp_path, raw)) == [
        "backends[4].name: duplicate backend name 'edge-smollm'"
    ]


def test_alias_to_unknown_model(tmp_path: Path) -> None:
    raw = _demo_raw()
    raw["aliases"][1]["models"].append("gpt-9")  # type: ignore[index]
    assert _problems(_write(tmp_path, raw)) == [
        "aliases[1].models[2]: no backend serves model 'gpt-9'"
    ]


def test_cloud_backend_cleared_for_restricted_data(tmp_path: Path) -> None:
    raw = _demo_raw()
    raw["backends"][2]["max_sensitivity"] = "restricted"  # type: ignore[index]
    assert _problems(_write(tmp_path, raw)) == [
        "backends[2].max_sensitivity: a cloud backend may never be cleared for restricted data"
    ]


def test_restricted_tier_outside_allowed_tiers(tmp_path: Path) -> None:
    raw = _demo_raw()
    raw["tenants"][2]["restricted_tiers"] = ["local", "private"]  # type: ignore[index]
    assert _problems(_write(tmp_path, raw)) == [
        "tenants[2].restricted_tiers[1]: tier 'private' is not in allowed_tiers"
    ]


def test_missing_and_unknown_fields(tmp_path: Path) -> None:
    raw = _demo_raw()
    del raw["tenants"][1]["monthly_budget_usd"]  # type: ignore[index]
    raw["tenants"][1]["budget"] = 3  # type: ignore[index]
    assert _problems(_write(tmp_path, raw)) == [
        "tenants[1].monthly_budget_usd: Field required",
        "tenants[1].budget: unknown field",
    ]


def test_bad_yaml_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text("backends:\n  - name: a\n   tier: [local\n", encoding="utf-8")
    (problem,) = _problems(path)
    assert problem.startswith("invalid YAML at line 3, column ")


def test_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text("- just\n- a list\n", encoding="utf-8")
    assert _problems(path) == ["expected a mapping at the top, got list"]


def test_missing_file(tmp_path: Path) -> None:
    (problem,) = _problems(tmp_path / "nope.yaml")
    assert problem.startswith("cannot read: ")


def test_building_a_catalog_in_python_checks_references_too() -> None:
    raw = _demo_raw()
    raw["defaults"]["default_task"] = "poetry"  # type: ignore[index]
    with pytest.raises(ValueError, match=r"defaults\.default_task: unknown task 'poetry'"):
        Catalog.model_validate(raw)


def test_problem_without_field_is_just_the_message() -> None:
    assert str(CatalogProblem("", "broken")) == "broken"
    assert str(CatalogError("f.yaml", [])) == "f.yaml: invalid catalog"


def test_load_yaml_reads_what_safe_load_reads_and_refuses_python_tags() -> None:
    text = DEMO.read_text(encoding="utf-8")
    assert load_yaml(text) == yaml.safe_load(text)
    with pytest.raises(yaml.YAMLError):
        load_yaml("a: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(yaml.YAMLError):
        load_yaml("a: [1, 2\n")
