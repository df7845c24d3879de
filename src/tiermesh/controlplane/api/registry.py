"""The node registry API: how a node tells the control plane what it is and how loaded it is.

gRPC service :data:`NODE_REGISTRY_SERVICE`, one bidirectional-streaming method
:data:`SESSION_METHOD`, served on the control plane's mTLS *node* port. Messages are these
models as UTF-8 JSON (``model_dump_json`` / ``model_validate_json``), like
:mod:`tiermesh.controlplane.api.join`. Version ``v1``: fields are only ever added with
defaults; an incompatible change gets a new service name.

A session, node → control plane (:class:`SessionMessage`):

1. The first message holds a :class:`NodeRegistration`. The control plane checks it against
   the client SVID (``spiffe://<td>/node/<node-id>``): ``node_id`` must be the SVID's node id
   and every endpoint must belong to that node (:func:`endpoint_owner`). It then writes a
   :class:`RegisteredNode` under an etcd lease it keeps alive while the stream lives, and
   answers with a :class:`SessionReply`.
2. Later messages carry a :class:`NodeLoad` (written at most once per
   ``SessionReply.load_interval_s``; a burst is coalesced and the newest value is written),
   a new registration of the same node (re-checked, rewritten, answered again), or, when
   the reply said ``usage_reports``, a :class:`UsageReport`: per-tenant spend the node
   accounted since its last report. The control plane adds each tenant's delta to the
   mesh-wide counters of the report's month (``usage/<YYYY-MM>/<tenant>``, the policy's
   ``data.usage`` is the current month's) and answers with a
   :class:`SessionReply` whose ``usage`` (:class:`UsageAck`) carries the mesh-wide totals of
   the reported tenants. Delivery is at least once: the node re-sends a report until it is
   acknowledged, on a new session if need be; a control plane skips a report it already
   applied (same ``epoch``, ``seq`` not above the last applied) only while it remembers
   it (one replica, its process lifetime), so a report applied just before a session or a
   replica broke may count twice. Over-counting spend only brings a tenant's budget
   fallback earlier, never later.
3. A message with ``goodbye`` (or the client half-closing the stream) ends the session
   gracefully: the lease is revoked and the registration disappears at once. A session that
   breaks without goodbye (the node crashed, the network or the control plane went away)
   stops refreshing its lease, and the registration expires ``lease_ttl_s`` later unless the
   node reconnects first (a new registration supersedes the stale one).

Bundle announcements, control plane → node: every :class:`SessionReply` names the bundle
the control plane serves (``bundle``), and when that changes the control plane sends one
more reply unasked. The node then fetches the bundle's request policy with the unary
method of :mod:`tiermesh.controlplane.api.request_policy` on the same service.

Status codes: UNAUTHENTICATED (no verified node SVID), PERMISSION_DENIED (a claim the SVID
does not cover: another node id, another node's endpoint), INVALID_ARGUMENT (undecodable
message, a first message that is not a registration, none within the server's first-message
timeout), RESOURCE_EXHAUSTED (a message over :data:`MAX_SESSION_MESSAGE_BYTES`), UNAVAILABLE
(the control plane lost its store or the lease; reconnect and register again). Nothing is
written for a refused message; a refusal ends the session (its lease is revoked). A usage
report the contract refuses (an empty or malformed tenant name, more than
:data:`MAX_USAGE_TENANTS` tenants, a negative or huge amount) is undecodable, so
INVALID_ARGUMENT, and none of its tenants is counted.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import UTC, datetime
from typing import Annotated, Final, Literal, Self

from pydantic import AwareDatetime, Field, StringConstraints, field_validator, model_validator

from tiermesh.controlplane.api._base import Contract, Name, Tier
from tiermesh.controlplane.api.request_policy import BundleRef

__all__ = [
    "ENDPOINT_NAME_RULE",
    "MAX_ANSWER_KEYS",
    "MAX_ENDPOINTS",
    "MAX_LABELS",
    "MAX_SESSION_MESSAGE_BYTES",
    "MAX_SOCKET_PATH",
    "MAX_USAGE_AMOUNT",
    "MAX_USAGE_TENANTS",
    "NODE_REGISTRY_SERVICE",
    "REGISTRY_VERSION",
    "SESSION_METHOD",
    "AnswerCounts",
    "FallbackReason",
    "ModelAttestation",
    "NodeEndpoint",
    "NodeLoad",
    "NodeRegistration",
    "RegisteredNode",
    "SessionMessage",
    "SessionReply",
    "UnixSocketPath",
    "UsageAck",
    "UsageDelta",
    "UsageMonth",
    "UsageReport",
    "UsageTotal",
    "endpoint_owner",
    "registry_method_path",
    "usage_month",
]

REGISTRY_VERSION: Final = "v1"
"""Version of this contract; part of the service name."""

NODE_REGISTRY_SERVICE: Final = f"tiermesh.node.{REGISTRY_VERSION}.NodeRegistry"
"""Fully qualified gRPC service name."""

SESSION_METHOD: Final = "Session"
"""Method name: the node's registration session (bidirectional stream)."""

MAX_SESSION_MESSAGE_BYTES: Final = 64 * 1024
"""Largest message the server accepts (gRPC max receive size of the node port)."""

MAX_ENDPOINTS: Final = 32
"""Most endpoints one node may register."""

MAX_LABELS: Final = 32
"""Most labels one node may carry."""

MAX_USAGE_TENANTS: Final = 256
"""Most tenants one :class:`UsageReport` may carry (a node with more splits its deltas
over several reports)."""

UsageMonth = Annotated[str, StringConstraints(pattern=r"^[0-9]{4}-(0[1-9]|1[0-2])$")]
"""A calendar month in UTC, ``YYYY-MM``: the period usage counters and monthly budgets
cover. The catalog has no time zone or reset day; a month starts at 00:00 UTC on its
first day everywhere in the mesh."""


def usage_month(moment: datetime) -> str:
    """The :data:`UsageMonth` of ``moment`` (a naive datetime is taken as UTC)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return f"{moment.year:04d}-{moment.month:02d}"


MAX_USAGE_AMOUNT: Final = 10**15
"""Largest token count or micro-dollar amount one report may add for one tenant
(10^9 USD): a bound against garbage, far above any real month."""

ENDPOINT_NAME_RULE: Final = (
    "'<node-id>' or '<node-id>.<name>', <name> being 1-63 characters of a-z, 0-9, '_' and "
    "'-' starting with a letter or digit"
)
"""Which endpoint names a node may claim. Node ids never contain ``.``, so the owner of an
endpoint name is unambiguous: everything before the first ``.``."""

_NODE_ID = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_ENDPOINT_NAME = re.compile(rf"({_NODE_ID})(?:\.([a-z0-9][a-z0-9_-]{{0,62}}))?")

NodeId = Annotated[str, StringConstraints(pattern=rf"^{_NODE_ID}$")]
"""A node id: one lowercase DNS label, as in the node's SPIFFE ID."""

LabelKey = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._/-]{0,62}$")]
LabelValue = Annotated[str, StringConstraints(max_length=256)]


def registry_method_path(method: str = SESSION_METHOD) -> str:
    """The gRPC path of ``method`` (``/tiermesh.node.v1.NodeRegistry/Session``)."""
    return f"/{NODE_REGISTRY_SERVICE}/{method}"


def endpoint_owner(name: str) -> str | None:
    """The node id an endpoint name belongs to (see :data:`ENDPOINT_NAME_RULE`), or None
    if ``name`` is not a well-formed endpoint name. Pure."""
    found = _ENDPOINT_NAME.fullmatch(name)
    return None if found is None else found.group(1)


class NodeEndpoint(Contract):
    """One network endpoint the node serves, e.g. its local model server."""

    name: str = Field(min_length=1, max_length=127)
    """The endpoint's name, following :data:`ENDPOINT_NAME_RULE` (``edge-1`` or
    ``edge-1.llama``). A node may only claim names it owns (:func:`endpoint_owner`)."""
    host: str = Field(min_length=1, max_length=253)
    """Host name or IP address other nodes reach the endpoint at. Not checked against the
    connection's address (nodes may sit behind NAT); the name rule is what binds it to the
    node."""
    port: int = Field(ge=1, le=65535)
    """TCP port."""
    tls: bool = False
    """True if the endpoint expects mTLS with the node's SVID (peers then check the SAN)."""

    @model_validator(mode="after")
    def _well_formed_name(self) -> Self:
        if endpoint_owner(self.name) is None:
            raise ValueError(f"endpoint name {self.name!r} must be {ENDPOINT_NAME_RULE}")
        return self


MAX_SOCKET_PATH: Final = 107
"""Longest Unix socket path, in bytes (``sun_path`` is 108 bytes with the final NUL)."""

UnixSocketPath = Annotated[
    str, StringConstraints(min_length=2, max_length=MAX_SOCKET_PATH, pattern=r"^/[^\x00]*$")
]
"""An absolute path of a Unix socket (ASCII length checked; at most :data:`MAX_SOCKET_PATH`)."""


class NodeRegistration(Contract):
    """What a node claims about itself: its id, placement, app port and its own endpoints."""

    version: Literal["v1"] = "v1"
    """Format version."""
    node_id: NodeId
    """The node's id; must be the ``<node-id>`` of the client SVID."""
    tier: Tier
    """The node's own tier (``local``, ``private``, ``cloud``)."""
    region: str = Field(min_length=1, max_length=63)
    """Region; backends in the same region are preferred among equals."""
    residency: tuple[Annotated[str, StringConstraints(min_length=1, max_length=63)], ...] = Field(
        default=(), max_length=16
    )
    """Residency tags of the node's location, e.g. ``("eu",)``."""
    app_port: int = Field(ge=1, le=65535)
    """Port of the node's app listener on 127.0.0.1: where its apps send inference
    requests (``http://127.0.0.1:<app_port>/v1/...``). The compiled listener binds it."""
    endpoints: tuple[NodeEndpoint, ...] = Field(default=(), max_length=MAX_ENDPOINTS)
    """Endpoints the node serves, names unique, each owned by ``node_id``."""
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict, max_length=MAX_LABELS)
    """Free-form labels (``hardware: rpi5``); informational."""
    authz_port: int | None = Field(default=None, ge=1, le=65535)
    """Port of the node's ext_authz server on 127.0.0.1 (plaintext gRPC
    ``envoy.service.auth.v3.Authorization``, default body limit), or None: no request-time
    policy. With it the compiled app listener runs ext_authz before routing and fails
    closed. Added within ``v1``: a node that omits it is read as before; a control plane
    older than the field refuses a registration that sets it (upgrade the control planes
    first)."""
    usage_port: int | None = Field(default=None, ge=1, le=65535)
    """Port of the node's access-log server on 127.0.0.1 (plaintext gRPC
    ``envoy.service.accesslog.v3.AccessLogService``), or None: no usage accounting. With
    it the compiled app listener reads each answer's token usage and logs it there
    (best effort, never failing a request). Added within ``v1`` like ``authz_port``."""
    cascade_port: int | None = Field(default=None, ge=1, le=65535)
    """Port of the node's confidence cascade handler on 127.0.0.1 (plaintext HTTP/1.1), or
    None: routes of ``cascade`` tasks compile as plain failover chains. With it they go to
    the handler, which asks the chain's steps through per-step routes and serves one
    answer. Added within ``v1`` like ``authz_port``."""
    cascade_token: str | None = Field(
        default=None, min_length=16, max_length=128, pattern=r"^[A-Za-z0-9_-]+$", repr=False
    )
    """Ignored; accepted so that older agents still register. Agents used to send their
    cascade handler's secret here for the per-step routes to match; those routes now
    match ext_authz's metadata (:data:`~tiermesh.controlplane.api.CASCADE_STEP_METADATA`)
    and the secret never leaves the node. The control plane does not store it."""
    authz_socket: UnixSocketPath | None = None
    """Unix socket of the node's ext_authz server (absolute path, the same gRPC service as
    ``authz_port``), or None. Loopback is not a trust boundary: any local process can call a
    TCP port, so agents serve node-local services on sockets of mode 0600 in their state
    directory and register those instead; only the node's own Unix user (its agent and
    Envoy) can connect. When both are set the socket wins and the port is ignored; a node
    that sets neither has no request-time policy. Added within ``v1`` like ``authz_port``
    (agents that register ports keep working)."""
    usage_socket: UnixSocketPath | None = None
    """Unix socket of the node's access-log server, or None; wins over ``usage_port`` like
    ``authz_socket``. Added within ``v1`` like ``authz_port``."""
    cascade_socket: UnixSocketPath | None = None
    """Unix socket of the node's cascade handler (plaintext HTTP/1.1), or None; wins over
    ``cascade_port`` like ``authz_socket``. Added within ``v1`` like ``authz_port``."""
    batch_socket: UnixSocketPath | None = None
    """Unix socket of the node's batch service (``/v1/files``, ``/v1/batches``; plaintext
    HTTP/1.1), or None: the node compiles no batch route. Added within ``v1`` like
    ``authz_port``."""
    mesh_port: int | None = Field(default=None, ge=1, le=65535)
    """Port of the node's inbound mTLS listener (on ``mesh_host``), or None: no node-to-node
    mTLS. With it, and a model server among ``endpoints`` (the first one without ``tls``,
    reached on loopback unless its host is a specific IP address), the control plane
    compiles a listener on this port that requires the client SVID of a node it admits
    (each other registered node of the trust domain, not of the ``cloud`` tier, whose plan
    has a backend pinned to this node's SPIFFE ID; matched exactly), runs the node's
    ext_authz on every request (a mesh hop: decided and recorded here) and forwards what it
    allows to that model server; the node's clusters to other nodes' TLS backends present
    its SVID. Both take their certificates from the agent's local SDS
    (cluster ``tiermesh_sds``, secrets ``tiermesh_svid`` and ``tiermesh_trust_bundle``).
    Added within ``v1`` like ``authz_port``."""
    mesh_host: str | None = Field(default=None, max_length=45)
    """IP address the inbound mTLS listener binds (the host of the agent's ``mesh_listen``),
    or None: every address (``0.0.0.0``), which is how registrations older than this field
    (port only) are read. Ignored without ``mesh_port``. Added within ``v1`` like
    ``authz_port``."""

    @field_validator("mesh_host")
    @classmethod
    def _ip_address(cls, value: str | None) -> str | None:
        return None if value is None else str(ipaddress.ip_address(value))

    @model_validator(mode="after")
    def _unique_endpoints(self) -> Self:
        names = [endpoint.name for endpoint in self.endpoints]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"endpoint names must be unique; repeated: {duplicates}")
        return self

    def foreign_endpoints(self) -> tuple[str, ...]:
        """Names of endpoints that do not belong to ``node_id`` (empty: the claim is fine)."""
        return tuple(e.name for e in self.endpoints if endpoint_owner(e.name) != self.node_id)


class ModelAttestation(Contract):
    """What the node's agent last concluded about its model file's signature."""

    outcome: Literal["verified", "unverified", "refused"]
    """``verified``: a trusted signer signed these bytes, served; ``unverified``: no
    signature demanded, served; ``refused``: not served (see ``reason``)."""
    digest: str | None = Field(default=None, pattern=r"^sha256:[0-9a-f]{64}$")
    """The signed model digest (model-signing's subject digest) when verified."""
    signer: str | None = Field(default=None, max_length=2100)
    """The trusted signer that vouched for it (``key:sha256:…`` or ``cert:<identity>``)."""
    reason: str | None = Field(default=None, max_length=64)
    """Why it is refused: ``signature_missing``, ``signature_invalid``,
    ``untrusted_signer``, ``model_changed``, ``server_failed`` …"""


class NodeLoad(Contract):
    """A node's live load, as its agent measures it."""

    version: Literal["v1"] = "v1"
    """Format version."""
    in_flight: int = Field(default=0, ge=0)
    """Requests the node's model server is working on now."""
    queue_depth: int = Field(default=0, ge=0)
    """Requests waiting for a slot."""
    tokens_per_s: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)
    """Generated tokens per second, averaged over the agent's last window."""
    healthy: bool = True
    """False when the agent sees its model server failing its health check. While the
    latest report says False, the control plane serves the endpoints of every catalog
    backend the node hosts (``Backend.node``) as ``UNHEALTHY`` to every node's Envoy."""
    model: ModelAttestation | None = None
    """The model file's signature check (None: the node runs no model server, or an agent
    that predates signatures). A refused model also reports ``healthy`` False."""


class UsageDelta(Contract):
    """What one tenant spent through the node since the node's previous report."""

    tokens: int = Field(default=0, ge=0, le=MAX_USAGE_AMOUNT)
    """Prompt plus completion tokens of the tenant's answered requests."""
    cost_micro: int = Field(default=0, ge=0, le=MAX_USAGE_AMOUNT)
    """Their cost at catalog prices, in micro-dollars (USD x 10^6)."""


MAX_ANSWER_KEYS: Final = 64
"""Most keys each table of one :class:`AnswerCounts` may hold."""

FallbackReason = Literal["retry", "unavailable", "budget", "cascade"]
"""Why an answer came from a step after the first choice of its route:

- ``retry``: the first try failed or was late (Envoy's retry moved down the chain);
- ``unavailable``: the first step was skipped without a try (ejected or unhealthy);
- ``budget``: the tenant's budget was spent, its route's budget fallback chain answered;
- ``cascade``: a cascade route's first answer was not confident enough and a later step's
  answer was served."""

_Count = Annotated[int, Field(ge=0, le=MAX_USAGE_AMOUNT)]


class AnswerCounts(Contract):
    """How a node's app listener answered since the node's previous report, counted by its
    agent from Envoy's access log (:mod:`tiermesh.agents.usage.answers`). Added within
    ``v1``: sent only to a control plane whose :class:`SessionReply` said
    ``answer_reports``."""

    by_tier: dict[Tier, _Count] = Field(default_factory=dict)
    """Answers a backend gave, by the tier of the backend that answered."""
    first_choice: _Count = 0
    """Answers from the first step of the route that matched."""
    fallback: _Count = 0
    """Answers from a later step (or a budget fallback chain); ``first_choice + fallback``
    is the sum of ``by_tier``."""
    fallback_reasons: dict[FallbackReason, _Count] = Field(default_factory=dict)
    """``fallback`` split by :data:`FallbackReason` where the entry shows why; the rest
    (a later step answered and the entry does not say why) is not in this table."""
    refused: dict[Annotated[str, StringConstraints(pattern=r"^[1-5][0-9][0-9]$")], _Count] = Field(
        default_factory=dict, max_length=MAX_ANSWER_KEYS
    )
    """Requests answered by the node itself with no backend (ext_authz's denials, 401,
    404, 429, a 503 with every allowed tier down), by HTTP status."""

    def total(self) -> int:
        """Answers given by a backend."""
        return sum(self.by_tier.values())

    def is_empty(self) -> bool:
        """Nothing was counted."""
        return not self.by_tier and not self.refused


class UsageReport(Contract):
    """Spend a node accounted from its Envoy's access log, to add to the mesh-wide counters.

    A report is identified by (``epoch``, ``seq``): the node re-sends an unacknowledged
    report unchanged (same ``seq``, same deltas), and never reuses a ``seq`` for other
    deltas within an ``epoch``. Added within ``v1``; a node sends it only to a control plane
    whose :class:`SessionReply` said ``usage_reports``.
    """

    version: Literal["v1"] = "v1"
    """Format version."""
    epoch: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    """Names the sequence ``seq`` counts in: the node's agent picks a new random one each
    time it starts (its unreported deltas are not kept across restarts)."""
    seq: int = Field(ge=1)
    """Report number within ``epoch``: 1, 2, 3, ... in the order the node sends them; it
    spans the agent's sessions, so a report re-sent after a reconnect keeps its number."""
    tenants: dict[Name, UsageDelta] = Field(default_factory=dict, max_length=MAX_USAGE_TENANTS)
    """Tenant name (a catalog name: ``[a-z0-9][a-z0-9_-]{0,62}``) -> its delta; at most
    :data:`MAX_USAGE_TENANTS`. At least one unless ``answers`` is set."""
    month: UsageMonth | None = None
    """The month (:data:`UsageMonth`) the deltas were spent in: they are added to that
    month's counters even when the report arrives after the month ended. Absent (a node
    from before this field): the control plane's current month. Added within ``v1``."""
    answers: AnswerCounts | None = None
    """How the node answered since its previous report (:class:`AnswerCounts`), or None.
    Counted once with the report: a re-sent report the control plane skips is not counted
    again. Added within ``v1``: a node sets it only for a control plane whose reply said
    ``answer_reports`` (an older one refuses the unknown field), and may then send a report
    with answers and no tenants."""

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if not self.tenants and self.answers is None:
            raise ValueError("a usage report needs at least one tenant or answer counts")
        return self


class UsageTotal(Contract):
    """A tenant's mesh-wide counters (every node's acknowledged reports added up)."""

    tokens: int = Field(ge=0)
    """Tokens in the acknowledgement's month."""
    cost_micro: int = Field(ge=0)
    """Spend in that month in micro-dollars; the policy's ``data.usage[t].spent_usd`` is this
    divided by 10^6."""


class UsageAck(Contract):
    """The control plane's answer to one :class:`UsageReport`."""

    epoch: str
    """The report's ``epoch``."""
    seq: int
    """The report's ``seq``: the node may forget that report now."""
    applied: bool
    """True: this answer's report was added now. False: it had been applied before (a
    re-send) and was not added again."""
    totals: dict[str, UsageTotal]
    """Mesh-wide totals of each tenant the report named, read after adding it: those of
    ``month``."""
    month: UsageMonth | None = None
    """The month the report's deltas were added to and ``totals`` are of (the report's
    ``month``, or the control plane's current one when the report named none). A node
    takes ``totals`` only for the month it is accounting now. Added within ``v1``: a
    control plane from before this field sends none."""


class SessionMessage(Contract):
    """One message from the node: exactly one of the four fields is set."""

    registration: NodeRegistration | None = None
    """A (re-)registration. Required as the first message of a session."""
    load: NodeLoad | None = None
    """A load report (never as the first message)."""
    usage: UsageReport | None = None
    """A usage report (never as the first message; only when the session's reply said
    ``usage_reports``). Added within ``v1``."""
    goodbye: bool = False
    """True: the node is leaving; the registration is deleted at once."""

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        count = (
            (self.registration is not None)
            + (self.load is not None)
            + (self.usage is not None)
            + self.goodbye
        )
        if count != 1:
            raise ValueError("exactly one of registration, load, usage and goodbye must be set")
        return self


class SessionReply(Contract):
    """The control plane's answer to each accepted registration, and to each usage report
    (then ``usage`` is set and the other fields repeat the latest registration's answer);
    also sent unasked when the served bundle changes (``bundle``)."""

    node_id: str
    """The registered node id."""
    spiffe_id: str
    """The client SVID's SPIFFE ID the registration was checked against."""
    lease_ttl_s: int
    """Seconds the registration outlives a session that breaks without goodbye."""
    load_interval_s: float
    """Load reports are written at most this often; sending faster only coalesces."""
    revision: int
    """Store revision of the write (orders registrations across control-plane replicas)."""
    usage_reports: bool = False
    """True: this control plane accepts :class:`UsageReport` messages on the session.
    Added within ``v1``; an older control plane omits it (read as False) and would refuse
    a usage report as undecodable."""
    usage: UsageAck | None = None
    """Set only on the answer to a usage report. Added within ``v1``: a node that sends no
    usage reports never gets one."""
    answer_reports: bool = False
    """True: this control plane takes :class:`UsageReport` ``answers`` (and reports that
    carry answers but no tenant). Added within ``v1``; an older control plane omits it."""
    bundle: BundleRef | None = None
    """The bundle the control plane serves (None: none yet, or an older control plane).
    When it changes the control plane sends a reply of its own, unasked (``usage`` None,
    the other fields as in the latest answer); the node fetches that bundle's request
    policy (:mod:`tiermesh.controlplane.api.request_policy`). Added within ``v1``."""


class RegisteredNode(NodeRegistration):
    """What the control plane stores under ``nodes/<node-id>``: the registration as the node
    sent it, plus what the control plane observed. Readers: the reconciler
    (``read_registration`` reads ``node_id``, ``tier``, ``region``, ``residency`` and
    ``load.healthy``) and status tools."""

    spiffe_id: str
    """SPIFFE ID of the client SVID that registered this node."""
    registered_at: AwareDatetime
    """When the control plane accepted the (latest) registration, UTC."""
    load: NodeLoad | None = None
    """The newest load written, None before the first report."""
    load_at: AwareDatetime | None = None
    """When ``load`` was written, UTC."""
