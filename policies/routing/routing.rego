# METADATA
# title: Routing
# description: |
#   The compile-time route table of one node (input.node) from data.catalog and
#   data.usage. One route per tenant, sensitivity, task (or *) and model alias
#   (or *), most specific first. Chains are filtered by tier, residency, node,
#   sensitivity clearance and model, then ordered by task complexity, tier,
#   region and cost. Restricted routes fail closed and never hold a cloud backend.
#   The decision follows policies/schemas/plan.schema.json.
package tiermesh.routing

import data.tiermesh.budget
import data.tiermesh.residency
import data.tiermesh.resilience

# METADATA
# description: The Plan for input.node; undefined without a node id.
plan := {
	"version": "v1",
	"node": _node,
	"routes": routes,
	"backends": backends,
	"violations": sort([msg | some msg in violations]),
	"warnings": sort([msg | some msg in warnings]),
} if {
	is_string(input.node.id)
}

# METADATA
# description: Data classes, least sensitive first.
sensitivities := ["public", "internal", "restricted"]

# METADATA
# description: Routes in match order (first match wins).
routes := [_route(_tenant(key[0]), key[6], key[3], key[5]) | some key in _route_keys]

# METADATA
# description: Every backend named by some chain or budget fallback, by name.
backends := [resilience.cluster(_backend(name)) | some name in sort([used | some used in _used_backends])]

# METADATA
# description: |
#   Public or internal routes whose chain is empty (nothing in the catalog can serve
#   them: a broken catalog), and catalog entries the policy refuses to use. An empty
#   restricted chain is not one: it fails closed by design and is a warning.
violations contains msg if {
	some tenant in data.catalog.tenants
	some sensitivity in sensitivities
	sensitivity != "restricted"
	some alias in _alias_names
	count(_eligible(tenant, sensitivity, alias)) == 0
	msg := sprintf("tenant %s: no backend for %s data with model %s on node %s (residency %s; tiers %s)", [tenant.name, sensitivity, alias, input.node.id, concat(", ", tenant.residency), concat(", ", _tiers_for(tenant, sensitivity))])
}

violations contains msg if {
	some backend in data.catalog.backends
	backend.tier == "cloud"
	_clearance(backend) == "restricted"
	msg := sprintf("backend %s: a cloud backend is never cleared for restricted data; it is left out of restricted routes", [backend.name])
}

violations contains msg if some msg in residency.violations

# METADATA
# description: |
#   Restricted routes with no cleared backend on this node (they answer 503, the
#   intended fail-closed outcome), degraded chains (no backend capable of the task)
#   and budget notices.
warnings contains msg if {
	some tenant in data.catalog.tenants
	some alias in _alias_names
	count(_eligible(tenant, "restricted", alias)) == 0
	msg := sprintf("tenant %s: restricted data with model %s on node %s has no cleared backend; it fails closed (503)", [tenant.name, alias, input.node.id])
}

warnings contains msg if {
	some tenant in data.catalog.tenants
	some sensitivity in sensitivities
	some task in data.catalog.tasks
	some alias in _alias_names
	chain := _ordered(tenant, sensitivity, task, alias)
	count(chain) > 0
	every backend in chain {
		_incapable(backend, task)
	}
	msg := sprintf("tenant %s: no backend capable of task %s for %s data on node %s; its chains are degraded", [tenant.name, task.name, sensitivity, input.node.id])
}

warnings contains msg if {
	some tenant in data.catalog.tenants
	budget.exhausted(tenant)
	some sensitivity in sensitivities
	some alias in _alias_names
	eligible := _eligible(tenant, sensitivity, alias)
	count(eligible) > 0
	count(_cheap(eligible)) == 0
	msg := sprintf("tenant %s: no local or private backend for %s data with model %s; its spent budget keeps paid backends", [tenant.name, sensitivity, alias])
}

warnings contains msg if some msg in budget.warnings

# --- helpers ---------------------------------------------------------------

_sensitivity_rank := {"public": 0, "internal": 1, "restricted": 2}

_tier_rank := {"local": 0, "private": 1, "cloud": 2}

_default_clearance := {"local": "restricted", "private": "internal", "cloud": "public"}

_node := {
	"id": input.node.id,
	"tier": input.node.tier,
	"region": input.node.region,
	"residency": object.get(input.node, "residency", []),
}

_tenant(name) := tenant if {
	some tenant in data.catalog.tenants
	tenant.name == name
}

_backend(name) := backend if {
	some backend in data.catalog.backends
	backend.name == name
}

_task(name) := task if {
	some task in data.catalog.tasks
	task.name == name
}

_default_task_name := object.get(data.catalog, ["defaults", "default_task"], "chat")

_task_names := array.concat([task.name | some task in data.catalog.tasks], ["*"])

_alias_names := array.concat([alias.name | some alias in data.catalog.aliases], ["*"])

_max_chain_length := object.get(data.catalog, ["defaults", "max_chain_length"], 4)

_wildcard_rank("*") := 1

_wildcard_rank(name) := 0 if name != "*"

# [tenant, sensitivity rank, task wildcard, task, model wildcard, model, sensitivity]:
# sorted, specific tasks and models come before the * that catches the rest.
_route_keys := sort([[tenant.name, _sensitivity_rank[sensitivity], _wildcard_rank(task), task, _wildcard_rank(alias), alias, sensitivity] |
	some tenant in data.catalog.tenants
	some sensitivity in sensitivities
	some task in _task_names
	some alias in _alias_names
])

_route(tenant, sensitivity, task_name, alias) := {
	"name": concat(".", [tenant.name, sensitivity, task_name, alias]),
	"match": {"tenant": tenant.name, "sensitivity": sensitivity, "task": task_name, "model": alias},
	"chain": chain,
	"fail_closed": sensitivity == "restricted",
	"budget_exhausted": exhausted,
	"budget_fallback": fallback,
	"rate_limit": _rate_limit(tenant),
} if {
	task := _route_task(task_name)
	cheap_chain := _steps(_cheap_ordered(tenant, sensitivity, task, alias), tenant, task, alias)
	exhausted := _exhausted(tenant)
	chain := _chain(exhausted, cheap_chain, _steps(_ordered(tenant, sensitivity, task, alias), tenant, task, alias))
	fallback := cheap_chain
}

_chain(true, cheap_chain, _) := cheap_chain

_chain(false, _, chain) := chain

_route_task("*") := _task(_default_task_name)

_route_task(name) := _task(name) if name != "*"

_exhausted(tenant) := true if budget.exhausted(tenant) else := false

_rate_limit(tenant) := limit if {
	limit := tenant.rate_limit
	limit != null
} else := object.get(data.catalog, ["defaults", "rate_limit"], null)

_used_backends contains step.backend if {
	some route in routes
	some step in array.concat(route.chain, route.budget_fallback)
}

# Tiers a tenant's data of this sensitivity may use.
_tiers_for(tenant, "restricted") := [tier |
	some tier in object.get(tenant, "restricted_tiers", ["local"])
	tier != "cloud"
	tier in tenant.allowed_tiers
]

_tiers_for(tenant, sensitivity) := tenant.allowed_tiers if sensitivity != "restricted"

_clearance(backend) := clearance if {
	clearance := backend.max_sensitivity
	clearance != null
} else := _default_clearance[backend.tier]

# Restricted data: local or private tiers the tenant allows for it, on backends
# cleared for restricted data, and never the cloud whatever the data says.
_cleared(backend, "restricted") if {
	backend.tier != "cloud"
	_clearance(backend) == "restricted"
}

_cleared(backend, sensitivity) if {
	sensitivity != "restricted"
	_sensitivity_rank[_clearance(backend)] >= _sensitivity_rank[sensitivity]
}

# A local backend serves its own node only (every node when it names none).
_on_this_node(backend) if backend.tier != "local"

_on_this_node(backend) if {
	backend.tier == "local"
	object.get(backend, "node", null) == null
}

_on_this_node(backend) if {
	backend.tier == "local"
	backend.node == input.node.id
}

# The model a backend is asked for under an alias: the alias's first model it serves.
_model_for(_, "*") := null

_model_for(backend, alias_name) := served[0] if {
	alias_name != "*"
	some alias in data.catalog.aliases
	alias.name == alias_name
	served := [model | some model in alias.models; model in backend.models]
	count(served) > 0
}

_eligible(tenant, sensitivity, alias) := [backend |
	some backend in data.catalog.backends
	backend.tier in _tiers_for(tenant, sensitivity)
	residency.permits(tenant, backend)
	_on_this_node(backend)
	_cleared(backend, sensitivity)
	_ := _model_for(backend, alias)
]

_incapable(backend, task) if backend.max_complexity < task.complexity

_capability_rank(backend, task) := [1, 0 - backend.max_complexity] if {
	_incapable(backend, task)
} else := [0, 0]

_region_rank(backend) := 0 if backend.region == input.node.region else := 1

# capability: capable backends first, cheapest tier first; then the incapable
# ones, most capable first, as degraded fallback.
# cascade: cheapest tier first, escalating to bigger tiers.
_order_key(backend, task) := [_tier_rank[backend.tier], budget.cost(backend), _region_rank(backend), 0, backend.name] if {
	object.get(task, "strategy", "capability") == "cascade"
} else := array.concat(_capability_rank(backend, task), [_tier_rank[backend.tier], _region_rank(backend), budget.cost(backend), backend.name])

_ordered(tenant, sensitivity, task, alias) := _first([_backend(key[count(key) - 1]) | some key in sort([_order_key(backend, task) | some backend in _eligible(tenant, sensitivity, alias)])])

# A spent budget: the local and private tiers, cheapest first; paid tiers only
# when the tenant has nothing else.
_cheap(backends) := [backend | some backend in backends; backend.tier in budget.cheap_tiers]

_cheap_ordered(tenant, sensitivity, task, alias) := _first([_backend(key[count(key) - 1]) | some key in sort([[budget.cost(backend), _tier_rank[backend.tier], _region_rank(backend), backend.name] | some backend in _cheap_or_all(_eligible(tenant, sensitivity, alias))])])

_cheap_or_all(backends) := _cheap(backends) if count(_cheap(backends)) > 0 else := backends

_first(backends) := array.slice(backends, 0, _max_chain_length)

_steps(backends, tenant, task, alias) := [resilience.step(backend, tenant, _model_for(backend, alias), _degraded(backend, task), i, count(backends)) | some i, backend in backends]

_degraded(backend, task) := true if _incapable(backend, task) else := false
