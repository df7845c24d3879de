package tiermesh.routing_test

import data.tiermesh.routing

# A small catalog: a box on node n1, an on-prem GPU, a cloud API in the EU and
# one in the US. Every tier has the same simple defaults.
_retries := {"count": 1, "backoff_base_ms": 100, "backoff_max_ms": 1000, "retry_on": ["5xx"]}

_tier := {
	"timeout_ms": 30000,
	"first_byte_timeout_ms": 2000,
	"retries": _retries,
	"circuit_breaker": {"max_connections": 8, "max_pending": 8, "max_requests": 8, "max_retries": 2},
	"outlier_detection": {"consecutive_5xx": 3, "interval_ms": 5000, "base_ejection_ms": 10000, "max_ejection_percent": 50},
	"health_check": {"interval_ms": 5000, "timeout_ms": 1000, "unhealthy_threshold": 2, "healthy_threshold": 1},
}

_backend(name, tier, residency, region, cost, complexity, models) := {
	"name": name,
	"tier": tier,
	"node": object.get({"local": "n1"}, tier, null),
	"region": region,
	"residency": residency,
	"cost_per_1k_tokens": {"input": cost, "output": 0},
	"capacity": 8,
	"models": models,
	"max_complexity": complexity,
	"max_sensitivity": null,
	"endpoint": {"host": name, "port": 8000, "tls": false},
	"spiffe_id": null,
	"health_check": "/v1/models",
	"resilience": null,
}

_box := _backend("box", "local", "eu", "eu-west", 0, 1, ["small"])

_gpu := object.union(_backend("gpu", "private", "onprem", "eu-west", 0.001, 3, ["medium", "small"]), {"max_sensitivity": "restricted"})

_api_eu := _backend("api-eu", "cloud", "eu", "eu-west", 0.02, 5, ["large"])

_api_us := _backend("api-us", "cloud", "us", "us-east", 0.01, 5, ["large"])

_tenant(name, residency, tiers) := {
	"name": name,
	"residency": residency,
	"monthly_budget_usd": 10,
	"allowed_tiers": tiers,
	"restricted_tiers": ["local"],
	"default_sensitivity": "internal",
	"rate_limit": null,
	"resilience": null,
}

_catalog(backends, tenants, tasks) := {
	"version": "v1",
	"defaults": {
		"tiers": {"local": _tier, "private": _tier, "cloud": _tier},
		"rate_limit": {"tokens_per_fill": 10, "fill_interval_ms": 1000, "max_tokens": 20},
		"default_task": tasks[0].name,
		"max_chain_length": 4,
	},
	"backends": backends,
	"tenants": tenants,
	"aliases": [{"name": "smart", "models": ["large", "medium"]}],
	"tasks": tasks,
}

_classify := {"name": "classify", "complexity": 1, "strategy": "capability"}

_reasoning := {"name": "reasoning", "complexity": 4, "strategy": "capability"}

_cascade := {"name": "cascade", "complexity": 4, "strategy": "cascade"}

_node(id) := {"node": {"id": id, "tier": "local", "region": "eu-west", "residency": ["eu"]}}

_step(backend, tier, model, degraded, hedge_ms) := {
	"backend": backend,
	"tier": tier,
	"model": model,
	"degraded": degraded,
	"timeout_ms": 30000,
	"retries": _retries,
	"hedge": _hedge(hedge_ms),
}

_hedge(0) := null

_hedge(ms) := {"per_try_timeout_ms": ms} if ms > 0

_route(tenant, sensitivity, task, model, chain) := {
	"name": concat(".", [tenant, sensitivity, task, model]),
	"match": {"tenant": tenant, "sensitivity": sensitivity, "task": task, "model": model},
	"chain": chain,
	"fail_closed": sensitivity == "restricted",
	"budget_exhausted": false,
	"budget_fallback": chain,
	"rate_limit": {"tokens_per_fill": 10, "fill_interval_ms": 1000, "max_tokens": 20},
}

_cluster(backend) := {
	"name": backend.name,
	"tier": backend.tier,
	"region": backend.region,
	"residency": backend.residency,
	"endpoint": backend.endpoint,
	"spiffe_id": null,
	"circuit_breaker": _tier.circuit_breaker,
	"outlier_detection": _tier.outlier_detection,
	"health_check": object.union(_tier.health_check, {"path": "/v1/models"}),
}

_route_named(plan, name) := route if {
	some route in plan.routes
	route.name == name
}

# A tenant on the box alone: the whole plan, every route.
test_whole_plan_for_a_local_only_tenant if {
	catalog := _catalog([_box, _api_eu], [_tenant("solo", ["eu"], ["local"])], [_classify])
	plan := routing.plan with data.catalog as catalog with data.usage as {} with input as _node("n1")
	box := [_step("box", "local", null, false, 0)]
	box_smart := []
	plan == {
		"version": "v1",
		"node": {"id": "n1", "tier": "local", "region": "eu-west", "residency": ["eu"]},
		"routes": [
			_route("solo", "public", "classify", "smart", box_smart),
			_route("solo", "public", "classify", "*", box),
			_route("solo", "public", "*", "smart", box_smart),
			_route("solo", "public", "*", "*", box),
			_route("solo", "internal", "classify", "smart", box_smart),
			_route("solo", "internal", "classify", "*", box),
			_route("solo", "internal", "*", "smart", box_smart),
			_route("solo", "internal", "*", "*", box),
			_route("solo", "restricted", "classify", "smart", box_smart),
			_route("solo", "restricted", "classify", "*", box),
			_route("solo", "restricted", "*", "smart", box_smart),
			_route("solo", "restricted", "*", "*", box),
		],
		"backends": [_cluster(_box)],
		"violations": [
			"tenant solo: no backend for internal data with model smart on node n1 (residency eu; tiers local)",
			"tenant solo: no backend for public data with model smart on node n1 (residency eu; tiers local)",
		],
		"warnings": ["tenant solo: restricted data with model smart on node n1 has no cleared backend; it fails closed (503)"],
	}
}

test_simple_task_stays_local_first if {
	catalog := _catalog([_api_eu, _gpu, _box], [_tenant("acme", ["eu", "onprem"], ["local", "private", "cloud"])], [_classify])
	plan := routing.plan with data.catalog as catalog with data.usage as {} with input as _node("n1")
	route := _route("acme", "public", "classify", "*", [
		_step("box", "local", null, false, 2000),
		_step("gpu", "private", null, false, 2000),
		_step("api-eu", "cloud", null, false, 0),
	])
	fallback := [_step("box", "local", null, false, 2000), _step("gpu", "private", null, false, 0)]
	_route_named(plan, "acme.public.classify.*") == object.union(route, {"budget_fallback": fallback})
}

# Stream from the big model; when its first byte is late, fall back to the box.
test_hard_task_starts_big_and_hedges_to_local if {
	catalog := _catalog([_box, _gpu, _api_eu], [_tenant("acme", ["eu", "onprem"], ["local", "private", "cloud"])], [_reasoning])
	plan := routing.plan with data.catalog as catalog with data.usage as {} with input as _node("n1")
	_route_named(plan, "acme.internal.reasoning.*").chain == [
		_step("gpu", "private", null, true, 2000),
		_step("box", "local", null, true, 0),
	]
	_route_named(plan, "acme.public.reasoning.*").chain == [
		_step("api-eu", "cloud", null, false, 2000),
		_step("gpu", "private", null, true, 2000),
		_step("box", "local", null, true, 0),
	]
	"tenant acme: no backend capable of task reasoning for internal data on node n1; its chains are degraded" in plan.warnings
}

test_cascade_escalates_from_the_cheapest_tier if {
	catalog := _catalog([_api_eu, _gpu, _box], [_tenant("acme", ["eu", "onprem"], ["local", "private", "cloud"])], [_cascade])
	plan := routing.plan with data.catalog as catalog with data.usage as {} with input as _node("n1")
	[step.backend | some step in _route_named(plan, "acme.public.cascade.*").chain] == ["box", "gpu", "api-eu"]
}

test_restricted_is_local_and_fails_closed if {
	catalog := _catalog([_box, _gpu, _api_eu], [_tenant("acme", ["eu", "onprem"], ["local", "private", "cloud"])], [_classify])
	plan := routing.plan with data.catalog as catalog with data.usage as {} with input as _node("n1")
	_route_named(plan, "acme.restricted.classify.*") == _route("acme", "restricted", "classify", "*", [_step("box", "local", null, false, 0)])
}

test_restricted_private_needs_tenant_and_backend_consent if {
	tenant := object.union(_tenant("acme", ["eu", "onprem"], ["local", "private", "cloud"]), {"restricted_tiers": ["local", "private"]})
	uncleared_gpu := object.union(_gpu, {"max_sensitivity": null})
	chains := [[step.backend | some step in _route_named(plan, "acme.restricted.classify.*").chain] |
		some gpu in [_gpu, uncleared_gpu]
		plan := routing.plan with data.catalog as _catalog([_box, gpu], [tenant], [_classify]) with data.usage as {} with input as _node("n1")
	]
	chains == [["box", "gpu"], ["box"]]
}

# Even a catalog that clears a cloud backend for restricted data and lets the
# tenant send restricted data to the cloud gets no cloud step.
test_cloud_never_serves_restricted_data if {
	api := object.union(_api_eu, {"max_sensitivity": "restricted"})
	tenant := object.union(_tenant("acme", ["eu"], ["local", "cloud"]), {"restricted_tiers": ["local", "cloud"]})
	plan := routing.plan with data.catalog as _catalog([api, _box], [tenant], [_classify]) with data.usage as {} with input as _node("n1")
	restricted_tiers := {step.tier | some route in plan.routes; route.fail_closed; some step in route.chain}
	restricted_tiers == {"local"}
	"backend api-eu: a cloud backend is never cleared for restricted data; it is left out of restricted routes" in plan.violations
}

# Restricted data on a node without a cleared backend answers 503: the intended
# fail-closed outcome, so a warning that lets the rest of the mesh be published.
test_restricted_without_a_local_backend_fails_closed_with_a_warning if {
	catalog := _catalog([_box, _api_eu], [_tenant("acme", ["eu"], ["local", "cloud"])], [_classify])
	plan := routing.plan with data.catalog as catalog with data.usage as {} with input as _node("n2")
	_route_named(plan, "acme.restricted.*.*") == _route("acme", "restricted", "*", "*", [])
	"tenant acme: restricted data with model * on node n2 has no cleared backend; it fails closed (503)" in plan.warnings
	_route_named(plan, "acme.public.*.*").chain == [_step("api-eu", "cloud", null, false, 0)]
	every msg in plan.violations {
		not contains(msg, "restricted")
	}
}

# An empty public or internal chain means nothing in the catalog can serve the
# route: a broken catalog, reported as a violation.
test_an_empty_public_or_internal_chain_is_a_violation if {
	catalog := _catalog([_box, _api_eu], [_tenant("acme", ["eu"], ["local"])], [_classify])
	plan := routing.plan with data.catalog as catalog with data.usage as {} with input as _node("n2")
	every route in plan.routes {
		route.chain == []
	}
	plan.violations == [
		"tenant acme: no backend for internal data with model * on node n2 (residency eu; tiers local)",
		"tenant acme: no backend for internal data with model smart on node n2 (residency eu; tiers local)",
		"tenant acme: no backend for public data with model * on node n2 (residency eu; tiers local)",
		"tenant acme: no backend for public data with model smart on node n2 (residency eu; tiers local)",
	]
	plan.warnings == [
		"tenant acme: restricted data with model * on node n2 has no cleared backend; it fails closed (503)",
		"tenant acme: restricted data with model smart on node n2 has no cleared backend; it fails closed (503)",
	]
}

test_residency_excludes_backends_outside if {
	catalog := _catalog([_box, _api_us, _api_eu], [_tenant("acme", ["eu"], ["local", "cloud"])], [_reasoning])
	plan := routing.plan with data.catalog as catalog with data.usage as {} with input as _node("n1")
	every route in plan.routes {
		every step in route.chain {
			step.backend != "api-us"
		}
	}
}

test_same_region_before_cheaper_elsewhere if {
	catalog := _catalog([_box, _api_us, _api_eu], [_tenant("globex", ["eu", "us"], ["cloud"])], [_reasoning])
	plan := routing.plan with data.catalog as catalog with data.usage as {} with input as _node("n1")
	[step.backend | some step in _route_named(plan, "globex.public.*.*").chain] == ["api-eu", "api-us"]
}

test_alias_picks_backends_and_rewrites_the_model if {
	catalog := _catalog([_box, _gpu, _api_eu], [_tenant("acme", ["eu", "onprem"], ["local", "private", "cloud"])], [_reasoning])
	plan := routing.plan with data.catalog as catalog with data.usage as {} with input as _node("n1")
	_route_named(plan, "acme.public.reasoning.smart").chain == [
		_step("api-eu", "cloud", "large", false, 2000),
		_step("gpu", "private", "medium", true, 0),
	]
}

test_routes_list_specific_matches_before_wildcards if {
	catalog := _catalog([_box], [_tenant("solo", ["eu"], ["local"])], [_reasoning, _classify])
	plan := routing.plan with data.catalog as catalog with data.usage as {} with input as _node("n1")
	[route.name | some route in plan.routes; route.match.sensitivity == "public"] == [
		"solo.public.classify.smart", "solo.public.classify.*",
		"solo.public.reasoning.smart", "solo.public.reasoning.*",
		"solo.public.*.smart", "solo.public.*.*",
	]
	# * takes the default task, the first listed here
	_route_named(plan, "solo.public.*.*").chain == [_step("box", "local", null, true, 0)]
}

test_spent_budget_goes_local_first_not_refused if {
	catalog := _catalog([_api_eu, _gpu, _box], [_tenant("acme", ["eu", "onprem"], ["local", "private", "cloud"])], [_reasoning])
	plan := routing.plan with data.catalog as catalog with data.usage as {"acme": {"spent_usd": 10}} with input as _node("n1")
	cheap := [_step("box", "local", null, true, 2000), _step("gpu", "private", null, true, 0)]
	_route_named(plan, "acme.public.reasoning.*") == object.union(
		_route("acme", "public", "reasoning", "*", cheap),
		{"budget_exhausted": true},
	)
	"tenant acme: monthly budget spent; routes prefer the local and private tiers" in plan.warnings
}

test_budget_fallback_is_ready_before_the_budget_is_spent if {
	catalog := _catalog([_api_eu, _gpu, _box], [_tenant("acme", ["eu", "onprem"], ["local", "private", "cloud"])], [_reasoning])
	plan := routing.plan with data.catalog as catalog with data.usage as {"acme": {"spent_usd": 9.99}} with input as _node("n1")
	route := _route_named(plan, "acme.public.reasoning.*")
	route.budget_exhausted == false
	[step.backend | some step in route.chain] == ["api-eu", "gpu", "box"]
	[step.backend | some step in route.budget_fallback] == ["box", "gpu"]
}

test_chains_are_capped if {
	catalog := json.patch(_catalog([_box, _gpu, _api_eu, _api_us], [_tenant("any", ["eu", "us", "onprem"], ["local", "private", "cloud"])], [_classify]), [{"op": "replace", "path": "/defaults/max_chain_length", "value": 2}])
	plan := routing.plan with data.catalog as catalog with data.usage as {} with input as _node("n1")
	[step.backend | some step in _route_named(plan, "any.public.*.*").chain] == ["box", "gpu"]
}

test_tenant_rate_limit_overrides_the_default if {
	limit := {"tokens_per_fill": 1, "fill_interval_ms": 60000, "max_tokens": 1}
	tenant := object.union(_tenant("acme", ["eu"], ["local"]), {"rate_limit": limit})
	plan := routing.plan with data.catalog as _catalog([_box], [tenant], [_classify]) with data.usage as {} with input as _node("n1")
	every route in plan.routes {
		route.rate_limit == limit
	}
}

test_no_plan_without_a_node if {
	not routing.plan with data.catalog as _catalog([_box], [], [_classify]) with input as {}
}

# With require_signed_models naming restricted, restricted routes keep only backends
# whose catalog entry names signers; other sensitivities are untouched.
test_restricted_traffic_only_to_signed_backends_when_required if {
	tenant := object.union(_tenant("acme", ["eu", "onprem"], ["local", "private", "cloud"]), {"restricted_tiers": ["local", "private"]})
	signed_gpu := object.union(_gpu, {"signers": [{"public_key": "k", "certificate_identity": null, "roots": null}]})
	base := _catalog([_box, signed_gpu], [tenant], [_classify])
	demanding := object.union(base, {"defaults": object.union(base.defaults, {"require_signed_models": ["restricted"]})})
	chains := [[[step.backend | some step in _route_named(plan, name).chain] |
		some name in ["acme.restricted.classify.*", "acme.internal.classify.*"]
	] |
		some catalog in [base, demanding]
		plan := routing.plan with data.catalog as catalog with data.usage as {} with input as _node("n1")
	]
	chains == [[["box", "gpu"], ["box", "gpu"]], [["gpu"], ["box", "gpu"]]]
}
