"""``compose/`` against the code it deploys: the real CLI, the agent's config model, the ports.

Compose files were written before the CLI existed and drifted from it (an option that was
never there, a port the control plane does not listen on, a secret a node reads but nobody
mounts). These tests parse every tiermesh command line with the real typer app, load every
``node.*.yaml`` with :func:`tiermesh.agents.config.load_config`, and hold the two together.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml

from tests.unit.compose.conftest import COMPOSE_DIR, COMPOSE_FILE
from tiermesh.agents.config import AgentConfig, load_config, split_hostport
from tiermesh.agents.runtime.envoy import agent_bootstrap
from tiermesh.cli.controlplane_cmd import parse_listen
from tiermesh.cli.envoy_cmd import parse_hostport
from tiermesh.cli.main import app
from tiermesh.xds import validate_bootstrap

# typer 0.2x parses with its vendored copy of click (typer._click): what a bad command line
# raises comes from there, not from the click package; older typer used click itself.
try:
    from typer._click import exceptions as cli_errors
except ImportError:  # pragma: no cover - typer on the real click
    from click import exceptions as cli_errors  # type: ignore[no-redef]

NODE_CONFIG_TARGET = "/etc/tiermesh/node.yaml"
_SHELL_OPERATORS = (">", "<", "|", "&", ";", "2>")
# `docker compose run|exec` options the header may use; none takes a value.
_COMPOSE_FLAGS = {"-T", "--rm", "-d", "--detach", "--no-deps"}


def parse_cli(argv: list[str]) -> tuple[tuple[str, ...], dict[str, Any]]:
    """Parse ``tiermesh ARGV`` as the real CLI would, without running it.

    Returns the subcommand path (``("controlplane", "run")``) and the parsed parameters.
    Raises ``UsageError`` (an unknown option or command, a missing required option, a bad
    value) exactly where ``tiermesh`` would refuse the line.
    """
    command: Any = typer.main.get_command(app)
    ctx: Any = None
    name, args, path = "tiermesh", list(argv), []
    while hasattr(command, "resolve_command"):  # a group: find its subcommand
        ctx = command.make_context(name, list(args), parent=ctx, resilient_parsing=False)
        found, sub, args = command.resolve_command(ctx, args)
        assert found is not None
        assert sub is not None
        command, name = sub, found
        path.append(found)
    leaf = command.make_context(name, list(args), parent=ctx, resilient_parsing=False)
    return tuple(path), dict(leaf.params)


def _is_tiermesh(service: dict[str, Any]) -> bool:
    return str(service.get("image", "")).split(":", 1)[0] == "tiermesh"


def _targets(service: dict[str, Any]) -> set[str]:
    return {
        entry if isinstance(entry, str) else entry.get("target", entry["source"])
        for entry in service.get("secrets") or []
    }


def _control_planes(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Parsed ``controlplane run`` parameters, by service name."""
    found = {}
    for name, service in services.items():
        if _is_tiermesh(service) and "command" in service:
            path, params = parse_cli(service["command"])
            if path == ("controlplane", "run"):
                found[name] = params
    assert len(found) >= 2, "two control-plane replicas"
    return found


def _agents(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> dict[str, tuple[Path, AgentConfig]]:
    """Each agent service's node file and its loaded config, by service name."""
    found = {}
    for name, service in services.items():
        for config in service.get("configs") or []:
            if config["target"] == NODE_CONFIG_TARGET:
                path = (COMPOSE_DIR / compose["configs"][config["source"]]["file"]).resolve()
                found[name] = (path, load_config(path))
    assert len(found) == 3, "the edge, private and cloud-gateway agents"
    return found


def header_commands(text: str) -> list[tuple[str, list[str], list[str]]]:
    """``docker compose run|exec`` lines of the leading comment block.

    Returns ``(service, argv, after)`` for each: argv is what follows the service name (for
    ``run``, the arguments of the image's ``tiermesh`` entrypoint), ``after`` the rest of the
    line from the first shell operator on (a redirection, say).
    """
    comment = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        comment.append(line[1:])
    found = []
    for line in "\n".join(comment).replace("\\\n", " ").splitlines():
        match = re.search(r"\bdocker compose (?:run|exec)\b.*", line)
        if match is None:
            continue
        words = shlex.split(match.group(0), comments=True)
        cut = next((i for i, w in enumerate(words) if w.startswith(_SHELL_OPERATORS)), len(words))
        words, after = words[:cut], words[cut:]
        rest = words[3:]
        while rest and rest[0].startswith("-"):
            flag = rest.pop(0)
            assert flag in _COMPOSE_FLAGS, f"{flag!r} in {line!r}: teach this test about it"
        assert rest, f"no service in {line!r}"
        service, argv = rest[0], rest[1:]
        if words[2] == "exec":
            # Only tiermesh is checked; another program in the container (cat, say) is not.
            argv = argv[1:] if argv[:1] == ["tiermesh"] else []
        found.append((service, argv, after))
    return found


def test_parse_cli_refuses_what_tiermesh_refuses() -> None:
    required = [
        "--etcd", "e:2379", "--trust-domain", "t", "--data-dir", "/d",
        "--ca-passphrase-file", "/p",
    ]  # fmt: skip
    path, params = parse_cli(["controlplane", "run", *required, "--join", "0.0.0.0:1"])
    assert path == ("controlplane", "run")
    assert params["join"] == "0.0.0.0:1"
    with pytest.raises(cli_errors.NoSuchOption):
        parse_cli(["controlplane", "run", *required, "--join-listen", "0.0.0.0:1"])
    with pytest.raises(cli_errors.MissingParameter):
        parse_cli(["controlplane", "run", *required[2:]])
    with pytest.raises(cli_errors.UsageError):
        parse_cli(["controlplane", "serve", *required])
    with pytest.raises(cli_errors.UsageError):
        parse_cli(["agent", "run", "--config"])


def test_header_commands_are_found() -> None:
    text = (
        "# a\n#   docker compose exec -T cp tiermesh token create --x 1 \\\n"
        "#       --y 2 > out.txt   # note\n"
        "#   docker compose run --rm -T cp token create --z 3\n"
        "#   docker compose exec -T cp cat /f > g\nservices: {}\n"
        "# docker compose run --rm cp not-in-the-header\n"
    )
    assert header_commands(text) == [
        ("cp", ["token", "create", "--x", "1", "--y", "2"], [">", "out.txt"]),
        ("cp", ["token", "create", "--z", "3"], []),
        ("cp", [], [">", "g"]),
    ]


def test_service_commands_parse_with_the_real_cli(services: dict[str, dict[str, Any]]) -> None:
    parsed = 0
    for name, service in services.items():
        if not _is_tiermesh(service) or "command" not in service:
            continue
        try:
            parse_cli(service["command"])
        except cli_errors.UsageError as exc:
            pytest.fail(
                f"{name}: `tiermesh {' '.join(service['command'])}`: {exc.format_message()}"
            )
        parsed += 1
    assert parsed >= 5, "two control planes and three agents"


def test_header_commands_parse_with_the_real_cli(services: dict[str, dict[str, Any]]) -> None:
    commands = header_commands(COMPOSE_FILE.read_text(encoding="utf-8"))
    parsed = 0
    for service, argv, _ in commands:
        assert service in services, f"the header runs a command in unknown service {service}"
        if not _is_tiermesh(services[service]) or not argv:
            continue
        try:
            parse_cli(argv)
        except cli_errors.UsageError as exc:
            pytest.fail(f"header: `tiermesh {' '.join(argv)}`: {exc.format_message()}")
        parsed += 1
    assert parsed, "the header's bring-up steps run tiermesh"


def test_header_creates_a_join_token_for_every_node(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    written: dict[str, str] = {}
    for _, argv, after in header_commands(COMPOSE_FILE.read_text(encoding="utf-8")):
        if argv and parse_cli(argv)[0] == ("token", "create"):
            assert after[:1] == [">"], f"the token of `{' '.join(argv)}` goes nowhere"
            assert len(after) >= 2, f"the token of `{' '.join(argv)}` goes nowhere"
            written[parse_cli(argv)[1]["node_id"]] = after[1]
    for name, (_, config) in _agents(compose, services).items():
        (source,) = [s["source"] for s in services[name]["secrets"] if s["target"] == "join_token"]
        assert config.node.id in written, f"no `token create` for node {config.node.id}"
        assert f"./{written[config.node.id]}" == compose["secrets"][source]["file"], name


def test_header_fetches_the_trust_bundle_the_control_plane_writes(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    data_dirs = {str(p["data_dir"]) for p in _control_planes(services).values()}
    bundle_file = compose["secrets"]["trust_bundle"]["file"].removeprefix("./")
    text = COMPOSE_FILE.read_text(encoding="utf-8").replace("\\\n#", " ")
    assert any(
        re.search(rf"{re.escape(d)}/bundle\.pem\s+>\s*{re.escape(bundle_file)}", text)
        for d in data_dirs
    ), f"the header copies <--data-dir>/bundle.pem to {bundle_file}"


def test_control_plane_addresses_are_valid(services: dict[str, dict[str, Any]]) -> None:
    for name, params in _control_planes(services).items():
        for part in params["etcd"].split(","):
            host, _ = parse_hostport(part.strip(), "--etcd")
            assert host in services, f"{name}: --etcd names {host}, not a service"
        listen = {key: parse_listen(params[key], key) for key in ("listen", "node_api", "join")}
        assert listen["join"].host == listen["node_api"].host, f"{name}: --join binds there"
        assert params["admin"].startswith("127.0.0.1:"), f"{name}: admin stays on loopback"
        healthcheck = " ".join(services[name]["healthcheck"]["test"])
        assert str(listen["listen"].port) in healthcheck, f"{name} checks another port"


def test_node_files_validate_with_the_agent_config_model(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    on_disk = {path.resolve() for path in COMPOSE_DIR.glob("node.*.yaml")}
    for path in on_disk:
        load_config(path)  # raises ConfigError naming every bad field
    mounted = {path for path, _ in _agents(compose, services).values()}
    assert on_disk == mounted, "every node file is an agent's config, and only those"


def test_node_files_agree_with_the_control_plane(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    planes = _control_planes(services)
    hosts = {services[name].get("hostname", name) for name in planes}
    for key in ("listen", "node_api", "join"):
        assert len({parse_listen(p[key], key).port for p in planes.values()}) == 1, key
    params = next(iter(planes.values()))
    expected = {
        "ads": parse_listen(params["listen"], "--listen").port,
        "node_api": parse_listen(params["node_api"], "--node-api").port,
        "join": parse_listen(params["join"], "--join").port,
    }
    for name, (path, config) in _agents(compose, services).items():
        plane = config.control_plane
        assert plane.trust_domain == params["trust_domain"], path.name
        for field, port in expected.items():
            addresses = [split_hostport(a) for a in getattr(plane, field)]
            assert {p for _, p in addresses} == {port}, f"{path.name}: control_plane.{field}"
            assert {h for h, _ in addresses} <= hosts, f"{path.name}: control_plane.{field}"
        assert services[name]["hostname"] == config.node.id, name


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for item in value.values() for s in _strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


def test_node_file_secrets_are_mounted_on_their_agent(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    for name, (path, config) in _agents(compose, services).items():
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        used = {
            match
            for text in _strings(document)
            for match in re.findall(r"/run/secrets/([^/\s]+)", text)
        }
        assert config.identity.join_token_file is not None, path.name
        assert config.control_plane.trust_bundle_file is not None, path.name
        for needed in (config.identity.join_token_file, config.control_plane.trust_bundle_file):
            assert needed.parent == Path("/run/secrets"), f"{path.name}: {needed}"
            used.add(needed.name)
        missing = used - _targets(services[name])
        assert not missing, f"{path.name} reads /run/secrets/{sorted(missing)}; {name} lacks them"


def _volume_targets(service: dict[str, Any]) -> dict[str, str]:
    found = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume["source"], volume["target"]
        found[target] = source
    return found


def _volume_of(path: Path, volumes: dict[str, str]) -> str | None:
    for target, source in volumes.items():
        if path.is_relative_to(target):
            return source
    return None


def test_node_file_paths_live_on_the_agents_volumes(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    for name, (path, config) in _agents(compose, services).items():
        agent = services[name]
        assert agent["command"][:2] == ["agent", "run"], name
        assert parse_cli(agent["command"])[1]["config"] == Path(NODE_CONFIG_TARGET), name
        volumes = _volume_targets(agent)
        for used in (config.state_dir, config.workload_socket, config.sds_socket):
            assert _volume_of(used, volumes), f"{path.name}: {used} is on no volume of {name}"
        sidecars = [s for s in services.values() if s.get("network_mode") == f"service:{name}"]
        assert len(sidecars) == 1, f"{name} has one Envoy sidecar"
        (envoy,) = sidecars
        bootstrap = envoy["command"][envoy["command"].index("--config-path") + 1]
        assert Path(bootstrap) == config.bootstrap_path, f"{name}: Envoy reads another file"
        shared = _volume_of(config.bootstrap_path, volumes)
        assert shared, f"{name}: {config.bootstrap_path} is on no volume"
        assert shared == _volume_of(config.sds_socket, _volume_targets(envoy)), name
        assert config.envoy.run is False, f"{path.name}: the sidecar runs Envoy, not the agent"


def _socket_addresses(cluster: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        lb["endpoint"]["address"]["socket_address"]
        for locality in cluster.get("load_assignment", {}).get("endpoints", [])
        for lb in locality["lb_endpoints"]
        if "socket_address" in lb["endpoint"]["address"]
    ]


def test_node_bootstraps_resolve_host_names_with_dns(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    """Envoy refuses a STATIC cluster with a host name ("malformed IP address:
    controlplane-1"), and the sidecar runs exactly the bootstrap the agent writes."""
    for name, (path, config) in _agents(compose, services).items():
        document = agent_bootstrap(config)
        validate_bootstrap(document)
        clusters = {c["name"]: c for c in document["static_resources"]["clusters"]}
        servers = [split_hostport(address) for address in config.control_plane.ads]
        assert _socket_addresses(clusters["tiermesh_xds"]) == [
            {"address": host, "port_value": port} for host, port in servers
        ], f"{name}: the ADS cluster does not list every control-plane replica"
        ads_host = servers[0][0]
        for cluster in clusters.values():
            for address in _socket_addresses(cluster):
                if not _is_ip(address["address"]):
                    assert cluster["type"] in ("STRICT_DNS", "LOGICAL_DNS"), (
                        f"{path.name}: cluster {cluster['name']} is {cluster['type']} "
                        f"with host name {address['address']!r}"
                    )
        assert not _is_ip(ads_host), f"{path.name}: compose reaches the control plane by name"
        expected = "LOGICAL_DNS" if len(servers) == 1 else "STRICT_DNS"
        assert clusters["tiermesh_xds"]["type"] == expected, path.name
        tls = clusters["tiermesh_xds"]["transport_socket"]["typed_config"]
        assert tls["sni"] == config.control_plane.tls_server_name, path.name
        admin = document["admin"]["address"]
        assert "socket_address" not in admin, f"{path.name}: Envoy's admin is on a port"
        assert admin["pipe"]["mode"] == 0o600, path.name
        assert admin["pipe"]["path"].startswith("/run/tiermesh/"), path.name


def test_envoy_health_checks_use_the_ready_listener_not_admin(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    """The sidecar's health check dials the ready listener each node's bootstrap compiles
    (the admin interface is on a private socket and answers nothing on a port)."""
    for name, (path, config) in _agents(compose, services).items():
        document = agent_bootstrap(config)
        (listener,) = document["static_resources"]["listeners"]
        address = listener["address"]["socket_address"]
        envoy = services[name.replace("-agent", "-envoy")]
        command = " ".join(envoy["healthcheck"]["test"])
        assert f"/dev/tcp/{address['address']}/{address['port_value']}" in command, path.name
        assert "GET /ready " in command, path.name


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
