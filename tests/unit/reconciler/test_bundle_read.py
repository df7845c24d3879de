"""Reading a policy directory: what is taken, in which order, and the limits."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.unit.reconciler.policyfiles import write_policy_dir
from tiermesh.controlplane.bundle import (
    BundleLimits,
    BundleReadError,
    git_provenance,
    is_bundle_path,
    read_policy_dir,
)


@pytest.mark.parametrize(
    ("path", "taken"),
    [
        ("routing/routing.rego", True),
        ("top.rego", True),
        ("routing/routing_test.rego", True),
        ("data/catalog.yaml", True),
        ("data/catalog.yml", True),
        ("data/usage.json", True),
        ("data/deep/catalog.yaml", False),
        ("data/notes.txt", False),
        ("schemas/plan.schema.json", True),
        ("schemas/x.yaml", False),
        ("README.md", False),
        (".git/hooks/x.rego", False),
        ("routing/.hidden.rego", False),
    ],
)
def test_which_paths_are_bundle_files(path: str, taken: bool) -> None:
    assert is_bundle_path(path) is taken


def test_reading_is_deterministic_and_filtered(tmp_path: Path) -> None:
    write_policy_dir(tmp_path)
    (tmp_path / "README.md").write_text("not policy")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "x.rego").write_text("package x")
    first = read_policy_dir(tmp_path, provenance=False)
    second = read_policy_dir(tmp_path, provenance=False)
    assert list(first.files) == sorted(first.files)
    assert first.sha256 == second.sha256
    assert "README.md" not in first.files
    assert not any(path.startswith(".cache") for path in first.files)
    assert "data/catalog.yaml" in first.files
    assert "routing/routing.rego" in first.files


def test_missing_directory_and_no_modules(tmp_path: Path) -> None:
    with pytest.raises(BundleReadError, match="not a directory"):
        read_policy_dir(tmp_path / "nope")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "catalog.yaml").write_text("version: v1\n")
    with pytest.raises(BundleReadError, match="no Rego modules"):
        read_policy_dir(tmp_path)


def test_limits(tmp_path: Path) -> None:
    write_policy_dir(tmp_path)
    with pytest.raises(BundleReadError, match="file limit"):
        read_policy_dir(tmp_path, limits=BundleLimits(max_file_bytes=1000), provenance=False)
    with pytest.raises(BundleReadError, match="total limit"):
        read_policy_dir(tmp_path, limits=BundleLimits(max_total_bytes=20_000), provenance=False)
    with pytest.raises(BundleReadError, match="more than 3 bundle files"):
        read_policy_dir(tmp_path, limits=BundleLimits(max_files=3), provenance=False)


def test_a_symlink_leaving_the_directory_is_refused(tmp_path: Path) -> None:
    policy = write_policy_dir(tmp_path / "policy")
    (tmp_path / "outside.rego").write_text("package outside\n")
    (policy / "sneaky.rego").symlink_to(tmp_path / "outside.rego")
    with pytest.raises(BundleReadError, match="outside the policy directory"):
        read_policy_dir(policy, provenance=False)


def _git(directory: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-C", str(directory), "-c", "user.name=Pat Doe", "-c", "user.email=pat@x.test",
         *args],
        check=True, capture_output=True,
    )  # fmt: skip


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_git_provenance(tmp_path: Path) -> None:
    assert git_provenance(tmp_path) == {}
    _git(tmp_path, "init", "-q")
    policy = write_policy_dir(tmp_path / "policies")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "policies")
    clean = read_policy_dir(policy).provenance
    assert clean["git_author"] == "Pat Doe <pat@x.test>"
    assert isinstance(clean["git_commit"], str)
    assert len(clean["git_commit"]) == 40
    assert clean["git_dirty"] is False
    assert clean["git_path"] == "policies"
    (policy / "data" / "catalog.yaml").write_text("changed: true\n")
    assert read_policy_dir(policy).provenance["git_dirty"] is True
    (tmp_path / "elsewhere.txt").write_text("outside the policy dir")
    _git(tmp_path, "checkout", "--", "policies")
    assert read_policy_dir(policy).provenance["git_dirty"] is False
