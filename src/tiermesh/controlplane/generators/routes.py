"""RDS: the app route table, one Envoy route per plan route, in plan order.

Mapping (each decision is tested against a real Envoy in tests/integration/compiler):

- **API surface first**: the table starts with :func:`.api_surface.guard_routes`: a path
  or method outside the catalog's ``api`` is answered 404/405 and never forwarded. Only
  the node's batch routes (:mod:`.batch`, on a node with a batch service) come before it.

- Match: an exact header matcher on ``x-tiermesh-<field>`` for each field of the plan
  route's match that is not ``*``.
- **Missing sensitivity fails closed**: a restricted route matches
  ``x-tiermesh-sensitivity`` by the regex :data:`RESTRICTED_OR_MISSING` with
  ``treat_missing_header_as_empty``: the value ``restricted``, an empty value or no header
  at all. (It was a second route per restricted route, ``<name>/unclassified``, matching
  the header's absence: one sixth of a big table.) A request with an unknown sensitivity
  value matches no plan route.
- **Unmatched**: the last route (``tiermesh/unmatched``) matches everything and answers
  404 with :func:`unmatched_body`, so a request without a tenant, or with a label no route
  knows, is told why instead of getting Envoy's empty 404. Being a route, it also lets the
  request-time policy (ext_authz, which Envoy skips for requests that match no route)
  decide such requests: it names a missing or unknown tenant, or sets the default tenant,
  after which the request is routed again.
- **Budget**: when ``budget_fallback`` differs from ``chain``, a route
  ``<name>/budget`` matching additionally ``x-tiermesh-budget: exhausted`` comes first.
- **Empty chain** (a violation): ``direct_response`` 503 with a body naming the route.
- **Chain**: one step → that backend's cluster; several → the chain's aggregate cluster,
  with a retry policy whose ``previous_priorities`` retry priority (update frequency 1)
  moves every retry one step down the chain. Envoy has one retry policy per route, so:
  ``num_retries`` = every step's retries plus one per extra step (after the last step
  the chain starts over); ``retry_on`` = the union of the steps' conditions plus
  ``connect-failure,refused-stream,reset`` (a late first byte or a dead backend always
  moves on); backoff = the first step's base and the largest max; route ``timeout`` =
  the sum of the steps' timeouts; ``per_try_timeout`` = the first step's hedge (Envoy
  ignores a per-try timeout once response headers went downstream, so it is a
  first-byte deadline; it applies to every try of the route).
- **Answering tier**: the virtual host adds response header ``x-tiermesh-tier`` from the
  answering endpoint's metadata (``%UPSTREAM_METADATA(tiermesh:tier)%``): through an
  aggregate cluster it names the member that answered. Local replies (503, 429) get none.
- **First choice**: a chain route of several steps carries route metadata
  ``tiermesh: {first_backend: <its first step's backend>, first_byte_ms: <its first-byte
  deadline, when it has one>}``, which the usage access log reports, so a node can tell a
  first-choice answer from a fallback, and a late first byte from a failed one.
- **Overhead** (:mod:`tiermesh.controlplane.api.telemetry`): the virtual host adds
  ``x-tiermesh-overhead-us`` (:data:`OVERHEAD_FROM_TIMING`).
- **Model rewrite**: not compiled. A step's ``model`` differs per route, and Envoy offers
  no per-(route, member) request header through an aggregate; the plan's per-step model
  stays for the request-time layer.
- **Cascade** (a plan route with ``cascade`` on a node with a cascade handler): each
  variant becomes per-step routes and a route to the handler; see :mod:`.cascade`. When
  the handler has a secret, every other forwarding route removes its header.
- **No request-time policy** (the node has no
  :class:`~tiermesh.controlplane.model.AuthzSettings`): the table is one route,
  :data:`NO_AUTHZ_ROUTE`, answering every request 503 with :func:`no_authz_body`. Without
  ext_authz nothing inspects a request, so the sensitivity would be the caller's word;
  the node forwards nothing rather than trust it (the verifier refuses a listener that
  forwards without ext_authz). The table keeps its name, so RDS and the reconciler see
  an ordinary route update when the node registers an authz server.
- **Dispatch**: a table of many routes of several tenants is served as the virtual
  host's ``matcher``, one route list per tenant, so a request is checked against its
  tenant's part of the table only (:mod:`.dispatch`); the first match is the same.
- **Rate limit**: not on routes. A tenant's limit is one token bucket across all of its
  routes, in the listener's local rate-limit filter (:mod:`.listeners`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple

from envoy.config.core.v3 import base_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.config.route.v3 import route_pb2
from envoy.extensions.retry.priority.previous_priorities.v3 import previous_priorities_config_pb2
from envoy.type.matcher.v3 import regex_pb2, string_pb2
from google.protobuf import wrappers_pb2

from tiermesh.controlplane.api import MATCH_HEADERS, ChainStep, RoutePlan, telemetry
from tiermesh.controlplane.generators import api_surface, batch, cascade, dispatch
from tiermesh.controlplane.generators._protos import ms, pack
from tiermesh.controlplane.model import MeshModel, NodeModel, names

__all__ = [
    "ALWAYS_RETRY_ON",
    "NO_AUTHZ_ROUTE",
    "OVERHEAD_FROM_TIMING",
    "RESTRICTED_OR_MISSING",
    "TIER_FROM_ENDPOINT",
    "generate",
    "no_authz_body",
    "refusal_body",
    "restricted_matcher",
    "unmatched_body",
]

ALWAYS_RETRY_ON = ("connect-failure", "refused-stream", "reset")
"""Retry conditions every chain route has, so a dead or late step always moves on."""

TIER_FROM_ENDPOINT = "%UPSTREAM_METADATA(tiermesh:tier)%"
"""Value of the ``x-tiermesh-tier`` response header: the answering endpoint's tier."""

OVERHEAD_FROM_TIMING = "%COMMON_DURATION(DS_RX_BEG:US_TX_BEG:us)%"
"""Value of the ``x-tiermesh-overhead-us`` response header: microseconds from the
request's first byte to the first byte sent to the answering upstream (Envoy's own
timestamps; the usage filter turns it into ``x-tiermesh-overhead-ms``)."""

NO_AUTHZ_ROUTE = "tiermesh/no-authz"
"""The only route of a node without ext_authz: it answers every request 503."""

_SENSITIVITY = MATCH_HEADERS["sensitivity"]
_TENANT = MATCH_HEADERS["tenant"]

RESTRICTED_OR_MISSING = "restricted|"
"""The ``x-tiermesh-sensitivity`` regex (RE2, whole value) of restricted routes, matched
with a missing header taken as empty: ``restricted``, empty, or absent."""


def unmatched_body() -> str:
    """Body of the 404 a request that matches no plan route gets."""
    headers = ", ".join(MATCH_HEADERS[f] for f in ("tenant", "sensitivity", "task", "model"))
    return (
        "tiermesh: no route matches this request: x-tiermesh-tenant must name a tenant of "
        f"this mesh, and {headers} must hold values the routing policy knows\n"
    )


def refusal_body(route: str) -> str:
    """Body of the 503 a route without any permitted backend answers with."""
    return f"tiermesh: no backend may serve route {route} (fail closed)\n"


def no_authz_body() -> str:
    """Body of the 503 every request to a node without ext_authz gets."""
    return "tiermesh: this node runs no request-time policy (ext_authz): fail closed\n"


def _exact(header: str, value: str) -> rc.HeaderMatcher:
    return rc.HeaderMatcher(name=header, string_match=string_pb2.StringMatcher(exact=value))


def restricted_matcher() -> rc.HeaderMatcher:
    """The ``x-tiermesh-sensitivity`` matcher of every restricted route: the value
    ``restricted``, an empty value or a missing header (:data:`RESTRICTED_OR_MISSING`)."""
    return rc.HeaderMatcher(
        name=_SENSITIVITY,
        string_match=string_pb2.StringMatcher(
            safe_regex=regex_pb2.RegexMatcher(regex=RESTRICTED_OR_MISSING)
        ),
        treat_missing_header_as_empty=True,
    )


_PREVIOUS_PRIORITIES = rc.RetryPolicy.RetryPriority(
    name="envoy.retry_priorities.previous_priorities",
    typed_config=pack(previous_priorities_config_pb2.PreviousPrioritiesConfig(update_frequency=1)),
)
"""The retry priority of every chain of several steps: each retry one step further."""


class _Tail(NamedTuple):
    """Everything the forwarding part of a chain route is made of (:func:`_tail`)."""

    cluster: str
    timeout_ms: int
    retry_on: str
    num_retries: int
    backoff_base_ms: int
    backoff_max_ms: int
    first_byte_ms: int | None
    """The first step's hedge, if any."""
    first_backend: str | None
    """The first step's backend, for a chain of several steps (None: one step)."""


def _tail_of(node: NodeModel, steps: Sequence[ChainStep]) -> _Tail:
    first = steps[0]
    retries = [step.retries for step in steps]
    conditions = set(ALWAYS_RETRY_ON)
    for policy in retries:
        conditions.update(policy.retry_on)
    return _Tail(
        cluster=node.target(steps),
        timeout_ms=sum(step.timeout_ms for step in steps),
        retry_on=",".join(sorted(conditions)),
        num_retries=sum(policy.count for policy in retries) + len(steps) - 1,
        backoff_base_ms=first.retries.backoff_base_ms,
        backoff_max_ms=max(policy.backoff_max_ms for policy in retries),
        first_byte_ms=None if first.hedge is None else first.hedge.per_try_timeout_ms,
        first_backend=first.backend if len(steps) > 1 else None,
    )


def _tail(facts: _Tail) -> rc.Route:
    """A route holding only the action and metadata (module docstring) of a chain
    route whose chain gives ``facts``."""
    policy = rc.RetryPolicy(
        retry_on=facts.retry_on,
        num_retries=wrappers_pb2.UInt32Value(value=facts.num_retries),
        retry_back_off=rc.RetryPolicy.RetryBackOff(
            base_interval=ms(facts.backoff_base_ms), max_interval=ms(facts.backoff_max_ms)
        ),
    )
    if facts.first_byte_ms is not None:
        policy.per_try_timeout.CopyFrom(ms(facts.first_byte_ms))
    if facts.first_backend is not None:
        policy.retry_priority.CopyFrom(_PREVIOUS_PRIORITIES)
    tail = rc.Route(
        route=rc.RouteAction(
            cluster=facts.cluster, timeout=ms(facts.timeout_ms), retry_policy=policy
        )
    )
    if facts.first_backend is not None:
        labels = {names.FIRST_BACKEND_KEY: facts.first_backend}
        if facts.first_byte_ms is not None:
            labels[telemetry.FIRST_BYTE_MS_KEY] = str(facts.first_byte_ms)
        tail.metadata.filter_metadata[names.ROUTE_METADATA].update(labels)
    return tail


class _Actions:
    """What the chain routes of one :func:`generate` call share, built once: the
    forwarding part (``route`` action and ``metadata``) per chain, merged into each
    route that uses it (a table of 16 000 routes has a few dozen distinct chains per
    step group); header matchers per (header, value); and per match shape
    (:meth:`chain_route`) a match the next tenant's routes copy.

    Chains are keyed by the tuple's identity (plans expanded from a compact plan share one
    tuple per chain and step group; other plans just miss); every object whose id is a
    key is held, so its id cannot be reused while the memo lives. One instance per call:
    not shared across nodes or threads."""

    __slots__ = (
        "_built_tails",
        "_differ",
        "_headers",
        "_matches",
        "_refusals",
        "_tails",
        "node",
    )

    def __init__(self, node: NodeModel) -> None:
        self.node = node
        self._tails: dict[int, tuple[Sequence[ChainStep], rc.Route]] = {}
        self._built_tails: dict[_Tail, rc.Route] = {}
        self._headers: dict[tuple[str, str], rc.HeaderMatcher] = {}
        # ids of the matchers after the tenant's -> (the matchers, held; a route holding
        # only such a match, another tenant's: copied, named, given its tenant and tail).
        self._matches: dict[tuple[int, ...], tuple[list[rc.HeaderMatcher], rc.Route]] = {}
        # the same key -> (the matchers, a refusal route of that match)
        self._refusals: dict[tuple[int, ...], tuple[list[rc.HeaderMatcher], rc.Route]] = {}
        self._differ: dict[
            tuple[int, int], tuple[Sequence[ChainStep], Sequence[ChainStep], bool]
        ] = {}

    def chain_route(
        self, name: str, steps: Sequence[ChainStep], headers: list[rc.HeaderMatcher]
    ) -> rc.Route:
        """The chain route ``name`` over ``steps`` (not empty) matching ``headers``
        (the matchers of :meth:`exact` and :meth:`sensitivity`).

        Routes whose matches differ only in the tenant are many (one per tenant of a
        route set): the first match of a shape is built, the others copy it, set their
        name and tenant matcher and merge the chain's tail (C-level copies instead of
        building each matcher), whether or not their chains are the same objects
        (tenants of one route set with different step groups have their own). Copying
        whole routes of tenants that share a chain as well measured no faster: the
        merge is one C-level call, and keeping such routes costs the tenants that
        share none."""
        if not headers or headers[0].name != _TENANT:
            return self._built(name, steps, headers)
        key = tuple(id(header) for header in headers[1:])
        known = self._matches.get(key)
        if known is None:
            match = rc.Route(match=rc.RouteMatch(prefix="/", headers=headers))
            known = self._matches[key] = (headers, match)
        route = rc.Route()
        route.CopyFrom(known[1])
        route.name = name
        route.match.headers[0].CopyFrom(headers[0])
        route.MergeFrom(self.tail(steps))
        return route

    def _built(
        self, name: str, steps: Sequence[ChainStep], headers: list[rc.HeaderMatcher]
    ) -> rc.Route:
        route = rc.Route(name=name, match=rc.RouteMatch(prefix="/", headers=headers))
        route.MergeFrom(self.tail(steps))
        return route

    def refusal_route(
        self, name: str, plan_route: str, headers: list[rc.HeaderMatcher]
    ) -> rc.Route:
        """The route ``name`` of a plan route without any permitted backend: 503 with
        :func:`refusal_body` of ``plan_route``. Copied between tenants like
        :meth:`chain_route` (name, tenant matcher and body set per route)."""
        if not headers or headers[0].name != _TENANT:
            return _refusal(name, plan_route, headers)
        key = tuple(id(header) for header in headers[1:])
        known = self._refusals.get(key)
        if known is None:
            route = _refusal(name, plan_route, headers)
            kept = rc.Route()
            kept.CopyFrom(route)
            self._refusals[key] = (headers, kept)
            return route
        route = rc.Route()
        route.CopyFrom(known[1])
        route.name = name
        route.match.headers[0].CopyFrom(headers[0])
        route.direct_response.body.inline_string = refusal_body(plan_route)
        return route

    def differ(self, chain: Sequence[ChainStep], fallback: Sequence[ChainStep]) -> bool:
        """``fallback != chain``, compared once per pair of chain objects; chains of other
        lengths or backends differ without comparing their steps' settings."""
        if chain is fallback:
            return False
        key = (id(chain), id(fallback))
        known = self._differ.get(key)
        if known is None or known[0] is not chain or known[1] is not fallback:
            differs = len(chain) != len(fallback) or any(
                mine.backend != theirs.backend for mine, theirs in zip(chain, fallback, strict=True)
            )
            known = self._differ[key] = (chain, fallback, differs or fallback != chain)
        return known[2]

    def exact(self, header: str, value: str) -> rc.HeaderMatcher:
        """:func:`_exact`, one message per (header, value) (the route copies it)."""
        key = (header, value)
        found = self._headers.get(key)
        if found is None:
            found = self._headers[key] = _exact(header, value)
        return found

    def sensitivity(self, value: str) -> rc.HeaderMatcher:
        """The ``x-tiermesh-sensitivity`` matcher of a route for ``value`` data."""
        if value != "restricted":
            return self.exact(_SENSITIVITY, value)
        key = (_SENSITIVITY, "")
        found = self._headers.get(key)
        if found is None:
            found = self._headers[key] = restricted_matcher()
        return found

    def tail(self, steps: Sequence[ChainStep]) -> rc.Route:
        """A route holding only the action and metadata of a chain route over ``steps``
        (not empty); callers merge it, never modify it. Built once per distinct
        :class:`_Tail`: chains of other step groups often make the same one (a table of
        222 groups has 5 328 chains and 1 111 distinct tails)."""
        known = self._tails.get(id(steps))
        if known is not None and known[0] is steps:
            return known[1]
        facts = _tail_of(self.node, steps)
        tail = self._built_tails.get(facts)
        if tail is None:
            tail = self._built_tails[facts] = _tail(facts)
        self._tails[id(steps)] = (steps, tail)
        return tail


def _route(
    actions: _Actions,
    plan_route: RoutePlan,
    name: str,
    steps: Sequence[ChainStep],
    headers: list[rc.HeaderMatcher],
) -> rc.Route:
    if steps:
        return actions.chain_route(name, steps, headers)
    return actions.refusal_route(name, plan_route.name, headers)


def _refusal(name: str, plan_route: str, headers: list[rc.HeaderMatcher]) -> rc.Route:
    return rc.Route(
        name=name,
        match=rc.RouteMatch(prefix="/", headers=headers),
        direct_response=rc.DirectResponseAction(
            status=503, body=base_pb2.DataSource(inline_string=refusal_body(plan_route))
        ),
    )


def _routes_for(actions: _Actions, plan_route: RoutePlan) -> Iterator[rc.Route]:
    match = plan_route.match
    headers = [
        actions.sensitivity(value)
        if field == "sensitivity"
        else actions.exact(MATCH_HEADERS[field], value)
        for field, value in (
            ("tenant", match.tenant),
            ("sensitivity", match.sensitivity),
            ("task", match.task),
            ("model", match.model),
        )
        if value != "*"
    ]
    name = plan_route.name
    chain = plan_route.chain
    fallback = plan_route.budget_fallback
    if fallback and actions.differ(chain, fallback):
        budget = actions.exact(names.BUDGET_HEADER, names.BUDGET_EXHAUSTED)
        yield from _variant(actions, plan_route, f"{name}/budget", fallback, [*headers, budget])
    yield from _variant(actions, plan_route, name, chain, headers)


def _variant(
    actions: _Actions,
    plan_route: RoutePlan,
    name: str,
    steps: Sequence[ChainStep],
    headers: list[rc.HeaderMatcher],
) -> Iterator[rc.Route]:
    """One variant of a plan route: its chain route, or its cascade (:mod:`.cascade`)."""
    node = actions.node
    route = _route(actions, plan_route, name, steps, headers)
    if not cascade.uses_cascade(node, plan_route, steps):
        yield cascade.strip_token(node, route)
        return
    for index, step in enumerate(steps):
        step_route = _route(
            actions, plan_route, names.cascade_step_route(name, index), [step], headers
        )
        step_route.match.dynamic_metadata.append(cascade.step_matcher(index))
        yield cascade.step_route(step_route)
    yield cascade.to_handler(route, plan_route, steps)


def _fail_closed_without_authz() -> route_pb2.RouteConfiguration:
    """The app route table of a node without ext_authz: every request answered 503."""
    refuse = rc.Route(
        name=NO_AUTHZ_ROUTE,
        match=rc.RouteMatch(prefix="/"),
        direct_response=rc.DirectResponseAction(
            status=503, body=base_pb2.DataSource(inline_string=no_authz_body())
        ),
    )
    return route_pb2.RouteConfiguration(
        name=names.APP_ROUTES,
        virtual_hosts=[rc.VirtualHost(name="app", domains=["*"], routes=[refuse])],
    )


def generate(model: MeshModel, node_id: str) -> list[route_pb2.RouteConfiguration]:
    """The app listener's route table: one virtual host (any domain), routes in plan order."""
    node = model.node(node_id)
    if node.settings.authz is None:
        return [_fail_closed_without_authz()]
    routes = [*batch.batch_routes(node), *api_surface.guard_routes(model.api)]
    # What each route pins the tenant header to (dispatch.pinned_tenant): a plan route's
    # routes all match its tenant first (_routes_for), the others are looked at.
    tenants: list[str | None] = [dispatch.pinned_tenant(route) for route in routes]
    actions = _Actions(node)
    for plan_route in node.plan.routes:
        made = list(_routes_for(actions, plan_route))
        routes += made
        tenants += [plan_route.match.tenant] * len(made)
    routes.append(
        rc.Route(
            name=names.UNMATCHED_ROUTE,
            match=rc.RouteMatch(prefix="/"),
            direct_response=rc.DirectResponseAction(
                status=404, body=base_pb2.DataSource(inline_string=unmatched_body())
            ),
        )
    )
    tenants.append(dispatch.pinned_tenant(routes[-1]))
    tree = dispatch.tenant_dispatch(routes, tenants)
    return [
        route_pb2.RouteConfiguration(
            name=names.APP_ROUTES,
            virtual_hosts=[
                rc.VirtualHost(
                    name="app",
                    domains=["*"],
                    routes=routes if tree is None else None,
                    matcher=tree,
                    response_headers_to_add=[
                        base_pb2.HeaderValueOption(
                            header=base_pb2.HeaderValue(key=key, value=value),
                            append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
                        )
                        for key, value in (
                            (names.TIER_HEADER, TIER_FROM_ENDPOINT),
                            (telemetry.OVERHEAD_US_HEADER, OVERHEAD_FROM_TIMING),
                        )
                    ],
                )
            ],
        )
    ]
