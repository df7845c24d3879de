# METADATA
# title: Resilience
# description: |
#   Per-step timeouts, retries and hedging, and per-backend circuit breakers,
#   outlier detection and health checks. Each setting comes from the tenant's
#   override, else the backend's override, else data.catalog.defaults.tiers for
#   the backend's tier. Tenants override only per-request settings; cluster
#   settings belong to the backend, so one backend has one cluster everywhere.
package tiermesh.resilience

# METADATA
# description: |
#   One chain step for the backend, position counted from 0 in a chain of length
#   steps. The last step has no hedge, there is nothing to move on to.
step(backend, tenant, model, degraded, position, length) := chain_step(request_settings(backend, tenant), model, degraded, position == length - 1)

# METADATA
# description: |
#   What every step of the backend for the tenant shares: name, tier, timeout,
#   retries and the hedge of a step that is not the last. Compute it once per
#   backend and tenant and make each step with chain_step.
request_settings(backend, tenant) := {
	"backend": backend.name,
	"tier": backend.tier,
	"timeout_ms": _route_setting("timeout_ms", backend, tenant),
	"retries": _route_setting("retries", backend, tenant),
	"hedge": {"per_try_timeout_ms": _route_setting("first_byte_timeout_ms", backend, tenant)},
}

# METADATA
# description: |
#   The chain step made of request_settings, the model asked for and whether the
#   backend is below the task; last: the chain's last step, which has no hedge.
chain_step(settings, model, degraded, last) := {
	"backend": settings.backend,
	"tier": settings.tier,
	"model": model,
	"degraded": degraded,
	"timeout_ms": settings.timeout_ms,
	"retries": settings.retries,
	"hedge": _last_hedge(last, settings.hedge),
}

# METADATA
# description: |
#   The cluster settings of a backend, as the plan lists it; "credential" (the
#   name of the API key Envoy injects, never the key) only for backends with one.
cluster(backend) := object.union(_credential(backend), {
	"name": backend.name,
	"tier": backend.tier,
	"region": backend.region,
	"residency": backend.residency,
	"endpoint": backend.endpoint,
	"spiffe_id": object.get(backend, "spiffe_id", null),
	"circuit_breaker": _circuit_breaker(backend),
	"outlier_detection": _backend_setting("outlier_detection", backend),
	"health_check": object.union(
		_backend_setting("health_check", backend),
		{"path": object.get(backend, "health_check", "/v1/models")},
	),
})

_credential(backend) := {"credential": backend.credential} if {
	is_object(backend.credential)
} else := {}

_last_hedge(true, _) := null

_last_hedge(false, hedge) := hedge

# Tenant override, else backend override, else tier default.
# (Refs index one variable key at a time: regorus is much slower on a chained ref
# with variable keys, such as tenant.resilience[key].)
_route_setting(key, backend, tenant) := value if {
	overrides := tenant.resilience
	value := overrides[key]
	value != null
} else := _backend_setting(key, backend)

# Backend override, else tier default.
_backend_setting(key, backend) := value if {
	overrides := backend.resilience
	value := overrides[key]
	value != null
} else := value if {
	defaults := data.catalog.defaults.tiers[backend.tier]
	value := defaults[key]
}

# The backend's capacity caps concurrent requests whatever the defaults say.
_circuit_breaker(backend) := object.union(breaker, {"max_requests": min([breaker.max_requests, backend.capacity])}) if {
	breaker := _backend_setting("circuit_breaker", backend)
}
