"""The catalog: backends, tenants, model aliases and task types (``data/catalog.yaml``).

The catalog is the data document the routing policy reads as ``data.catalog``
(``Catalog.model_dump(mode="json")``). Lists keep their order; where the policy
needs a tie-break it uses names, never list positions.

Cross-references (unique names, aliases naming served models, tenants' tiers)
are checked when a ``Catalog`` is built; :func:`reference_problems` reports
them with field paths for :func:`~tiermesh.controlplane.api.load_catalog`.

Tenants may be authenticated by JWTs that Envoy's ``jwt_authn`` filter verifies against the
issuers named in ``jwt_issuers`` (:class:`JwtIssuer`): the tenant is the verified token's
``tenant_claim``, which must name a catalog tenant (and one the issuer may name).

Endpoints are part of a backend's identity: the verifier maps every compiled endpoint
back to a backend by address (:func:`endpoint_address`), so no two backends may share
one, and a ``local`` or ``private`` backend must be either on its node's loopback
address (:func:`is_loopback`) or pinned by TLS to its ``spiffe_id``.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, JsonValue, ValidationInfo, field_validator, model_validator

from tiermesh.controlplane.api._base import Contract, Name, Sensitivity, Tier
from tiermesh.controlplane.api.errors import CatalogProblem
from tiermesh.controlplane.api.resilience import (
    CircuitBreaker,
    HealthCheckTiming,
    OutlierDetection,
    RateLimit,
    RetryPolicy,
)
from tiermesh.controlplane.api.surface import OPENAI_API, ApiEndpoint

__all__ = [
    "CATALOG_VERSION",
    "Backend",
    "BackendResilience",
    "Catalog",
    "Credential",
    "Defaults",
    "Endpoint",
    "JwtIssuer",
    "ModelAlias",
    "ModelSigner",
    "RemoteJwks",
    "RouteResilience",
    "TaskType",
    "Tenant",
    "TierDefaults",
    "TokenCost",
    "endpoint_address",
    "is_loopback",
    "jwks_address",
    "reference_problems",
]

CATALOG_VERSION = "v1"
"""Version of the catalog document; bumped on incompatible changes."""

DEFER_REFERENCES = "defer_references"
"""Validation-context key: when true, ``Catalog`` skips its cross-reference check
(the loader runs :func:`reference_problems` itself to report field paths)."""


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def endpoint_address(host: str, port: int) -> tuple[str, int]:
    """``(host, port)`` in the one form two spellings of the same address share.

    An IP literal in its compressed form (an IPv4-mapped IPv6 address as IPv4); a DNS
    name in lower case without a trailing dot. Names are not resolved: two names of one
    host are two addresses here.
    """
    address = _ip(host)
    if address is None:
        return host.lower().rstrip("."), port
    return str(address), port


def is_loopback(host: str) -> bool:
    """Is ``host`` a literal loopback IP address (``127.0.0.0/8``, ``::1``, or IPv4-mapped)?

    Names (``localhost`` included) are not: what they resolve to is not in the config.
    """
    address = _ip(host)
    return address is not None and address.is_loopback


class Endpoint(Contract):
    """Where a backend's OpenAI-compatible server listens."""

    host: str = Field(min_length=1)
    """DNS name or IP address."""
    port: int = Field(ge=1, le=65535)
    """TCP port."""
    tls: bool = False
    """Connect with TLS (mTLS with the node's SVID when ``spiffe_id`` is set)."""


class TokenCost(Contract):
    """Price of a backend in USD per 1000 tokens (0 for hardware already paid for)."""

    input: float = Field(ge=0)
    """USD per 1000 prompt tokens."""
    output: float = Field(ge=0)
    """USD per 1000 completion tokens."""


class RouteResilience(Contract):
    """Per-request settings a backend or tenant may override (unset = inherited)."""

    timeout_ms: int | None = Field(default=None, gt=0)
    """Whole-step timeout, retries included."""
    retries: RetryPolicy | None = None
    """Retry policy of the step."""
    first_byte_timeout_ms: int | None = Field(default=None, gt=0)
    """First-byte deadline before moving on to the next step (the hedge)."""


class BackendResilience(RouteResilience):
    """Everything a backend may override: route settings plus its cluster's settings."""

    circuit_breaker: CircuitBreaker | None = None
    """Circuit-breaker thresholds of the backend's cluster."""
    outlier_detection: OutlierDetection | None = None
    """Outlier detection of the backend's cluster."""
    health_check: HealthCheckTiming | None = None
    """Active health-check timing of the backend's cluster."""


class TierDefaults(Contract):
    """Resilience defaults for every backend of one tier."""

    timeout_ms: int = Field(gt=0)
    """Whole-step timeout, retries included."""
    first_byte_timeout_ms: int = Field(gt=0)
    """First-byte deadline before moving on to the next step."""
    retries: RetryPolicy
    """Retry policy of a step."""
    circuit_breaker: CircuitBreaker
    """Circuit-breaker thresholds; ``max_requests`` is capped by the backend's capacity."""
    outlier_detection: OutlierDetection
    """Outlier detection."""
    health_check: HealthCheckTiming
    """Active health-check timing."""


class Defaults(Contract):
    """Catalog-wide defaults."""

    tiers: dict[Tier, TierDefaults]
    """Resilience defaults per tier; all three tiers must be present."""
    rate_limit: RateLimit | None = None
    """Rate limit of tenants that set none; null means unlimited."""
    default_task: Name = "chat"
    """Task assumed for requests without a (known) task header."""
    max_chain_length: int = Field(default=4, ge=1, le=16)
    """Longest fallback chain a route gets."""
    require_signed_models: tuple[Sensitivity, ...] = ()
    """Sensitivities whose traffic only backends with ``signers`` may serve (their node
    verifies the model's signature before serving it), e.g. ``[restricted]``; routes for
    that traffic leave every other backend out. Empty: no such demand."""

    @model_validator(mode="after")
    def _all_tiers(self) -> Defaults:
        missing = sorted({"local", "private", "cloud"} - set(self.tiers))
        if missing:
            raise ValueError(f"defaults for tiers {missing} are missing")
        return self


class Credential(Contract):
    """An API key Envoy adds to every request to one backend (and to nothing else).

    The catalog names the key, never holds it: the operator stores the key under
    ``secret`` with the control plane, which serves it to nodes as an SDS generic secret.
    Envoy sets ``header: <prefix><key>`` on requests to this backend only.
    """

    secret: Name
    """Name the operator stored the key under."""
    header: str = Field(default="authorization", pattern=r"^[a-z0-9-]+$")
    """Request header that carries the key (lower case)."""
    prefix: str = "Bearer "
    """Text put before the key in the header value."""


_PEM_PUBLIC_KEY = r"^\s*-----BEGIN PUBLIC KEY-----[A-Za-z0-9+/=\s]+-----END PUBLIC KEY-----\s*$"
_PEM_CERTIFICATES = (
    r"^\s*(-----BEGIN CERTIFICATE-----[A-Za-z0-9+/=\s]+-----END CERTIFICATE-----\s*)+$"
)


class ModelSigner(Contract):
    """One signer whose signature on a backend's model file its node accepts: an EC public
    key (P-256/384/521, PEM), or a certificate identity (a URI SAN such as a SPIFFE ID, or an
    e-mail SAN) in a code-signing certificate issued under ``roots``. Exactly one of
    ``public_key`` and ``certificate_identity``."""

    public_key: str | None = Field(default=None, pattern=_PEM_PUBLIC_KEY)
    """A trusted EC public key, PEM (``-----BEGIN PUBLIC KEY-----``)."""
    certificate_identity: str | None = Field(default=None, min_length=1, max_length=2048)
    """A trusted identity in the signing certificate's SAN (URI or e-mail)."""
    roots: str | None = Field(default=None, pattern=_PEM_CERTIFICATES)
    """PEM CA certificates the signing certificate must chain to (with
    ``certificate_identity`` only)."""

    @model_validator(mode="after")
    def _one_kind(self) -> ModelSigner:
        if (self.public_key is None) == (self.certificate_identity is None):
            raise ValueError("a signer names exactly one of public_key and certificate_identity")
        if (self.certificate_identity is None) != (self.roots is None):
            raise ValueError("certificate_identity and roots go together")
        return self


class Backend(Contract):
    """One model server (one Envoy cluster)."""

    name: Name
    """Unique backend name; the Envoy cluster name is derived from it."""
    tier: Tier
    """Where it runs."""
    region: str = Field(min_length=1)
    """Region, e.g. ``eu-west``; nodes prefer backends in their own region."""
    residency: str = Field(min_length=1)
    """Jurisdiction the data is processed in, e.g. ``eu``, ``us``, ``onprem``."""
    node: Name | None = None
    """For local backends: the node that hosts it. A local backend is a candidate
    only on its own node (or on every node when unset)."""
    cost_per_1k_tokens: TokenCost
    """Price per 1000 tokens."""
    capacity: int = Field(ge=1)
    """Concurrent requests it serves; caps the circuit breaker's ``max_requests``."""
    models: tuple[str, ...] = Field(min_length=1)
    """Model names it serves."""
    max_complexity: int = Field(ge=1, le=10)
    """Hardest task complexity it handles well; harder tasks prefer other backends
    and use this one only as a degraded fallback."""
    max_sensitivity: Sensitivity | None = None
    """Most sensitive data it is cleared for. Unset: ``restricted`` for local,
    ``internal`` for private, ``public`` for cloud. Cloud backends may never be
    cleared for restricted data."""
    endpoint: Endpoint
    """Address of the server."""
    spiffe_id: str | None = Field(default=None, pattern=r"^spiffe://")
    """SPIFFE ID the upstream must present (SAN match); null for external APIs."""
    health_check: str = Field(default="/v1/models", pattern=r"^/")
    """HTTP path of the active health check."""
    resilience: BackendResilience | None = None
    """Overrides of the tier defaults for this backend."""
    credential: Credential | None = None
    """API key Envoy injects into requests to it (external APIs); null sends none."""
    signers: tuple[ModelSigner, ...] = Field(default=(), max_length=32)
    """Who may sign the model file its node serves for it. Non-empty: the hosting node
    (``node``) verifies the file's signature against these before starting the model
    server and on every change, and serves nothing (reports the backend unhealthy) while
    it is missing, invalid or by anyone else. Empty: no signature is demanded."""


class Tenant(Contract):
    """One tenant (the ``x-tiermesh-tenant`` header)."""

    name: Name
    """Unique tenant name."""
    residency: tuple[str, ...] = Field(min_length=1)
    """Residencies its data may be processed in; backends elsewhere are never used."""
    monthly_budget_usd: float = Field(ge=0)
    """Monthly spend limit. Once ``data.usage[name].spent_usd`` reaches it, routes
    prefer the cheap tiers (local, private); requests are not refused. A month is a
    calendar month in UTC for every tenant (there is no time zone or reset-day setting):
    spend starts at zero at 00:00 UTC on the 1st, on every node and in the control
    plane's counters (:data:`~tiermesh.controlplane.api.registry.UsageMonth`)."""
    allowed_tiers: tuple[Tier, ...] = Field(min_length=1)
    """Tiers it may use at all."""
    restricted_tiers: tuple[Literal["local", "private"], ...] = ("local",)
    """Tiers its restricted data may use; ``private`` also needs a backend cleared
    for restricted data. Never ``cloud``."""
    default_sensitivity: Sensitivity = "internal"
    """Sensitivity the request-time policy assumes when it cannot classify a request."""
    rate_limit: RateLimit | None = None
    """Its token bucket; unset falls back to ``defaults.rate_limit``. One bucket per node
    across all of the tenant's routes (and connections), not one per route."""
    resilience: RouteResilience | None = None
    """Overrides of per-request settings on every route of this tenant (applied
    after the backend's overrides)."""


class ModelAlias(Contract):
    """A model name apps ask for (``x-tiermesh-model``) and the models that may serve it."""

    name: Name
    """The alias."""
    models: tuple[str, ...] = Field(min_length=1)
    """Candidate models, preferred first; each must be served by some backend."""


class TaskType(Contract):
    """A task type (``x-tiermesh-task``) and how hard it is."""

    name: Name
    """The task name, e.g. ``classify``, ``reasoning``."""
    complexity: int = Field(ge=1, le=10)
    """Rank compared with backends' ``max_complexity``."""
    strategy: Literal["capability", "cascade"] = "capability"
    """``capability``: capable backends first (cheapest tier first among them),
    the others as degraded fallback. ``cascade``: always cheapest tier first,
    escalating to bigger tiers on failure or a late first byte."""
    min_confidence: float | None = Field(default=None, gt=0, le=1)
    """Only with ``cascade``: an answer whose confidence (mean top-1 token probability
    from the backend's logprobs) is below this is not served; the next step of the
    chain answers instead. Null: the first answer that arrives is served."""


def jwks_address(uri: str) -> tuple[str, int, bool]:
    """``(host, port, tls)`` of a JWKS ``uri`` (``http://`` or ``https://``; the scheme's
    default port when none is given). Raises ``ValueError`` naming what is wrong."""
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"not a URL: {exc}") from None
    if parts.scheme not in {"http", "https"}:
        raise ValueError("the scheme must be https (or http to a loopback address)")
    host = parts.hostname
    if not host:
        raise ValueError("the URL names no host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("the URL may not carry credentials")
    if parts.fragment:
        raise ValueError("the URL may not have a fragment")
    tls = parts.scheme == "https"
    if not tls and not is_loopback(host):
        raise ValueError(
            f"plain http is allowed only to a loopback IP address, not {host!r}: "
            "keys fetched in the clear could be swapped on the way"
        )
    return host, port or (443 if tls else 80), tls


class RemoteJwks(Contract):
    """A JWKS that Envoy fetches itself, through a cluster the compiler generates for it."""

    uri: str = Field(min_length=1, max_length=2048)
    """Where the key set is served: ``https://…`` (the server's certificate is checked
    against the node's system CAs and the URL's host), or ``http://`` to a loopback IP
    address only."""
    cache_duration_s: int = Field(default=300, ge=1, le=86_400)
    """How long Envoy keeps a fetched key set before fetching it again (new keys of a
    rotation are accepted at most this long after they are published)."""
    fetch_timeout_ms: int = Field(default=2_000, ge=50, le=60_000)
    """Deadline of one fetch; a request whose token needs keys that could not be fetched
    is refused (``JWKS unavailable``)."""

    @field_validator("uri")
    @classmethod
    def _uri(cls, value: str) -> str:
        jwks_address(value)
        return value


class JwtIssuer(Contract):
    """One issuer of JWTs that authenticate tenants (Envoy's ``jwt_authn`` verifies them).

    A token is accepted when it is signed by a key of the issuer's key set (``remote_jwks``
    or ``local_jwks``: exactly one), its ``iss`` is ``issuer``, its ``aud`` names one of
    ``audiences``, it carries ``exp`` and is within ``exp``/``nbf`` (``clock_skew_s``
    either way). The request is then the tenant its ``tenant_claim`` names; that tenant
    must be in the catalog (and in ``tenants`` when it is set), else the request is refused.
    """

    name: Name
    """Unique issuer name; the Envoy provider and JWKS cluster names are derived from it."""
    issuer: str = Field(min_length=1, max_length=512)
    """The exact ``iss`` of its tokens, e.g. ``https://login.example.com/``."""
    audiences: tuple[str, ...] = Field(min_length=1)
    """Accepted ``aud`` values; a token must name at least one."""
    remote_jwks: RemoteJwks | None = None
    """The key set fetched by Envoy."""
    local_jwks: dict[str, JsonValue] | None = None
    """The key set inline (a JWKS document: ``{keys: [{kty: …, …}]}``); public keys only."""
    tenant_claim: str | tuple[str, ...] = Field(default="tenant")
    """The claim naming the tenant: a top-level claim name (``tenant``, ``org_id``, or a
    namespaced one such as ``https://example.com/tenant``), or a list of names for a nested
    one (``[org, id]`` reads ``{"org": {"id": …}}``). Its value must be a string."""
    tenants: tuple[Name, ...] | None = None
    """The tenants this issuer may name; null: any catalog tenant."""
    clock_skew_s: int = Field(default=60, ge=0, le=600)
    """Seconds of clock difference tolerated on ``exp`` and ``nbf``."""

    @field_validator("tenant_claim")
    @classmethod
    def _claim(cls, value: str | tuple[str, ...]) -> str | tuple[str, ...]:
        path = (value,) if isinstance(value, str) else value
        if not path or any(not part or len(part) > 256 for part in path):
            raise ValueError("tenant_claim must be a non-empty claim name (or list of names)")
        return value

    @model_validator(mode="after")
    def _one_key_set(self) -> JwtIssuer:
        if (self.remote_jwks is None) == (self.local_jwks is None):
            raise ValueError(f"issuer {self.name!r} needs exactly one of remote_jwks, local_jwks")
        if self.local_jwks is not None:
            keys = self.local_jwks.get("keys")
            if (
                not isinstance(keys, list)
                or not keys
                or not all(isinstance(k, dict) and isinstance(k.get("kty"), str) for k in keys)
            ):
                raise ValueError(
                    f"issuer {self.name!r}: local_jwks must be a JWKS document "
                    "({keys: [{kty: ..., ...}, ...]}) with at least one key"
                )
            private = sorted(
                {f for k in keys if isinstance(k, dict) for f in ("d", "p", "q", "k") if f in k}
            )
            if private:
                raise ValueError(
                    f"issuer {self.name!r}: local_jwks holds secret key material "
                    f"({', '.join(private)}): give public keys only"
                )
        return self

    @property
    def claim_path(self) -> tuple[str, ...]:
        """``tenant_claim`` as a path of claim names."""
        return (self.tenant_claim,) if isinstance(self.tenant_claim, str) else self.tenant_claim


class Catalog(Contract):
    """The whole catalog document."""

    version: Literal["v1"] = "v1"
    """Catalog format version."""
    defaults: Defaults
    """Defaults for every tier, tenant and route."""
    backends: tuple[Backend, ...]
    """Model servers."""
    tenants: tuple[Tenant, ...]
    """Tenants."""
    aliases: tuple[ModelAlias, ...] = ()
    """Model aliases."""
    tasks: tuple[TaskType, ...] = Field(min_length=1)
    """Task types."""
    api: tuple[ApiEndpoint, ...] = Field(default=OPENAI_API, min_length=1)
    """The paths and methods routed to model servers (default: the OpenAI-compatible
    surface); any other request is answered 404/405 on the node and never forwarded."""
    jwt_issuers: tuple[JwtIssuer, ...] = ()
    """Issuers whose JWTs authenticate tenants (``authorization: Bearer <JWT>``), besides
    tenant API keys. Empty: no JWT is accepted and no ``jwt_authn`` filter is compiled."""

    @model_validator(mode="after")
    def _unique_api_paths(self) -> Catalog:
        paths = [endpoint.path for endpoint in self.api]
        doubled = sorted({p for p in paths if paths.count(p) > 1})
        if doubled:
            raise ValueError(f"api lists path {doubled[0]!r} more than once")
        return self

    @model_validator(mode="after")
    def _references(self, info: ValidationInfo) -> Catalog:
        context = info.context
        if isinstance(context, dict) and context.get(DEFER_REFERENCES):
            return self
        problems = reference_problems(self)
        if problems:
            raise ValueError("; ".join(str(problem) for problem in problems))
        return self


def _duplicates(kind: str, names: Sequence[str]) -> Iterable[CatalogProblem]:
    counts = Counter(names)
    for index, name in enumerate(names):
        if counts[name] > 1 and names.index(name) != index:
            yield CatalogProblem(f"{kind}[{index}].name", f"duplicate {kind[:-1]} name {name!r}")


def _shared_endpoints(backends: Sequence[Backend]) -> Iterable[CatalogProblem]:
    first: dict[tuple[str, int], Backend] = {}
    for index, backend in enumerate(backends):
        endpoint = backend.endpoint
        owner = first.setdefault(endpoint_address(endpoint.host, endpoint.port), backend)
        if owner is not backend:
            yield CatalogProblem(
                f"backends[{index}].endpoint",
                f"backend {backend.name!r} has the same endpoint {endpoint.host}:{endpoint.port} "
                f"as backend {owner.name!r}",
            )


def _unpinned(index: int, backend: Backend) -> CatalogProblem | None:
    """Why a local or private ``backend`` could be a host other than the one meant."""
    endpoint = backend.endpoint
    if backend.tier == "cloud" or is_loopback(endpoint.host):
        return None
    where = f"backend {backend.name!r} (tier {backend.tier})"
    if backend.spiffe_id is None:
        return CatalogProblem(
            f"backends[{index}].endpoint.host",
            f"{where} has endpoint host {endpoint.host!r}, which is no loopback IP address, "
            "and no spiffe_id that TLS pins the peer to: run it on its node's loopback "
            "address, or set spiffe_id with endpoint tls: true",
        )
    if not endpoint.tls:
        return CatalogProblem(
            f"backends[{index}].endpoint.tls",
            f"{where} names spiffe_id {backend.spiffe_id!r} but connects without TLS, so "
            "nothing pins the peer to it: set endpoint tls: true, or run it on its node's "
            "loopback address",
        )
    return None


def _issuer_problems(catalog: Catalog) -> Iterable[CatalogProblem]:
    tenants = {t.name for t in catalog.tenants}
    seen: dict[str, str] = {}
    for i, issuer in enumerate(catalog.jwt_issuers):
        first = seen.setdefault(issuer.issuer, issuer.name)
        if first != issuer.name:
            yield CatalogProblem(
                f"jwt_issuers[{i}].issuer",
                f"issuer {issuer.name!r} has the same issuer {issuer.issuer!r} as {first!r}: "
                "a token could not tell which one verified it",
            )
        for t, tenant in enumerate(issuer.tenants or ()):
            if tenant not in tenants:
                yield CatalogProblem(f"jwt_issuers[{i}].tenants[{t}]", f"unknown tenant {tenant!r}")


def reference_problems(catalog: Catalog) -> list[CatalogProblem]:
    """Cross-reference problems of a catalog, each with its field path; empty when sound.

    Checked: names unique per kind; no two backends on one endpoint
    (:func:`endpoint_address`); every ``local`` or ``private`` backend on a loopback IP
    address or with a ``spiffe_id`` and TLS; the default task exists; every alias model
    is served by some backend; no cloud backend cleared for restricted data; tenants'
    ``restricted_tiers`` within their ``allowed_tiers``; JWT issuers with distinct
    ``issuer`` values, naming only catalog tenants.
    """
    problems: list[CatalogProblem] = []
    problems += _duplicates("backends", [b.name for b in catalog.backends])
    problems += _duplicates("tenants", [t.name for t in catalog.tenants])
    problems += _duplicates("aliases", [a.name for a in catalog.aliases])
    problems += _duplicates("tasks", [t.name for t in catalog.tasks])
    problems += _duplicates("jwt_issuers", [i.name for i in catalog.jwt_issuers])
    problems += _issuer_problems(catalog)
    problems += _shared_endpoints(catalog.backends)
    problems += [
        problem
        for index, backend in enumerate(catalog.backends)
        if (problem := _unpinned(index, backend)) is not None
    ]
    if catalog.defaults.default_task not in {t.name for t in catalog.tasks}:
        problems.append(
            CatalogProblem(
                "defaults.default_task",
                f"unknown task {catalog.defaults.default_task!r}",
            )
        )
    served = {model for backend in catalog.backends for model in backend.models}
    for a, alias in enumerate(catalog.aliases):
        for m, model in enumerate(alias.models):
            if model not in served:
                problems.append(
                    CatalogProblem(
                        f"aliases[{a}].models[{m}]", f"no backend serves model {model!r}"
                    )
                )
    for b, backend in enumerate(catalog.backends):
        if backend.tier == "cloud" and backend.max_sensitivity == "restricted":
            problems.append(
                CatalogProblem(
                    f"backends[{b}].max_sensitivity",
                    "a cloud backend may never be cleared for restricted data",
                )
            )
    for t, tenant in enumerate(catalog.tenants):
        for r, tier in enumerate(tenant.restricted_tiers):
            if tier not in tenant.allowed_tiers:
                problems.append(
                    CatalogProblem(
                        f"tenants[{t}].restricted_tiers[{r}]",
                        f"tier {tier!r} is not in allowed_tiers",
                    )
                )
    return problems
