"""What the Compose schema cannot see: references between services, pins, secrets, etcd."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import pytest
import yaml

from tests.unit.compose.conftest import COMPOSE_DIR

# A tag that names a version: v1.40.0, 3.5.21, 0.1.0, 3.11-slim-bookworm …; never "latest".
_VERSION_TAG = re.compile(r"^v?\d+(\.\d+)+([-_.][A-Za-z0-9_.-]+)?$")
_SECRET_NAME = re.compile(r"TOKEN|PASSPHRASE|PASSWORD|SECRET|API_?KEY|CREDENTIAL", re.IGNORECASE)


def _depends_on(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: {"condition": "service_started"} for name in deps}
    return dict(deps)


def _names(entries: list[Any] | None, key: str = "source") -> list[str]:
    return [entry if isinstance(entry, str) else entry[key] for entry in entries or []]


def _flag(command: list[str], flag: str) -> str:
    values = [arg.split("=", 1)[1] for arg in command if arg.startswith(f"{flag}=")]
    assert len(values) == 1, f"{flag} given {len(values)} times in {command}"
    return values[0]


def _etcd_members(services: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    return {
        name: service["command"]
        for name, service in services.items()
        if service.get("image", "").split(":")[0].endswith("/etcd")
    }


def test_every_image_is_pinned_to_a_version_tag(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        image = service.get("image")
        assert image, f"{name} has no image (a build needs one too, so it is tagged)"
        reference = image.split("@", 1)[0]
        repository, _, tag = reference.rpartition(":")
        assert repository, f"{name}: {image} has no tag"
        assert "/" not in tag, f"{name}: {image} has no tag"
        assert "latest" not in tag, f"{name}: {image} floats"
        assert _VERSION_TAG.match(tag), f"{name}: {image} is not a version tag"


def test_official_images_are_the_ones_deployed(services: dict[str, dict[str, Any]]) -> None:
    images = {service["image"].rsplit(":", 1)[0] for service in services.values()}
    assert images & {"quay.io/coreos/etcd", "gcr.io/etcd-development/etcd"}
    assert "envoyproxy/envoy" in images
    built = [name for name, service in services.items() if "build" in service]
    assert built, "the tiermesh image is built from compose/Dockerfile"
    for name in built:
        assert services[name]["build"]["dockerfile"] == "compose/Dockerfile", name
        assert (COMPOSE_DIR / services[name]["build"]["context"]).resolve() == COMPOSE_DIR.parent


def test_depends_on_names_existing_services(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for dependency in _depends_on(service):
            assert dependency in services, f"{name} depends on unknown {dependency}"
            assert dependency != name


def test_healthy_conditions_wait_on_a_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for dependency, spec in _depends_on(service).items():
            if spec["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits on {dependency}"


def test_every_service_has_a_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    assert [name for name, s in services.items() if "healthcheck" not in s] == []


def test_sidecars_share_their_agents_namespace(services: dict[str, dict[str, Any]]) -> None:
    sidecars = {
        name: service["network_mode"].removeprefix("service:")
        for name, service in services.items()
        if str(service.get("network_mode", "")).startswith("service:")
    }
    agents = [name for name, s in services.items() if "agent" in s.get("command", [])]
    assert sorted(sidecars.values()) == sorted(agents)
    for sidecar, agent in sidecars.items():
        assert services[sidecar]["image"].startswith("envoyproxy/envoy:")
        assert _depends_on(services[sidecar])[agent]["condition"] == "service_healthy"


def test_the_topology_has_every_tier(services: dict[str, dict[str, Any]]) -> None:
    assert len(_etcd_members(services)) >= 3
    control_planes = [
        n for n, s in services.items() if s.get("command", [None])[0] == "controlplane"
    ]
    assert len(control_planes) >= 2
    agents = [s for s in services.values() if s.get("command", [])[:2] == ["agent", "run"]]
    assert len(agents) == 3
    for agent in agents:
        assert agent["command"] == ["agent", "run", "--config", "/etc/tiermesh/node.yaml"]


def test_used_secrets_volumes_networks_and_configs_are_declared(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    for name, service in services.items():
        for secret in _names(service.get("secrets")):
            assert secret in compose["secrets"], f"{name} uses undeclared secret {secret}"
        for config in _names(service.get("configs")):
            assert config in compose["configs"], f"{name} uses undeclared config {config}"
        for network in service.get("networks") or []:
            assert network in compose["networks"], f"{name} uses undeclared network {network}"
        for volume in service.get("volumes") or []:
            source = volume.split(":", 1)[0] if isinstance(volume, str) else volume["source"]
            if not source.startswith((".", "/")):
                assert source in compose["volumes"], f"{name} uses undeclared volume {source}"


def test_declared_secrets_are_files_that_git_ignores(compose: dict[str, Any]) -> None:
    ignore = (COMPOSE_DIR / "secrets" / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert "*" in ignore
    for name, secret in compose["secrets"].items():
        assert secret["file"].startswith("./secrets/"), name


def test_secrets_never_travel_as_environment(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        environment = service.get("environment") or {}
        keys = (
            environment if isinstance(environment, dict) else [e.split("=")[0] for e in environment]
        )
        assert [k for k in keys if _SECRET_NAME.search(k)] == [], name
        assert "env_file" not in service, f"{name}: secrets go through compose secrets"


def test_secret_paths_in_commands_are_mounted(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        targets = set(_names(service.get("secrets"), key="target"))
        for arg in service.get("command") or []:
            for used in re.findall(r"/run/secrets/([\w.-]+)", arg):
                assert used in targets, f"{name} reads /run/secrets/{used}, not mounted"


def test_etcd_initial_cluster_lists_every_member_consistently(
    services: dict[str, dict[str, Any]],
) -> None:
    members = _etcd_members(services)
    assert len(members) % 2 == 1
    clusters = {_flag(command, "--initial-cluster") for command in members.values()}
    assert len(clusters) == 1, f"members disagree on --initial-cluster: {clusters}"
    entries = dict(entry.split("=", 1) for entry in clusters.pop().split(","))
    names = {_flag(command, "--name"): command for command in members.values()}
    assert set(entries) == set(names)
    for member, command in names.items():
        assert entries[member] == _flag(command, "--initial-advertise-peer-urls")
    assert len({_flag(c, "--initial-cluster-token") for c in members.values()}) == 1
    assert {_flag(c, "--initial-cluster-state") for c in members.values()} == {"new"}


def _host_ports(ports: list[Any]) -> list[tuple[int, str]]:
    bound: list[tuple[int, str]] = []
    for port in ports:
        if isinstance(port, dict):
            if "published" in port:
                bound.append((int(port["published"]), port.get("protocol", "tcp")))
            continue
        spec, _, protocol = str(port).partition("/")
        parts = spec.rsplit(":", 2)
        if len(parts) >= 2:  # "container" alone publishes an ephemeral port
            bound.append((int(parts[-2]), protocol or "tcp"))
    return bound


@pytest.mark.parametrize(
    ("ports", "expected"),
    [
        (["127.0.0.1:10000:10000"], [(10000, "tcp")]),
        (["8080:80/udp"], [(8080, "udp")]),
        (["80"], []),
        ([{"target": 80, "published": 8000}], [(8000, "tcp")]),
    ],
)
def test_host_port_parsing(ports: list[Any], expected: list[tuple[int, str]]) -> None:
    assert _host_ports(ports) == expected


def test_host_ports_are_unique(services: dict[str, dict[str, Any]]) -> None:
    bound = [port for s in services.values() for port in _host_ports(s.get("ports") or [])]
    assert bound, "the app listeners are published"
    assert [port for port, count in Counter(bound).items() if count > 1] == []


def test_node_configs_match_their_services(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    node_ids = []
    for name, service in services.items():
        if service.get("command", [])[:2] != ["agent", "run"]:
            continue
        (config,) = service.get("configs") or []
        assert config["target"] == "/etc/tiermesh/node.yaml"
        path = COMPOSE_DIR / compose["configs"][config["source"]]["file"]
        node = yaml.safe_load(path.read_text(encoding="utf-8"))
        node_ids.append(node["node"]["id"])
        assert service["hostname"] == node["node"]["id"], name
        mounted = {f"/run/secrets/{t}" for t in _names(service.get("secrets"), key="target")}
        assert node["identity"]["join_token_file"] in mounted, name
    assert sorted(node_ids) == ["cloud-gw-1", "edge-1", "private-1"]
