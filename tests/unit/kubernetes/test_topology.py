"""What the schemas cannot see: replicas spread over hosts with disruption budgets, the etcd
cluster's flags, Services that select pods, security contexts, probes, secrets and the
network policies. Each check runs on the manifests, then on a broken copy."""

from __future__ import annotations

from typing import Any

from tests.unit.kubernetes import checks
from tests.unit.kubernetes.manifests import find, of_kind, pod_spec


def test_control_plane_and_etcd_are_highly_available(docs: list[dict[str, Any]]) -> None:
    assert checks.check_high_availability(docs) == []


def test_the_availability_check_catches_a_weakened_deployment(docs: list[dict[str, Any]]) -> None:
    plane = find(docs, "StatefulSet", "tiermesh-controlplane")
    del pod_spec(plane)["affinity"]
    find(docs, "PodDisruptionBudget", "tiermesh-controlplane")["spec"]["maxUnavailable"] = 2
    etcd = find(docs, "StatefulSet", "tiermesh-etcd")
    etcd["spec"]["replicas"] = 4
    args = pod_spec(etcd)["containers"][0]["args"]
    cluster = next(i for i, a in enumerate(args) if a.startswith("--initial-cluster="))
    args[cluster] = args[cluster].replace("tiermesh-etcd-2.tiermesh-etcd", "etcd-2")
    find(docs, "Service", "tiermesh-etcd")["spec"]["publishNotReadyAddresses"] = False
    problems = checks.check_high_availability(docs)
    assert "tiermesh-controlplane: no required podAntiAffinity on kubernetes.io/hostname" in (
        problems
    )
    assert "tiermesh-controlplane: no PodDisruptionBudget keeping a majority" in problems
    assert "tiermesh-etcd: an even member count (4)" in problems
    assert any(p.startswith("tiermesh-etcd: --initial-cluster") for p in problems), problems
    assert "tiermesh-etcd: its Service is not headless with not-ready addresses" in problems
    assert any(p.startswith("the control plane's --etcd") for p in problems), problems


def test_services_select_pods_with_their_ports(docs: list[dict[str, Any]]) -> None:
    assert checks.check_services_select_pods(docs) == []
    find(docs, "Service", "tiermesh-etcd")["spec"]["ports"][0]["targetPort"] = "clients"
    headless = find(docs, "Service", "tiermesh-controlplane-headless")
    headless["spec"]["selector"]["app.kubernetes.io/component"] = "control-plane"
    assert sorted(checks.check_services_select_pods(docs)) == [
        "Service tiermesh-controlplane-headless selects no pods",
        "Service tiermesh-etcd: tiermesh-etcd has no port clients",
    ]


def test_containers_run_unprivileged(docs: list[dict[str, Any]]) -> None:
    assert checks.check_security_contexts(docs) == []


def test_the_security_check_catches_each_weakening(docs: list[dict[str, Any]]) -> None:
    plane = pod_spec(find(docs, "StatefulSet", "tiermesh-controlplane"))
    plane["securityContext"]["runAsUser"] = 0
    plane["automountServiceAccountToken"] = True
    (envoy,) = pod_spec(find(docs, "Deployment", "tiermesh-node-private"))["containers"]
    envoy["securityContext"]["readOnlyRootFilesystem"] = False
    envoy["securityContext"]["capabilities"]["add"] = ["NET_ADMIN"]
    del envoy["resources"]["limits"]
    edge_init = pod_spec(find(docs, "DaemonSet", "tiermesh-node-edge"))["initContainers"][0]
    edge_init["securityContext"]["capabilities"]["add"].append("SYS_ADMIN")
    problems = checks.check_security_contexts(docs)
    assert "tiermesh-controlplane/controlplane: may run as root" in problems
    assert "tiermesh-controlplane/secrets: may run as root" in problems
    assert "tiermesh-controlplane: mounts a service-account token it never uses" in problems
    assert "tiermesh-node-private/envoy: writable root file system" in problems
    assert "tiermesh-node-private/envoy: adds capabilities ['NET_ADMIN']" in problems
    assert "tiermesh-node-private/envoy: no requests or memory limit" in problems
    assert "tiermesh-node-edge/state-dir: adds capabilities ['CHOWN', 'FOWNER', 'SYS_ADMIN']" in (
        problems
    )


def test_long_running_containers_have_probes(docs: list[dict[str, Any]]) -> None:
    assert checks.check_probes(docs) == []
    (etcd,) = pod_spec(find(docs, "StatefulSet", "tiermesh-etcd"))["containers"]
    del etcd["livenessProbe"]
    agent = pod_spec(find(docs, "DaemonSet", "tiermesh-node-edge"))["initContainers"][1]
    del agent["startupProbe"]
    assert checks.check_probes(docs) == [
        "tiermesh-etcd/etcd: no liveness probe",
        "tiermesh-node-edge/agent: no startup or readiness probe",
    ]


def test_secrets_are_files_and_no_values_ship(docs: list[dict[str, Any]]) -> None:
    assert checks.check_secrets(docs) == []
    docs.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}})
    agent = pod_spec(find(docs, "Deployment", "tiermesh-node-private"))["initContainers"][0]
    agent["env"] = [{"name": "JOIN_TOKEN", "value": "t"}]
    volumes = pod_spec(find(docs, "StatefulSet", "tiermesh-controlplane"))["volumes"]
    (source,) = [v for v in volumes if "secret" in v]
    source["secret"]["defaultMode"] = 0o444
    assert checks.check_secrets(docs) == [
        "a Secret with values is in the manifests",
        "tiermesh-node-private/agent: env JOIN_TOKEN carries a secret",
        "tiermesh-controlplane: Secret tiermesh-controlplane files are world-readable",
    ]


def test_only_nodes_reach_the_control_plane_and_only_it_reaches_etcd(
    docs: list[dict[str, Any]],
) -> None:
    assert checks.check_network_policies(docs) == []


def test_the_network_policy_check_catches_openings(docs: list[dict[str, Any]]) -> None:
    policy = find(docs, "NetworkPolicy", "tiermesh-controlplane")
    policy["spec"]["ingress"][0]["from"].append({"namespaceSelector": {}})
    policy["spec"]["ingress"][0]["ports"].remove({"port": "audit"})
    edge_hosts = find(docs, "NetworkPolicy", "tiermesh-controlplane-edge-hosts")
    edge_hosts["spec"]["ingress"][0]["ports"].remove({"port": "audit"})
    etcd = find(docs, "NetworkPolicy", "tiermesh-etcd")
    etcd["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"] = {
        "app.kubernetes.io/component": "node"
    }
    nodes = find(docs, "NetworkPolicy", "tiermesh-nodes")
    nodes["spec"]["ingress"][0]["ports"] = [{"port": 9463}]
    deny = find(docs, "NetworkPolicy", "tiermesh-default-deny-ingress")
    docs.remove(deny)
    problems = checks.check_network_policies(docs)
    assert "no default-deny ingress policy" in problems
    assert any(
        "tiermesh-controlplane: node ports open to {'namespaceSelector'" in p for p in problems
    )
    assert any("tiermesh-etcd: etcd's client port open to" in p for p in problems), problems
    assert any("nodes may reach only" in p for p in problems), problems
    assert "tiermesh-nodes: nodes admit ['9463'], not only /metrics" in problems
    assert len(of_kind(docs, "NetworkPolicy")) == 4


def test_each_control_plane_replica_is_named_by_its_pod(docs: list[dict[str, Any]]) -> None:
    """Replicas campaign for leadership and sign plan records under ``TIERMESH_REPLICA``
    (``controlplane run --replica``); one name shared by three pods would make them one
    holder and one interleaved chain."""
    plane = find(docs, "StatefulSet", "tiermesh-controlplane")
    (container,) = (c for c in pod_spec(plane)["containers"] if c["name"] == "controlplane")
    env = {e["name"]: e for e in container.get("env", [])}
    assert env["TIERMESH_REPLICA"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
