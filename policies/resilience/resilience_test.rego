package tiermesh.resilience_test

import data.tiermesh.resilience

_retries(count) := {"count": count, "backoff_base_ms": 100, "backoff_max_ms": 1000, "retry_on": ["5xx"]}

_tier := {
	"timeout_ms": 30000,
	"first_byte_timeout_ms": 2000,
	"retries": _retries(1),
	"circuit_breaker": {"max_connections": 8, "max_pending": 8, "max_requests": 8, "max_retries": 2},
	"outlier_detection": {"consecutive_5xx": 3, "interval_ms": 5000, "base_ejection_ms": 10000, "max_ejection_percent": 50},
	"health_check": {"interval_ms": 5000, "timeout_ms": 1000, "unhealthy_threshold": 2, "healthy_threshold": 1},
}

_catalog := {"defaults": {"tiers": {"local": _tier, "private": _tier, "cloud": object.union(_tier, {"timeout_ms": 90000})}}}

_box := {
	"name": "box",
	"tier": "local",
	"region": "eu-west",
	"residency": "eu",
	"capacity": 1,
	"endpoint": {"host": "127.0.0.1", "port": 8081, "tls": false},
	"spiffe_id": "spiffe://example.org/node/n1",
	"health_check": "/health",
	"resilience": null,
}

_api := {
	"name": "api",
	"tier": "cloud",
	"region": "us-east",
	"residency": "us",
	"capacity": 100,
	"endpoint": {"host": "api.example.com", "port": 443, "tls": true},
	"resilience": {"timeout_ms": null, "retries": _retries(3), "first_byte_timeout_ms": 4000, "circuit_breaker": null, "outlier_detection": null, "health_check": null},
}

_tenant := {"name": "t", "resilience": null}

test_step_takes_tier_defaults if {
	step := resilience.step(_box, _tenant, "m", false, 0, 2) with data.catalog as _catalog
	step == {
		"backend": "box",
		"tier": "local",
		"model": "m",
		"degraded": false,
		"timeout_ms": 30000,
		"retries": _retries(1),
		"hedge": {"per_try_timeout_ms": 2000},
	}
}

test_backend_overrides_tier_and_tenant_overrides_backend if {
	tenant := {"name": "t", "resilience": {"timeout_ms": 15000, "first_byte_timeout_ms": 1500}}
	steps := [
		resilience.step(_api, _tenant, null, true, 0, 2),
		resilience.step(_api, tenant, null, true, 0, 2),
	] with data.catalog as _catalog
	steps == [
		{"backend": "api", "tier": "cloud", "model": null, "degraded": true, "timeout_ms": 90000, "retries": _retries(3), "hedge": {"per_try_timeout_ms": 4000}},
		{"backend": "api", "tier": "cloud", "model": null, "degraded": true, "timeout_ms": 15000, "retries": _retries(3), "hedge": {"per_try_timeout_ms": 1500}},
	]
}

test_last_step_has_no_hedge if {
	step := resilience.step(_box, _tenant, null, false, 1, 2) with data.catalog as _catalog
	step.hedge == null
}

# Settings computed once per backend and tenant make the same steps as step.
test_chain_step_from_request_settings_is_step if {
	tenant := {"name": "t", "resilience": {"timeout_ms": 15000, "first_byte_timeout_ms": 1500}}
	settings := resilience.request_settings(_api, tenant) with data.catalog as _catalog
	settings == {"backend": "api", "tier": "cloud", "timeout_ms": 15000, "retries": _retries(3), "hedge": {"per_try_timeout_ms": 1500}}
	every position in [0, 1] {
		resilience.chain_step(settings, "m", true, position == 1) == resilience.step(_api, tenant, "m", true, position, 2) with data.catalog as _catalog
	}
}

test_cluster_caps_requests_by_capacity if {
	cluster := resilience.cluster(_box) with data.catalog as _catalog
	cluster == {
		"name": "box",
		"tier": "local",
		"region": "eu-west",
		"residency": "eu",
		"endpoint": {"host": "127.0.0.1", "port": 8081, "tls": false},
		"spiffe_id": "spiffe://example.org/node/n1",
		"circuit_breaker": {"max_connections": 8, "max_pending": 8, "max_requests": 1, "max_retries": 2},
		"outlier_detection": _tier.outlier_detection,
		"health_check": {"path": "/health", "interval_ms": 5000, "timeout_ms": 1000, "unhealthy_threshold": 2, "healthy_threshold": 1},
	}
}

test_cluster_without_spiffe_id_or_health_path if {
	cluster := resilience.cluster(_api) with data.catalog as _catalog
	cluster.spiffe_id == null
	cluster.health_check.path == "/v1/models"
	cluster.circuit_breaker.max_requests == 8
}
