"""The request policy a node fetches from the control plane: what its ext_authz decides with.

Method :data:`REQUEST_POLICY_METHOD` of the registry service
(``tiermesh.node.v1.NodeRegistry``, see :mod:`tiermesh.controlplane.api.registry`), unary,
served on the control plane's mTLS *node* port: the node sends a
:class:`RequestPolicyQuery` and gets the :class:`RequestPolicyBundle` of the bundle the
control plane serves (the one whose compiled routes its nodes get). Messages are these
models as UTF-8 JSON, like the rest of the node API. Added within ``v1``: a control plane
older than the method answers UNIMPLEMENTED.

When to fetch: at start, and whenever a :class:`~tiermesh.controlplane.api.SessionReply`
on the node's registry session announces a ``bundle`` (:class:`BundleRef`) other than the
one the node holds. The control plane sends such a reply, unasked, each time the served
bundle changes; every other reply repeats the latest announcement.

What is in it: only what the request policy needs — the bundle's ``request/*.rego``
modules (``*_test.rego`` left out; the node loads them with ``data.catalog`` and
``data.request_config``), the catalog (``data/catalog.yaml``, validated), the bundle's
mesh-wide request settings (``data/request_config.yaml``, optional, validated) and the
bundle's identity. Bounded: at most :data:`MAX_REQUEST_MODULES` modules,
:data:`MAX_REQUEST_CONFIG_KEYS` settings and :data:`MAX_REQUEST_POLICY_BYTES` bytes
encoded; the control plane refuses a bigger one.

``data.request_config`` on the node: the bundle's ``request_config``, overridden key by
key by the node's own ``authz.request_config`` (node.yaml). A key only the bundle sets
applies mesh-wide; a key node.yaml sets wins on that node.

Status codes: UNAUTHENTICATED (no verified node SVID), INVALID_ARGUMENT (undecodable
query), NOT_FOUND (the control plane serves no bundle yet, or its bundle has no request
policy), FAILED_PRECONDITION (the bundle's request policy is over the bounds, or its
request settings are invalid: the reconciler serves no such bundle), UNAVAILABLE.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal, TypeGuard, get_args

from pydantic import Field, StringConstraints, TypeAdapter

from tiermesh.controlplane.api._base import Contract, Sensitivity
from tiermesh.controlplane.api.catalog import Catalog
from tiermesh.controlplane.api.tenant_keys import ApiKeyEntries

__all__ = [
    "MAX_REQUEST_CONFIG_KEYS",
    "MAX_REQUEST_CONFIG_STRING",
    "MAX_REQUEST_MODULES",
    "MAX_REQUEST_POLICY_BYTES",
    "REQUEST_CONFIG_DOCUMENT",
    "REQUEST_DECISION_PATH",
    "REQUEST_POLICY_FOLDER",
    "REQUEST_POLICY_METHOD",
    "REQUIRE_API_KEY_SETTING",
    "REQUIRE_CREDENTIAL_SETTING",
    "SENSITIVITY_LEVELS",
    "BundleRef",
    "RequestConfig",
    "RequestConfigValue",
    "RequestPolicyBundle",
    "RequestPolicyQuery",
    "is_request_decision",
    "merged_request_config",
    "validate_request_config",
]

REQUEST_DECISION_PATH: Final = "data.tiermesh.request.decision"
"""The Rego document that decides a request on a node (the request policy's entry point)."""
SENSITIVITY_LEVELS: Final[tuple[Sensitivity, ...]] = get_args(Sensitivity)
"""Sensitivity labels, lowest first."""


def is_request_decision(value: object) -> TypeGuard[dict[str, Any]]:
    """Is ``value`` what a request policy must answer: ``{allow: bool, sensitivity: one of
    SENSITIVITY_LEVELS, budget_exhausted: bool, reason: str, headers: {str: str}}``?"""
    if not isinstance(value, dict):
        return False
    headers = value.get("headers")
    return (
        isinstance(value.get("allow"), bool)
        and value.get("sensitivity") in SENSITIVITY_LEVELS
        and isinstance(value.get("budget_exhausted"), bool)
        and isinstance(value.get("reason"), str)
        and isinstance(headers, dict)
        and all(isinstance(v, str) for v in headers.values())
    )


REQUEST_POLICY_METHOD: Final = "RequestPolicy"
"""Method name on the registry service: the served bundle's request policy (unary)."""

REQUEST_POLICY_FOLDER: Final = "request/"
"""Bundle folder holding the request policy's modules (files directly in it)."""

MAX_REQUEST_MODULES: Final = 64
"""Most modules one request policy may have."""

MAX_REQUEST_POLICY_BYTES: Final = 1 << 20
"""Largest encoded :class:`RequestPolicyBundle` (1 MiB); also the node's receive limit."""

REQUEST_CONFIG_DOCUMENT: Final = "request_config"
"""Stem of the bundle's optional request settings (``data/request_config.yaml``, ``.yml``
or ``.json``): the request policy's ``data.request_config``."""

REQUIRE_API_KEY_SETTING: Final = "require_api_key"
"""The request setting that turns tenant authentication on: with ``true`` in the node's
merged ``data.request_config``, a request without a valid tenant API key is refused (401)
before the policy is asked. Off by default so meshes that predate keys keep deciding on the
``x-tiermesh-tenant`` header; a request that does present a key is authenticated either
way (a wrong one is refused, a valid one names the tenant)."""

REQUIRE_CREDENTIAL_SETTING: Final = "require_credential"
"""The general name of :data:`REQUIRE_API_KEY_SETTING`: with either ``true``, a request
without a valid credential — a tenant API key or a JWT of a catalog issuer — is refused
(401). ``require_api_key`` keeps working and means the same (any credential kind)."""

MAX_REQUEST_CONFIG_KEYS: Final = 64
"""Most settings one ``request_config`` may hold."""

MAX_REQUEST_CONFIG_STRING: Final = 1024
"""Longest string value of one setting (characters)."""

Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
ProvenanceValue = str | int | float | bool | None

RequestConfigKey = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=128)
]
"""A setting's name: a Rego-friendly identifier (``max_request_tokens``)."""
RequestConfigValue = (
    bool
    | int
    | Annotated[float, Field(allow_inf_nan=False)]
    | Annotated[str, StringConstraints(max_length=MAX_REQUEST_CONFIG_STRING)]
)
"""A setting's value: a boolean, a number (finite) or a string; never null or nested."""
RequestConfig = Annotated[
    dict[RequestConfigKey, RequestConfigValue], Field(max_length=MAX_REQUEST_CONFIG_KEYS)
]
"""Setting name -> value: what the request policy reads as ``data.request_config``."""

_REQUEST_CONFIG: TypeAdapter[dict[str, bool | int | float | str]] = TypeAdapter(RequestConfig)


def validate_request_config(value: object) -> dict[str, bool | int | float | str]:
    """``value`` (a parsed ``data/request_config.yaml``) as a :data:`RequestConfig`; an
    empty document (None) is no setting. Pure.

    Raises:
        pydantic.ValidationError: not a mapping of names to scalars, or over the bounds;
            each error's ``loc`` starts with the offending key.
    """
    return _REQUEST_CONFIG.validate_python({} if value is None else value)


def merged_request_config(
    bundle: Mapping[str, bool | int | float | str] | None,
    node: Mapping[str, bool | int | float | str],
) -> dict[str, bool | int | float | str]:
    """The node's ``data.request_config``: ``bundle``'s settings overridden key by key by
    ``node``'s (node.yaml ``authz.request_config``). Pure."""
    return {**(bundle or {}), **node}


class BundleRef(Contract):
    """Names one pushed bundle. Two refs with equal ``sha256`` name the same content."""

    revision: int = Field(ge=1)
    """Bundle revision: 1 for the first push, one more per push."""
    sha256: Sha256Hex
    """The bundle's digest (hex; the store's digest of every file, in path order). Decision
    records of both policy levels carry it as ``bundle_revision``."""
    etcd_revision: int = Field(ge=0)
    """The store revision the control plane first read this bundle at; decision records
    carry it as ``etcd_revision``."""


class RequestPolicyQuery(Contract):
    """A node asking for the served bundle's request policy. The node is the client SVID."""

    version: Literal["v1"] = "v1"
    """Format version."""


class RequestPolicyBundle(Contract):
    """The served bundle's request policy."""

    version: Literal["v1"] = "v1"
    """Format version."""
    bundle: BundleRef
    """The bundle these modules and this catalog come from."""
    provenance: dict[str, ProvenanceValue] = Field(default_factory=dict, max_length=64)
    """Where the bundle came from, as pushed (git commit, author, dirty flag, pusher)."""
    modules: dict[
        Annotated[str, StringConstraints(pattern=r"^request/[^/]+\.rego$", max_length=255)],
        str,
    ] = Field(min_length=1, max_length=MAX_REQUEST_MODULES)
    """Bundle path (``request/<file>.rego``) -> Rego source; the names the node loads them
    under, so engine errors name the bundle file."""
    catalog: Catalog | None = None
    """The bundle's ``data/catalog.yaml``, validated: the policy's ``data.catalog`` (as
    ``model_dump(mode="json")``, what the compile-time policy sees) and the node's prices
    and budgets for usage accounting. None only if the bundle's catalog is unreadable (the
    control plane serves no such bundle)."""
    request_config: RequestConfig | None = None
    """The bundle's ``data/request_config.yaml`` (:data:`REQUEST_CONFIG_DOCUMENT`),
    validated: mesh-wide ``data.request_config`` settings, which the node's own
    ``authz.request_config`` overrides key by key (:func:`merged_request_config`). None
    when the bundle has no such document; the control plane then leaves the field out of
    the answer, so nodes older than the field still read it (they refuse unknown fields,
    and so refuse a bundle whose settings they could not apply)."""
    api_keys: ApiKeyEntries | None = None
    """The tenants' API keys (digests only, revoked ones included; module
    :mod:`tiermesh.controlplane.api.tenant_keys`), as the control plane last read them from
    the store. None when no key was ever created; the control plane then leaves the field
    out, so nodes older than the field still read the answer. A key change is announced
    like a bundle change: the announced :class:`BundleRef`'s ``etcd_revision`` becomes the
    store revision of the change (when later than the bundle's), so every node fetches
    again within a session round trip."""
