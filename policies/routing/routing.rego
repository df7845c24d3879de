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
# description: |
#   The Plan for input.node; undefined without a node id. It is compact_plan
#   expanded: each tenant's route set with the tenant put into every route and
#   each step id replaced by that step of the tenant's step group.
plan := object.union(object.remove(compact_plan, ["steps", "route_sets", "tenants"]), {"routes": routes})

# METADATA
# description: |
#   The Plan for input.node in compact form (what the control plane evaluates),
#   policies/schemas/compact_plan.schema.json. Tenants whose routes are equal but
#   for the tenant and their steps' settings share one route set: "route_sets"
#   holds each set once (its routes named and matched without the tenant, chains
#   as lists of step ids), "steps" holds every chain step once per step group
#   (tenants with equal resilience overrides share a group; every group has the
#   same ids), and "tenants" names each tenant's set and group in route order.
#   Undefined without a node id.
compact_plan := {
	"version": "v1",
	"node": _node,
	"steps": _step_defs,
	"route_sets": _route_sets,
	"tenants": [{"tenant": name, "routes": _route_set_of[name], "steps": _group[name]} | some name in _tenant_order],
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
routes := [route |
	some tenant_name in _tenant_order
	templates := _route_sets[_route_set_of[tenant_name]]
	steps := _step_defs[_group[tenant_name]]
	some template in templates
	route := object.union(template, {
		"name": concat(".", [tenant_name, template.name]),
		"match": object.union(template.match, {"tenant": tenant_name}),
		"chain": [steps[id] | some id in template.chain],
		"budget_fallback": [steps[id] | some id in template.budget_fallback],
	})
]

# What a tenant's routes depend on besides its name and its step group: its spent
# budget, its rate limit and the backends eligible per [sensitivity, alias]. (The
# group only gives the steps' settings; the route set names steps by ids that are
# the same in every group.)
# Tenants of one shape share a route set, named r<i> after the shape's place among
# the sorted distinct shapes (found by lookup: linear in tenants, not quadratic).
_shape := {name: [_exhausted[name], _rate_limit[name], eligible] |
	some name in _tenant_order
	eligible := {[sensitivity, alias]: _eligible[[name, sensitivity, alias]] |
		some sensitivity in sensitivities
		some alias in _alias_names
	}
}

_set_of_shape := {shape: sprintf("r%d", [i]) | some i, shape in sort(_distinct_shapes)}

_distinct_shapes := {value | some _, value in _shape}

_route_set_of := {name: _set_of_shape[shape] | some name, shape in _shape}

_set_shape := {set_name: shape | some shape, set_name in _set_of_shape}

_set_names := {set_name | some _, set_name in _set_of_shape}

# Route set name -> its routes in match order: named <sensitivity>.<task>.<alias>,
# matched without the tenant, chains as step ids (keys of _step_defs).
_route_sets := {set_name: [route |
	by_sensitivity := _chains[set_name]
	shape := _set_shape[set_name]
	exhausted := shape[0]
	rate_limit := shape[1]
	some sensitivity in sensitivities
	fail_closed := sensitivity == "restricted"
	by_alias := by_sensitivity[sensitivity]
	some task_name in _task_order
	profile := _route_profile[task_name]
	some alias in _alias_order
	by_profile := by_alias[alias]
	chains := by_profile[profile]
	route := object.union(_cascade_of[task_name], {
		"name": concat(".", [sensitivity, task_name, alias]),
		"match": {"sensitivity": sensitivity, "task": task_name, "model": alias},
		"chain": chains.chain,
		"fail_closed": fail_closed,
		"budget_exhausted": exhausted,
		"budget_fallback": chains.fallback,
		"rate_limit": rate_limit,
	})
] |
	some set_name in _set_names
}

# METADATA
# description: Every backend named by some chain or budget fallback, by name.
backends := [resilience.cluster(_backend_named[name]) | some name in sort([used | some used in _used_backends])]

# METADATA
# description: |
#   Public or internal routes whose chain is empty (nothing in the catalog can serve
#   them: a broken catalog), and catalog entries the policy refuses to use. An empty
#   restricted chain is not one: it fails closed by design and is a warning.
violations contains msg if {
	some key, eligible in _eligible
	key[1] != "restricted"
	count(eligible) == 0
	tenant := _tenant_named[key[0]]
	msg := sprintf("tenant %s: no backend for %s data with model %s on node %s (residency %s; tiers %s)", [key[0], key[1], key[2], input.node.id, concat(", ", tenant.residency), concat(", ", _tiers_for(tenant, key[1]))])
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
	some key, eligible in _eligible
	key[1] == "restricted"
	count(eligible) == 0
	msg := sprintf("tenant %s: restricted data with model %s on node %s has no cleared backend; it fails closed (503)", [key[0], key[2], input.node.id])
}

warnings contains msg if {
	some key, eligible in _eligible
	names := _names[eligible]
	some task in data.catalog.tasks
	names.degraded[_profile_of[task.name]]
	msg := sprintf("tenant %s: no backend capable of task %s for %s data on node %s; its chains are degraded", [key[0], task.name, key[1], input.node.id])
}

warnings contains msg if {
	some key, eligible in _eligible
	_exhausted[key[0]]
	count(eligible) > 0
	count({name | some name in eligible; name in _cheap_names}) == 0
	msg := sprintf("tenant %s: no local or private backend for %s data with model %s; its spent budget keeps paid backends", [key[0], key[1], key[2]])
}

warnings contains msg if some msg in budget.warnings

# --- helpers ---------------------------------------------------------------
#
# Evaluation cost: a plan has tenants x sensitivities x (tasks + 1) x (aliases + 1)
# routes, so no route computes anything. This node's backends are ranked once per
# task profile (strategy and complexity: all that orders a chain), chain members
# are picked once per distinct set of eligible backends (_names), every step a
# chain can hold is made once per group of tenants with equal resilience overrides
# (_step_defs, by ids of _step_table that are the same in every group), and the
# chains and routes are assembled once per route set, shared by the tenants of one
# shape whatever their groups (_chains, _route_sets). A route is a few lookups. Refs index one variable key per step (x := a[k]; y := x[j]): regorus
# is many times slower on a chained a[k][j].

_sensitivity_rank := {"public": 0, "internal": 1, "restricted": 2}

_tier_rank := {"local": 0, "private": 1, "cloud": 2}

_default_clearance := {"local": "restricted", "private": "internal", "cloud": "public"}

_node := {
	"id": input.node.id,
	"tier": input.node.tier,
	"region": input.node.region,
	"residency": object.get(input.node, "residency", []),
}

_tenant_named := {tenant.name: tenant | some tenant in data.catalog.tenants}

_backend_named := {backend.name: backend | some backend in data.catalog.backends}

_default_task_name := object.get(data.catalog, ["defaults", "default_task"], "chat")

_alias_names := array.concat([alias.name | some alias in data.catalog.aliases], ["*"])

_max_chain_length := object.get(data.catalog, ["defaults", "max_chain_length"], 4)

# Route order: tenants by name, sensitivities least first, then tasks and aliases
# by name, each followed by the * that catches the rest.
_tenant_order := sort([tenant.name | some tenant in data.catalog.tenants])

_task_order := array.concat(sort([task.name | some task in data.catalog.tasks]), ["*"])

_alias_order := array.concat(sort([alias.name | some alias in data.catalog.aliases]), ["*"])

# A task's profile: its strategy and complexity, all that orders a chain and
# marks degraded steps. Tasks with the same profile share their chains.
_profile_of := {task.name: sprintf("%s %v", [_strategy(task), task.complexity]) | some task in data.catalog.tasks}

_strategy(task) := object.get(task, "strategy", "capability")

_profiles := {profile: {"strategy": _strategy(task), "complexity": task.complexity} |
	some task in data.catalog.tasks
	profile := _profile_of[task.name]
}

_complexities := {task.complexity | some task in data.catalog.tasks}

# The profile of each route's task: * takes the default task's (no * when the
# catalog lacks it, and so no * routes).
_route_profile := object.union(_profile_of, {"*": profile | profile := _profile_of[_default_task_name]})

# A cascade task with a confidence threshold adds "cascade" to its routes (the
# wildcard task's routes follow the default task); every other route has none.
_cascade_of := object.union(_task_cascade, {"*": _task_cascade[_default_task_name]})

_task_cascade := {task.name: _cascade(task) | some task in data.catalog.tasks}

_cascade(task) := {"cascade": {"min_confidence": task.min_confidence}} if {
	_strategy(task) == "cascade"
	is_number(task.min_confidence)
} else := {}

_exhausted := {tenant.name: _spent(tenant) | some tenant in data.catalog.tenants}

_spent(tenant) := true if budget.exhausted(tenant) else := false

_rate_limit := {tenant.name: _tenant_rate_limit(tenant) | some tenant in data.catalog.tenants}

_tenant_rate_limit(tenant) := limit if {
	limit := tenant.rate_limit
	limit != null
} else := object.get(data.catalog, ["defaults", "rate_limit"], null)

# The backends of every route's chain and budget fallback: the fallback always, the
# ordered chain unless the budget is spent. (Every profile has routes, when there
# are tasks at all.)
_used_backends contains name if {
	count(_profiles) > 0
	some key, eligible in _eligible
	names := _names[eligible]
	some name in names.cheap
}

_used_backends contains name if {
	count(_profiles) > 0
	some key, eligible in _eligible
	not _exhausted[key[0]]
	names := _names[eligible]
	some ordered in names.ordered
	some name in ordered
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

# Sensitivities whose traffic only backends with signers may serve: their node
# verifies the model's signature before serving it and reports unsigned models unhealthy.
_requires_signature(sensitivity) if {
	sensitivity in object.get(data.catalog.defaults, "require_signed_models", [])
}

_signed_enough(_, sensitivity) if not _requires_signature(sensitivity)

_signed_enough(backend, _) if count(object.get(backend, "signers", [])) > 0

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

# The backends this node may route to, in catalog order.
_here := [backend | some backend in data.catalog.backends; _on_this_node(backend)]

# Alias name -> backend name -> the model the backend is asked for under the alias
# (the alias's first model it serves); under * every backend, asked for no model.
_model_for := object.union(
	{alias.name: models |
		some alias in data.catalog.aliases
		models := {backend.name: served[0] |
			some backend in data.catalog.backends
			served := [model | some model in alias.models; model in backend.models]
			count(served) > 0
		}
	},
	{"*": {backend.name: null | some backend in data.catalog.backends}},
)

# [tenant, sensitivity, alias] -> names of the backends that may serve it here.
_eligible := {[tenant.name, sensitivity, alias]: eligible |
	some tenant in data.catalog.tenants
	some sensitivity in sensitivities
	tiers := _tiers_for(tenant, sensitivity)
	permitted := [backend |
		some backend in _here
		backend.tier in tiers
		residency.permits(tenant, backend)
		_cleared(backend, sensitivity)
		_signed_enough(backend, sensitivity)
	]
	some alias in _alias_names
	models := _model_for[alias]
	eligible := {backend.name | some backend in permitted; _ := models[backend.name]}
}

_incapable(backend, task) if backend.max_complexity < task.complexity

_capability_rank(backend, task) := [1, 0 - backend.max_complexity] if {
	_incapable(backend, task)
} else := [0, 0]

_region_rank(backend) := 0 if backend.region == input.node.region else := 1

# capability: capable backends first, cheapest tier first; then the incapable
# ones, most capable first, as degraded fallback.
# cascade: cheapest tier first, escalating to bigger tiers.
_order_key(backend, task) := [_tier_rank[backend.tier], budget.cost(backend), _region_rank(backend), 0, backend.name] if {
	task.strategy == "cascade"
} else := array.concat(_capability_rank(backend, task), [_tier_rank[backend.tier], _region_rank(backend), budget.cost(backend), backend.name])

# Profile -> names of this node's backends in chain order. A chain is the
# eligible ones in this order, cut to the maximum length.
_ranked := {profile: [key[count(key) - 1] | some key in sort([_order_key(backend, task) | some backend in _here])] |
	some profile, task in _profiles
}

# A spent budget: the local and private tiers, cheapest first; paid tiers only
# when the tenant has nothing else.
_cheap_ranked := [key[3] | some key in sort([[budget.cost(backend), _tier_rank[backend.tier], _region_rank(backend), backend.name] | some backend in _here])]

_cheap_names := {backend.name | some backend in _here; backend.tier in budget.cheap_tiers}

_cheap_or_all(eligible) := cheap if {
	cheap := {name | some name in eligible; name in _cheap_names}
	count(cheap) > 0
} else := eligible

_max_complexity := {backend.name: backend.max_complexity | some backend in _here}

# Eligible backends -> the backends of the budget fallback chain ("cheap"), and per
# profile those of the ordered chain and whether all of them are below the task.
# Keyed by the set, so tenants, sensitivities and aliases with the same eligible
# backends share the work.
_eligible_sets := {eligible | some eligible in _eligible}

_names := {eligible: {"cheap": cheap, "ordered": ordered, "degraded": degraded} |
	some eligible in _eligible_sets
	cheap_or_all := _cheap_or_all(eligible)
	cheap := array.slice([name | some name in _cheap_ranked; name in cheap_or_all], 0, _max_chain_length)
	ordered := {profile: array.slice([name | some name in ranked; name in eligible], 0, _max_chain_length) |
		some profile, ranked in _ranked
	}
	degraded := {profile: _all_degraded(ordered[profile], task.complexity) | some profile, task in _profiles}
}

# Tenants whose resilience overrides are equal share their steps: a group, named
# g<i> after the overrides' place among the sorted distinct ones. (A step depends on
# its tenant only through the overrides, see resilience.request_settings.)
_overrides := {tenant.name: object.get(tenant, "resilience", null) | some tenant in data.catalog.tenants}

_group_of_overrides := {overrides: sprintf("g%d", [i]) | some i, overrides in sort(_distinct_overrides)}

_distinct_overrides := {value | some _, value in _overrides}

_group := {name: _group_of_overrides[overrides] | some name, overrides in _overrides}

# Group -> a stand-in tenant holding the group's overrides.
_group_tenant := {group: {"resilience": overrides} | some overrides, group in _group_of_overrides}

# Alias -> backend -> degraded -> last -> the id of the chain step (a key of every
# group's table in _step_defs): every step a chain of this node can hold, named once.
_step_table := {alias: {backend.name: {degraded: {last: _step_id(alias, backend.name, degraded, last) | some last in [false, true]} |
	some degraded in _degraded_values(backend)
} |
	some backend in _here
	_ := models[backend.name]
} |
	some alias, models in _model_for
}

_degraded_values(backend) := {below | some complexity in _complexities; below := backend.max_complexity < complexity}

_step_id(alias, backend, degraded, last) := concat("/", [alias, backend, _flag[degraded], _flag[last]])

_flag := {false: "0", true: "1"}

# Group -> step id -> the chain step (the group's settings).
_step_defs := {group: {id: resilience.chain_step(settings, model, degraded, last) |
	some alias, steps in _step_table
	models := _model_for[alias]
	some backend, by_degraded in steps
	model := models[backend]
	settings := by_backend[backend]
	some degraded, by_last in by_degraded
	some last, id in by_last
} |
	some group, by_backend in _group_settings
}

# Group -> backend -> what every step of the backend shares for the group's tenants.
_group_settings := {group: {backend.name: resilience.request_settings(backend, tenant) | some backend in _here} |
	some group, tenant in _group_tenant
}

# Route set -> sensitivity -> alias -> profile -> the route's chain (the budget
# fallback when the budget is spent) and its budget fallback, as step ids, made from
# the set's shape.
_chains := {set_name: {sensitivity: {alias: _profile_chains(set_name, sensitivity, alias) |
	some alias in _alias_names
} |
	some sensitivity in sensitivities
} |
	some set_name in _set_names
}

_profile_chains(set_name, sensitivity, alias) := {profile: chains |
	shape := _set_shape[set_name]
	eligible_by := shape[2]
	names := _names[eligible_by[[sensitivity, alias]]]
	steps := _step_table[alias]
	cheap := names.cheap
	fallbacks := {complexity: _steps(cheap, steps, complexity) | some complexity in _complexities}
	ordered_by_profile := names.ordered
	exhausted := shape[0]
	some profile, task in _profiles
	fallback := fallbacks[task.complexity]
	chains := {
		"chain": _chain(exhausted, fallback, ordered_by_profile[profile], steps, task.complexity),
		"fallback": fallback,
	}
}

_chain(true, fallback, _, _, _) := fallback

_chain(false, _, ordered, steps, complexity) := _steps(ordered, steps, complexity)

_all_degraded(names, complexity) := true if {
	count(names) > 0
	every name in names {
		_max_complexity[name] < complexity
	}
} else := false

_steps(names, steps, complexity) := [step |
	last := count(names) - 1
	some i, name in names
	by_degraded := steps[name]
	by_last := by_degraded[_max_complexity[name] < complexity]
	step := by_last[i == last]
]
