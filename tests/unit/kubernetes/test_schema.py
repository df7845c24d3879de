"""Every manifest against the Kubernetes API schemas (the ``kubernetes-validate`` package,
which ships them: no cluster, no network), and the kustomization against the files."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections import Counter
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.unit.kubernetes.manifests import (
    K8S_DIR,
    KUSTOMIZATION,
    find,
    manifest_files,
    pod_spec,
    without_source,
)

# The oldest release the manifests need (native sidecars: an init container with
# restartPolicy Always) and the newest kubernetes-validate knows.
VERSIONS = ("1.29.0", kubernetes_validate.latest_version())


def schema_problems(docs: list[dict[str, Any]]) -> list[str]:
    """Each object validated in strict mode (unknown fields are errors) for VERSIONS."""
    problems = []
    for doc in docs:
        for version in VERSIONS:
            try:
                kubernetes_validate.validate(without_source(doc), version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = "/".join(map(str, exc.absolute_path)) or "<root>"
                problems.append(
                    f"{doc['kind']}/{doc['metadata']['name']} ({version}): {path}: {exc.message}"
                )
            except kubernetes_validate.SchemaNotFoundError as exc:
                problems.append(exc.message)
    return problems


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a network connection fails the test, naming the address."""

    def refuse(self: socket.socket, address: Any) -> None:
        pytest.fail(f"schema validation tried to reach {address}: it must work offline")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


@pytest.mark.usefixtures("offline")
def test_every_manifest_is_valid_for_the_kubernetes_api(docs: list[dict[str, Any]]) -> None:
    assert len(docs) >= 15
    assert schema_problems(docs) == []


@pytest.mark.usefixtures("offline")
def test_the_schema_check_catches_typos_and_wrong_types(docs: list[dict[str, Any]]) -> None:
    statefulset = find(docs, "StatefulSet", "tiermesh-controlplane")
    statefulset["spec"]["replica"] = 3  # a typo
    pod_spec(find(docs, "DaemonSet", "tiermesh-node-edge"))["hostNetwork"] = "yes"
    find(docs, "Service", "tiermesh-etcd")["spec"]["ports"][0]["port"] = "2379"
    problems = schema_problems(docs)
    assert any("StatefulSet/tiermesh-controlplane" in p and "replica" in p for p in problems)
    assert any("DaemonSet/tiermesh-node-edge" in p and "hostNetwork" in p for p in problems)
    assert any("Service/tiermesh-etcd" in p and "port" in p for p in problems)


def test_a_kind_without_a_schema_is_a_problem_not_a_pass(docs: list[dict[str, Any]]) -> None:
    bogus = {"apiVersion": "tiermesh.example/v1", "kind": "Mesh", "metadata": {"name": "m"}}
    assert schema_problems([bogus]) != []


def test_objects_are_named_once_and_live_in_the_tiermesh_namespace(
    docs: list[dict[str, Any]],
) -> None:
    names = Counter((d["kind"], d["metadata"]["name"]) for d in docs)
    assert [key for key, count in names.items() if count > 1] == []
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == "tiermesh", doc["metadata"]["name"]
    assert find(docs, "Namespace", "tiermesh")


def test_the_kustomization_lists_every_manifest_once() -> None:
    kustomization = yaml.safe_load(KUSTOMIZATION.read_text(encoding="utf-8"))
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed))
    assert sorted(listed) == [p.name for p in manifest_files()]


KUBECTL = shutil.which("kubectl")


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed (make os-deps installs it)")
def test_kubectl_kustomize_renders_the_same_objects(docs: list[dict[str, Any]]) -> None:
    """``kubectl kustomize`` (offline: it contacts no cluster) builds exactly these objects.
    Debian's kubectl 1.20 and 1.32 both do."""
    assert KUBECTL is not None
    result = subprocess.run(
        [KUBECTL, "kustomize", str(K8S_DIR)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "KUBECONFIG": "/nonexistent", "HOME": "/nonexistent"},
    )
    assert result.returncode == 0, result.stderr
    rendered = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in rendered) == sorted(
        (d["kind"], d["metadata"]["name"]) for d in docs
    )
