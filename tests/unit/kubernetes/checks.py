"""Checks of ``deploy/kubernetes/`` against the code it deploys. Each takes the manifests'
objects and returns the problems it found (empty: none), so a test can hand it a broken
copy and see the problem caught."""

from __future__ import annotations

import ipaddress
import re
import shlex
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from tests.unit.compose.test_cli_agreement import cli_errors, parse_cli
from tests.unit.kubernetes.manifests import (
    Container,
    containers,
    find,
    is_tiermesh,
    of_kind,
    pod_labels,
    pod_spec,
    pods_selected,
    selects,
    workloads,
)
from tiermesh.agents.config import AgentConfig, ConfigError, load_config, split_hostport
from tiermesh.agents.runtime.envoy import agent_bootstrap
from tiermesh.cli.controlplane_cmd import parse_listen

CONTROLPLANE = "tiermesh-controlplane"
CONTROLPLANE_HEADLESS = "tiermesh-controlplane-headless"
ETCD = "tiermesh-etcd"
# `controlplane run` option → the containerPort name it must have; the node-facing ones are
# the ports node.yaml names (control_plane.<field>).
PORT_NAMES = {
    "listen": "ads",
    "node_api": "node-api",
    "join": "join",
    "audit": "audit",
    "metrics": "metrics",
}
NODE_FIELDS = {"ads": "listen", "node_api": "node_api", "join": "join", "audit": "audit"}
_HEALTHZ = re.compile(r"http://([^/:'\"]+):(\d+)(/[^'\"\s]*)")


def controlplane_container(docs: list[dict[str, Any]]) -> Container:
    (found,) = [
        c
        for c in containers(docs)
        if is_tiermesh(c) and c.spec.get("args", [])[:2] == ["controlplane", "run"]
    ]
    return found


def controlplane_params(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return parse_cli(controlplane_container(docs).args())[1]


def agent_containers(docs: list[dict[str, Any]]) -> list[Container]:
    return [
        c
        for c in containers(docs)
        if is_tiermesh(c) and c.spec.get("args", [])[:2] == ["agent", "run"]
    ]


def node_config(docs: list[dict[str, Any]], agent: Container) -> AgentConfig:
    """The agent's node.yaml (from the ConfigMap mounted where ``--config`` points), loaded
    with ``load_config`` and the container's ``--node-id``/``--join-token-file``.
    Raises ``ConfigError`` or ``AssertionError`` naming what is wrong."""
    params = parse_cli(agent.args())[1]
    path = PurePosixPath(params["config"])
    held = agent.volume_at(path)
    assert held is not None, f"{agent.name}: --config {path} is on no volume"
    mount, volume = held
    assert "configMap" in volume, f"{agent.name}: --config {path} is not from a ConfigMap"
    config_map = find(docs, "ConfigMap", volume["configMap"]["name"])
    key = str(path.relative_to(mount))
    assert key in config_map.get("data", {}), f"{config_map['metadata']['name']} has no {key}"
    with tempfile.TemporaryDirectory() as folder:
        file = Path(folder) / "node.yaml"
        file.write_text(config_map["data"][key], encoding="utf-8")
        return load_config(
            file, node_id=params["node_id"], join_token_file=params["join_token_file"]
        )


def _ports_by_number(container: Container) -> dict[int, str]:
    return {number: name for name, number in container.ports().items()}


def check_images_match_compose(docs: list[dict[str, Any]], compose: dict[str, Any]) -> list[str]:
    """Each role runs the image compose.yaml runs for it (same repository and tag)."""
    services = compose["services"]
    expected = {
        "etcd": services["etcd-1"]["image"],
        "tiermesh": services["controlplane-1"]["image"],
        "envoy": services["edge-1-envoy"]["image"],
    }
    problems = []
    for container in containers(docs):
        image = container.image
        repository = image.rsplit(":", 1)[0]
        role = next((r for r in ("etcd", "envoy") if r in repository), "tiermesh")
        if image != expected[role]:
            problems.append(f"{container.name}: {image}, compose runs {expected[role]}")
    return problems


def check_cli_args(docs: list[dict[str, Any]]) -> list[str]:
    """Every tiermesh container's args parse with the real CLI (as ``tiermesh ARGS``), and
    no ``$(VAR)`` is left that Kubernetes could not expand."""
    problems = []
    parsed = 0
    for container in containers(docs):
        if not is_tiermesh(container):
            continue
        args = container.args()
        left = [a for a in args if "$(" in a]
        if left:
            problems.append(f"{container.name}: unexpanded {left}")
        try:
            parse_cli(args)
        except cli_errors.UsageError as exc:
            problems.append(
                f"{container.name}: `tiermesh {' '.join(args)}`: {exc.format_message()}"
            )
            continue
        parsed += 1
    if parsed < 4:
        problems.append(f"{parsed} tiermesh command lines; expected the control plane and 3 nodes")
    return problems


def check_controlplane_ports(docs: list[dict[str, Any]]) -> list[str]:
    """The control plane's listen flags, its containerPorts and its Services agree; the
    admin server stays on loopback and in no Service."""
    container = controlplane_container(docs)
    params = controlplane_params(docs)
    problems = []
    ports = container.ports()
    for option, port_name in PORT_NAMES.items():
        if params[option] is None:
            problems.append(f"--{option.replace('_', '-')} is not set")
            continue
        address = parse_listen(params[option], option)
        if ports.get(port_name) != address.port:
            problems.append(
                f"--{option} {params[option]}: containerPort {port_name} is {ports.get(port_name)}"
            )
        if address.host != "0.0.0.0":
            problems.append(f"--{option} {params[option]} is not reachable from other pods")
    admin = parse_listen(params["admin"], "--admin")
    if not ipaddress.ip_address(admin.host).is_loopback:
        problems.append(f"--admin {params['admin']}: no authentication, must be loopback")
    if admin.port in _ports_by_number(container):
        problems.append(f"the admin port {admin.port} is a containerPort")
    labels = pod_labels(container.workload)
    for service in of_kind(docs, "Service"):
        if not selects(service["spec"]["selector"], labels):
            continue
        for port in service["spec"]["ports"]:
            target = port["targetPort"]
            number = ports.get(target) if isinstance(target, str) else target
            if number is None:
                problems.append(f"Service {service['metadata']['name']}: no port {target}")
            elif number == admin.port:
                problems.append(f"Service {service['metadata']['name']} exposes the admin port")
            elif port["port"] != number:
                problems.append(
                    f"Service {service['metadata']['name']} maps {port['port']} to {number}"
                )
    facing = {PORT_NAMES[o] for o in NODE_FIELDS.values()}
    service = find(docs, "Service", CONTROLPLANE)
    if {p["name"] for p in service["spec"]["ports"]} != facing:
        problems.append(f"Service {CONTROLPLANE} should carry exactly {sorted(facing)}")
    headless = find(docs, "Service", CONTROLPLANE_HEADLESS)
    if headless["spec"].get("clusterIP") != "None":
        problems.append(f"{CONTROLPLANE_HEADLESS} is not headless")
    if container.workload["spec"].get("serviceName") != CONTROLPLANE_HEADLESS:
        problems.append(f"the StatefulSet's serviceName is not {CONTROLPLANE_HEADLESS}")
    return problems


def probe_urls(container: Container) -> dict[str, list[tuple[str, int, str]]]:
    """``(host, port, path)`` of every http URL in each probe's exec command."""
    return {
        kind: [
            (host, int(port), path)
            for host, port, path in _HEALTHZ.findall(
                " ".join(probe.get("exec", {}).get("command", []))
            )
        ]
        for kind, probe in container.probes().items()
    }


def check_controlplane_probes(docs: list[dict[str, Any]]) -> list[str]:
    """Startup, liveness and readiness ask the admin server's /healthz on --admin."""
    container = controlplane_container(docs)
    admin = parse_listen(controlplane_params(docs)["admin"], "--admin")
    problems = []
    urls = probe_urls(container)
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        if urls.get(kind) != [(admin.host, admin.port, "/healthz")]:
            problems.append(f"{kind}: {urls.get(kind)}, not http://{admin}/healthz")
    return problems


def _installed(init: Container) -> dict[str, tuple[str, str]]:
    """What ``install -m 0400 -t DIR SRC…`` in ``init`` writes: file name → (the volume it
    lands on, the volume its source is on); empty for any other command."""
    command = [str(a) for a in init.spec.get("command", [])]
    if (
        command[:1] != ["install"]
        or "-t" not in command
        or "-m" not in command
        or command[command.index("-m") + 1] != "0400"
    ):
        return {}
    target = PurePosixPath(command[command.index("-t") + 1])
    landing = init.volume_at(target)
    found = {}
    for source in command[command.index("-t") + 2 :]:
        held = init.volume_at(PurePosixPath(source))
        if landing is not None and held is not None:
            found[PurePosixPath(source).name] = (landing[1]["name"], held[1]["name"])
    return found


def check_controlplane_files(docs: list[dict[str, Any]]) -> list[str]:
    """--data-dir is on the claim; the passphrase and credentials files are on a memory
    volume that an init container fills from the Secret, owner-only (0400): Kubernetes
    makes Secret files group-readable under an fsGroup, which the control plane refuses."""
    container = controlplane_container(docs)
    params = controlplane_params(docs)
    problems = []
    held = container.volume_at(params["data_dir"])
    if held is None or "persistentVolumeClaim" not in held[1]:
        problems.append(f"--data-dir {params['data_dir']} (audit.sqlite3) is not on a claim")
    volumes = {v["name"]: v for v in pod_spec(container.workload).get("volumes", [])}
    installed: dict[str, tuple[str, str]] = {}
    for init in containers(docs):
        if init.init and init.workload is container.workload:
            installed |= _installed(init)
    for option in ("ca_passphrase_file", "credentials_file"):
        path = PurePosixPath(params[option])
        held = container.volume_at(path)
        if held is None or held[1].get("emptyDir", {}).get("medium") != "Memory":
            problems.append(f"--{option}: {path} is not on a memory emptyDir")
            continue
        landing, source = installed.get(path.name, ("", ""))
        if landing != held[1]["name"] or "secret" not in volumes.get(source, {}):
            problems.append(f"no init container installs {path.name} (0400) from a Secret")
    return problems


def _loaded_agents(
    docs: list[dict[str, Any]], problems: list[str]
) -> Iterator[tuple[Container, AgentConfig]]:
    """Each agent container with its loaded node.yaml; one that does not load is added to
    ``problems`` (naming the container and every bad field) and skipped."""
    for agent in agent_containers(docs):
        try:
            config = node_config(docs, agent)
        except (ConfigError, AssertionError) as exc:
            problems.append(f"{agent.name}: {exc}")
            continue
        yield agent, config


def _envoy_of(docs: list[dict[str, Any]], agent: Container) -> Container:
    (envoy,) = [
        c
        for c in containers(docs)
        if c.workload is agent.workload and c.image.startswith("envoyproxy/envoy:")
    ]
    return envoy


def check_node_configs(docs: list[dict[str, Any]]) -> list[str]:
    """Every node's node.yaml loads with the agent's config model (with the container's
    overrides), names a distinct node, and dials the control plane where it listens."""
    params = controlplane_params(docs)
    statefulset = controlplane_container(docs).workload
    replicas = int(statefulset["spec"]["replicas"])
    hosts = {CONTROLPLANE} | {
        f"{statefulset['metadata']['name']}-{i}.{CONTROLPLANE_HEADLESS}" for i in range(replicas)
    }
    problems = []
    ids = []
    agents = agent_containers(docs)
    if len(agents) != 3:
        problems.append(f"{len(agents)} node workloads; compose runs edge, private, cloud")
    for agent, config in _loaded_agents(docs, problems):
        ids.append(config.node.id)
        plane = config.control_plane
        if plane.trust_domain != params["trust_domain"]:
            problems.append(f"{agent.name}: trust domain {plane.trust_domain}")
        for field, option in NODE_FIELDS.items():
            port = parse_listen(params[option], option).port
            addresses = [split_hostport(a) for a in getattr(plane, field)]
            if not addresses or {p for _, p in addresses} != {port}:
                problems.append(f"{agent.name}: control_plane.{field} {addresses}, not :{port}")
            if not {h for h, _ in addresses} <= hosts:
                problems.append(
                    f"{agent.name}: control_plane.{field} names a host not in {sorted(hosts)}"
                )
        if config.envoy.run:
            problems.append(f"{agent.name}: envoy.run must be false (the envoy container runs it)")
    if len(set(ids)) != len(ids):
        problems.append(f"node ids repeat: {ids}")
    return problems


def check_node_volumes(docs: list[dict[str, Any]]) -> list[str]:
    """The paths a node.yaml names are where the pod mounts them: secrets from a Secret,
    the trust bundle from a ConfigMap, the state on a volume that outlives the pod, every
    Unix socket directly in a mounted directory (an emptyDir starts empty, and the agent
    creates no socket directories), and what Envoy reads on a volume it shares."""
    problems = []
    for agent, config in _loaded_agents(docs, problems):
        envoy = _envoy_of(docs, agent)
        token = config.identity.join_token_file
        held = None if token is None else agent.volume_at(token)
        if held is None or "secret" not in held[1]:
            problems.append(f"{agent.name}: the join token {token} is not from a Secret")
        bundle = config.control_plane.trust_bundle_file
        held = None if bundle is None else agent.volume_at(bundle)
        if held is None or "configMap" not in held[1]:
            problems.append(f"{agent.name}: the trust bundle {bundle} is not from a ConfigMap")
        held = agent.volume_at(config.state_dir)
        if held is None or not ({"hostPath", "persistentVolumeClaim"} & set(held[1])):
            problems.append(f"{agent.name}: state_dir {config.state_dir} dies with the pod")
        sockets = [config.workload_socket, config.sds_socket]
        if config.envoy_admin_socket is not None:
            sockets.append(config.envoy_admin_socket)
        if config.authz.enabled:
            sockets.append(config.service_socket("authz", config.authz.listen))
        mounts = agent.mounts()
        for socket in sockets:
            if PurePosixPath(socket).parent not in mounts:
                problems.append(f"{agent.name}: {socket}'s directory is not a mount point")
        for shared in (config.bootstrap_path, config.sds_socket):
            mine, theirs = agent.volume_at(shared), envoy.volume_at(shared)
            if mine is None or theirs is None or mine[1]["name"] != theirs[1]["name"]:
                problems.append(f"{agent.name}: {shared} is not on a volume Envoy shares")
    return problems


def check_node_sidecars(docs: list[dict[str, Any]]) -> list[str]:
    """The agent is a native sidecar whose startup probe waits for the bootstrap (so Envoy
    starts after it, as compose's depends_on does); Envoy runs that bootstrap and its probes
    GET /ready on the ready listener each node's bootstrap compiles."""
    problems = []
    for agent, config in _loaded_agents(docs, problems):
        if not agent.sidecar:
            problems.append(f"{agent.name}: not an init container with restartPolicy Always")
        startup = agent.probes().get("startupProbe", {}).get("exec", {}).get("command")
        if startup != ["test", "-s", str(config.bootstrap_path)]:
            problems.append(f"{agent.name}: its startup probe does not wait for the bootstrap")
        envoy = _envoy_of(docs, agent)
        args = [str(a) for a in envoy.spec.get("args", [])]
        if "--config-path" not in args or args[args.index("--config-path") + 1] != str(
            config.bootstrap_path
        ):
            problems.append(f"{envoy.name}: Envoy does not run {config.bootstrap_path}")
        (listener,) = agent_bootstrap(config)["static_resources"]["listeners"]
        address = listener["address"]["socket_address"]
        dial = f"/dev/tcp/{address['address']}/{address['port_value']}"
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            command = " ".join(envoy.probes().get(kind, {}).get("exec", {}).get("command", []))
            if dial not in command or "GET /ready " not in command:
                problems.append(f"{envoy.name}: {kind} does not GET /ready at {dial}")
    return problems


def check_metrics_annotations(docs: list[dict[str, Any]]) -> list[str]:
    """Each pod's prometheus.io/port is the port its /metrics is served on: the control
    plane's --metrics, each node's metrics_listen, etcd's metrics URL."""
    problems = []
    serving: dict[str, int] = {}
    container = controlplane_container(docs)
    serving[container.workload["metadata"]["name"]] = parse_listen(
        controlplane_params(docs)["metrics"], "--metrics"
    ).port
    for agent in agent_containers(docs):
        config = node_config(docs, agent)
        if config.metrics_listen == "off":
            problems.append(f"{agent.name}: metrics_listen is off")
            continue
        host, port = split_hostport(config.metrics_listen)
        if host != "0.0.0.0":
            problems.append(f"{agent.name}: metrics_listen {config.metrics_listen} unreachable")
        if agent.ports().get("metrics") != port:
            problems.append(f"{agent.name}: containerPort metrics is not {port}")
        serving[agent.workload["metadata"]["name"]] = port
    for etcd in containers(docs):
        for arg in etcd.args():
            if arg.startswith("--listen-metrics-urls="):
                serving[etcd.workload["metadata"]["name"]] = int(arg.rsplit(":", 1)[1])
    for workload in workloads(docs):
        name = workload["metadata"]["name"]
        notes = workload["spec"]["template"]["metadata"].get("annotations", {})
        if notes.get("prometheus.io/scrape") != "true" or notes.get("prometheus.io/path") != (
            "/metrics"
        ):
            problems.append(f"{name}: not annotated for scraping /metrics")
        if name not in serving or notes.get("prometheus.io/port") != str(serving[name]):
            problems.append(
                f"{name}: prometheus.io/port {notes.get('prometheus.io/port')}, "
                f"/metrics is on {serving.get(name)}"
            )
    return problems


def _flag(args: list[str], flag: str) -> str:
    values = [a.split("=", 1)[1] for a in args if a.startswith(f"{flag}=")]
    assert len(values) == 1, f"{flag} given {len(values)} times"
    return values[0]


def _spread_by_host(workload: dict[str, Any]) -> bool:
    terms = (
        pod_spec(workload)
        .get("affinity", {})
        .get("podAntiAffinity", {})
        .get("requiredDuringSchedulingIgnoredDuringExecution", [])
    )
    return any(
        t.get("topologyKey") == "kubernetes.io/hostname"
        and selects(t.get("labelSelector", {}).get("matchLabels", {"": ""}), pod_labels(workload))
        for t in terms
    )


def _budgeted(docs: list[dict[str, Any]], workload: dict[str, Any]) -> bool:
    """A PodDisruptionBudget selects the pods and lets at most a minority go."""
    replicas = int(workload["spec"]["replicas"])
    for budget in of_kind(docs, "PodDisruptionBudget"):
        if not selects(budget["spec"]["selector"]["matchLabels"], pod_labels(workload)):
            continue
        spec = budget["spec"]
        if "maxUnavailable" in spec and 0 < int(spec["maxUnavailable"]) <= (replicas - 1) // 2:
            return True
        if "minAvailable" in spec and replicas // 2 + 1 <= int(spec["minAvailable"]) < replicas:
            return True
    return False


def check_high_availability(docs: list[dict[str, Any]]) -> list[str]:
    """Three control-plane replicas and three etcd members, one per host, each with a
    PodDisruptionBudget; etcd's members agree on the cluster and find each other by name."""
    problems = []
    plane = controlplane_container(docs).workload
    etcd = find(docs, "StatefulSet", ETCD)
    for workload in (plane, etcd):
        name = workload["metadata"]["name"]
        if int(workload["spec"]["replicas"]) < 3:
            problems.append(f"{name}: fewer than 3 replicas")
        if not _spread_by_host(workload):
            problems.append(f"{name}: no required podAntiAffinity on kubernetes.io/hostname")
        if not _budgeted(docs, workload):
            problems.append(f"{name}: no PodDisruptionBudget keeping a majority")
    replicas = int(etcd["spec"]["replicas"])
    if replicas % 2 == 0:
        problems.append(f"{ETCD}: an even member count ({replicas})")
    service = find(docs, "Service", etcd["spec"]["serviceName"])
    if service["spec"].get("clusterIP") != "None" or not service["spec"].get(
        "publishNotReadyAddresses"
    ):
        problems.append(f"{ETCD}: its Service is not headless with not-ready addresses")
    if etcd["spec"].get("podManagementPolicy") != "Parallel":
        problems.append(f"{ETCD}: members must start together (podManagementPolicy Parallel)")
    (member,) = [c for c in containers(docs) if c.workload is etcd]
    args = [str(a) for a in member.spec["args"]]
    domain = service["metadata"]["name"]
    expected = {
        f"{ETCD}-{i}": f"http://{ETCD}-{i}.{domain}:{member.ports()['peer']}"
        for i in range(replicas)
    }
    cluster = dict(e.split("=", 1) for e in _flag(args, "--initial-cluster").split(","))
    if cluster != expected:
        problems.append(f"{ETCD}: --initial-cluster {cluster}, pods are {expected}")
    if _flag(args, "--name") != "$(POD_NAME)":
        problems.append(f"{ETCD}: --name is not the pod's name")
    if _flag(args, "--initial-advertise-peer-urls") != (
        f"http://$(POD_NAME).{domain}:{member.ports()['peer']}"
    ):
        problems.append(f"{ETCD}: its peer URL is not its pod's name")
    client = member.ports()["client"]
    endpoints = controlplane_params(docs)["etcd"].split(",")
    wanted = [f"{ETCD}-{i}.{domain}:{client}" for i in range(replicas)]
    if sorted(endpoints) != wanted:
        problems.append(f"the control plane's --etcd {endpoints}, members are {wanted}")
    return problems


def check_services_select_pods(docs: list[dict[str, Any]]) -> list[str]:
    """Every Service selects pods, and each named targetPort is one of their ports."""
    problems = []
    for service in of_kind(docs, "Service"):
        name = service["metadata"]["name"]
        selected = pods_selected(docs, service["spec"]["selector"])
        if not selected:
            problems.append(f"Service {name} selects no pods")
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for workload in selected:
                names = {n for c in containers(docs) if c.workload is workload for n in c.ports()}
                if isinstance(target, str) and target not in names:
                    problems.append(
                        f"Service {name}: {workload['metadata']['name']} has no port {target}"
                    )
    return problems


# Containers allowed to run as root, and the only capabilities they may add.
ROOT_ALLOWED = {"tiermesh-node-edge/state-dir": {"CHOWN", "FOWNER"}}


def check_security_contexts(docs: list[dict[str, Any]]) -> list[str]:
    """Non-root, no privilege escalation, every capability dropped, read-only root file
    system, the runtime's seccomp profile, resources, no service-account token; the one
    exception (ROOT_ALLOWED) adds only what it needs."""
    problems = []
    for workload in workloads(docs):
        spec = pod_spec(workload)
        name = workload["metadata"]["name"]
        if spec.get("securityContext", {}).get("seccompProfile", {}).get("type") != (
            "RuntimeDefault"
        ):
            problems.append(f"{name}: no RuntimeDefault seccomp profile")
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{name}: mounts a service-account token it never uses")
    for container in containers(docs):
        pod = pod_spec(container.workload).get("securityContext", {})
        own = container.spec.get("securityContext", {})
        effective = {**pod, **own}
        added = set(own.get("capabilities", {}).get("add", []))
        allowed = ROOT_ALLOWED.get(container.name)
        if allowed is None and (
            effective.get("runAsNonRoot") is not True or effective.get("runAsUser", 1) == 0
        ):
            problems.append(f"{container.name}: may run as root")
        if not added <= (allowed or set()):
            problems.append(f"{container.name}: adds capabilities {sorted(added)}")
        if own.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{container.name}: allowPrivilegeEscalation is not false")
        if own.get("capabilities", {}).get("drop") != ["ALL"]:
            problems.append(f"{container.name}: does not drop ALL capabilities")
        if own.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{container.name}: writable root file system")
        if own.get("privileged"):
            problems.append(f"{container.name}: privileged")
        resources = container.spec.get("resources", {})
        if not resources.get("requests") or "memory" not in resources.get("limits", {}):
            problems.append(f"{container.name}: no requests or memory limit")
    return problems


def check_probes(docs: list[dict[str, Any]]) -> list[str]:
    """Every long-running container has a liveness probe and a startup or readiness probe."""
    problems = []
    for container in containers(docs):
        if not container.long_running:
            continue
        probes = container.probes()
        if "livenessProbe" not in probes:
            problems.append(f"{container.name}: no liveness probe")
        if not {"startupProbe", "readinessProbe"} & set(probes):
            problems.append(f"{container.name}: no startup or readiness probe")
    return problems


_SECRET_NAME = re.compile(r"TOKEN|PASSPHRASE|PASSWORD|SECRET|API_?KEY|CREDENTIAL", re.IGNORECASE)


def check_secrets(docs: list[dict[str, Any]]) -> list[str]:
    """Secrets reach containers as files, never env; no Secret object carries a value here
    (they are created by the commands in deploy/README.md); no Secret file is world-readable."""
    problems = []
    if of_kind(docs, "Secret"):
        problems.append("a Secret with values is in the manifests")
    for container in containers(docs):
        for entry in container.spec.get("env", []):
            if _SECRET_NAME.search(entry["name"]) or "secretKeyRef" in entry.get("valueFrom", {}):
                problems.append(f"{container.name}: env {entry['name']} carries a secret")
        if "envFrom" in container.spec:
            problems.append(f"{container.name}: envFrom")
    for workload in workloads(docs):
        for volume in pod_spec(workload).get("volumes", []):
            secret = volume.get("secret")
            if secret is not None and int(secret.get("defaultMode", 0o644)) & 0o007:
                problems.append(
                    f"{workload['metadata']['name']}: Secret {secret['secretName']}"
                    " files are world-readable"
                )
    return problems


def _rule_ports(rule: dict[str, Any]) -> set[str | int]:
    return {p["port"] for p in rule.get("ports", [])}


def check_network_policies(docs: list[dict[str, Any]]) -> list[str]:
    """Ingress is denied by default; the control plane's node-facing ports admit node pods
    (and the edge hosts' addresses) only, its metrics port the monitoring namespace only;
    etcd's client port admits the control plane (and its peers) only."""
    problems = []
    policies = of_kind(docs, "NetworkPolicy")
    if not any(p["spec"]["podSelector"] == {} and not p["spec"].get("ingress") for p in policies):
        problems.append("no default-deny ingress policy")
    plane_labels = pod_labels(controlplane_container(docs).workload)
    node_labels = [pod_labels(a.workload) for a in agent_containers(docs)]
    facing = {PORT_NAMES[o] for o in NODE_FIELDS.values()}
    etcd_labels = pod_labels(find(docs, "StatefulSet", ETCD))
    admitted_to_plane: set[str | int] = set()
    for policy in policies:
        selector = policy["spec"]["podSelector"].get("matchLabels", {})
        name = policy["metadata"]["name"]
        for rule in policy["spec"].get("ingress", []):
            ports = _rule_ports(rule)
            if not ports:
                problems.append(f"{name}: a rule admits every port")
            for peer in rule.get("from", []) or [{}]:
                chosen = peer.get("podSelector", {}).get("matchLabels")
                if selects(selector, plane_labels) and selector:
                    if ports & facing:
                        admitted_to_plane |= ports & facing
                        nodes_only = (
                            chosen is not None
                            and "namespaceSelector" not in peer
                            and all(selects(chosen, labels) for labels in node_labels)
                            and not selects(chosen, plane_labels)
                        )
                        if not nodes_only and "ipBlock" not in peer:
                            problems.append(f"{name}: node ports open to {peer}")
                    if "metrics" in ports and "namespaceSelector" not in peer:
                        problems.append(f"{name}: metrics open to {peer}")
                if selects(selector, etcd_labels) and selector and "client" in ports:
                    allowed = (
                        chosen is not None
                        and "namespaceSelector" not in peer
                        and (selects(chosen, plane_labels) or selects(chosen, etcd_labels))
                    )
                    if not allowed:
                        problems.append(f"{name}: etcd's client port open to {peer}")
    metrics_ports: set[str | int] = set()
    for agent in agent_containers(docs):
        listen = node_config(docs, agent).metrics_listen
        if listen != "off":
            metrics_ports.add(split_hostport(listen)[1])
    for policy in policies:
        selector = policy["spec"]["podSelector"].get("matchLabels", {})
        if selector and all(selects(selector, labels) for labels in node_labels):
            for rule in policy["spec"].get("ingress", []):
                admitted = sorted(map(str, _rule_ports(rule)))
                if _rule_ports(rule) - metrics_ports:
                    name = policy["metadata"]["name"]
                    problems.append(f"{name}: nodes admit {admitted}, not only /metrics")
    if admitted_to_plane != facing:
        problems.append(
            f"nodes may reach only {sorted(map(str, admitted_to_plane))} of the "
            f"control plane's {sorted(facing)}"
        )
    return problems


_SHELL_OPERATORS = (">", "<", "|", "&", ";", "2>", ")")
_SAMPLE_SHELL = {"box": "box-1"}


def readme_commands(text: str) -> list[list[str]]:
    """The shell lines of the ```sh blocks in ``text`` (one shell session), continuations
    joined, split into words (shlex), with ``NAME=value`` variables set by earlier lines
    (and ``$box`` as ``box-1``) expanded."""
    variables = dict(_SAMPLE_SHELL)

    def expand(word: str) -> str:
        return re.sub(
            r"\$\{?([A-Za-z_]+)\}?", lambda m: variables.get(m.group(1), m.group(0)), word
        )

    lines: list[list[str]] = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            words = [expand(w) for w in shlex.split(line, comments=True)]
            if len(words) == 1 and re.fullmatch(r"[A-Z_]+=\S+", words[0]):
                name, _, value = words[0].partition("=")
                variables[name] = value
            elif words:
                lines.append(words)
    return lines


def tiermesh_argv(words: list[str]) -> list[str] | None:
    """The arguments of the ``tiermesh`` this line runs (alone, or after ``kubectl exec …
    --``), up to the first shell operator; None when it runs none."""
    for i, word in enumerate(words):
        if word == "tiermesh" and (i == 0 or words[i - 1] in ("--", "do")):
            rest = words[i + 1 :]
            cut = next((j for j, w in enumerate(rest) if w.startswith(_SHELL_OPERATORS)), None)
            return rest if cut is None else rest[:cut]
    return None


def _from_files(words: list[str]) -> dict[str, str]:
    return dict(
        w.removeprefix("--from-file=").split("=", 1)
        for w in words
        if w.startswith("--from-file=") and "=" in w.removeprefix("--from-file=")
    )


def check_readme(docs: list[dict[str, Any]], text: str) -> list[str]:
    """deploy/README.md's commands: every tiermesh line parses with the real CLI, its
    ``--etcd`` names the members; every Secret and ConfigMap the pods mount but the
    manifests do not hold is created, with the keys the pods read; a join token is made for
    the private node, the cloud gateway and (per box) the edge nodes; the bundle is copied
    from where the control plane writes it."""
    problems = []
    lines = readme_commands(text)
    params = controlplane_params(docs)
    token_nodes = set()
    for words in lines:
        argv = tiermesh_argv(words)
        if argv is None:
            continue
        if any("$" in word for word in argv):
            problems.append(f"`tiermesh {' '.join(argv)}`: an unset variable")
        try:
            path, parsed = parse_cli(argv)
        except cli_errors.UsageError as exc:
            problems.append(f"`tiermesh {' '.join(argv)}`: {exc.format_message()}")
            continue
        if path == ("token", "create"):
            token_nodes.add(parsed["node_id"])
            if parsed["etcd"] != params["etcd"]:
                problems.append(f"token create --etcd {parsed['etcd']}, not the members")
    created: dict[tuple[str, str], dict[str, str]] = {}
    for words in lines:
        for kind in ("secret", "configmap"):
            if words[:1] == ["kubectl"] and f"create {kind}" in " ".join(words):
                name = (
                    words[words.index("generic") + 1]
                    if kind == "secret"
                    else (words[words.index("configmap") + 1])
                )
                created[(kind, name)] = _from_files(words)
    defined = {("secret", d["metadata"]["name"]) for d in of_kind(docs, "Secret")} | {
        ("configmap", d["metadata"]["name"]) for d in of_kind(docs, "ConfigMap")
    }
    for workload in workloads(docs):
        for volume in pod_spec(workload).get("volumes", []):
            for kind, key in (("secret", "secretName"), ("configmap", "name")):
                source = volume.get("secret" if kind == "secret" else "configMap")
                if source is None or (kind, source[key]) in defined:
                    continue
                if (kind, source[key]) not in created:
                    problems.append(f"nothing creates the {kind} {source[key]}")
    plane = controlplane_container(docs)
    needed = set()
    for init in containers(docs):
        if init.init and init.workload is plane.workload:
            needed |= set(_installed(init))
    if set(created.get(("secret", "tiermesh-controlplane"), {})) != needed:
        problems.append(f"the Secret tiermesh-controlplane must hold {sorted(needed)}")
    for agent in agent_containers(docs):
        config = node_config(docs, agent)
        bundle = config.control_plane.trust_bundle_file
        held = agent.volume_at(bundle) if bundle else None
        if (
            held
            and bundle
            and bundle.name not in created.get(("configmap", held[1]["configMap"]["name"]), {})
        ):
            problems.append(f"{agent.name}: no {bundle.name} in {held[1]['configMap']['name']}")
        token = config.identity.join_token_file
        held = agent.volume_at(token) if token else None
        if held and token and "secret" in held[1]:
            keys = set(created.get(("secret", held[1]["secret"]["secretName"]), {}))
            if "--node-id" not in agent.args() and token.name not in keys:
                problems.append(f"{agent.name}: no key {token.name} in the join Secret")
        if config.node.id not in token_nodes:
            problems.append(f"no `tiermesh token create` for {config.node.id}")
    data_dir = str(params["data_dir"])
    if not any(
        words[-2:] == ["cat", f"{data_dir}/bundle.pem"] or f"{data_dir}/bundle.pem" in words
        for words in lines
    ):
        problems.append(f"the bundle is not copied from {data_dir}/bundle.pem")
    return problems
