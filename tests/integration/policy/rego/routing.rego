# METADATA
# title: Routing-like fixture for the engine contract tests
# description: Picks a chain of tiers by sensitivity and tenant from data.catalog.
package tiermesh.fixture.routing

default plan := {"allow": false, "reason": "no_route"}

plan := {
	"allow": true,
	"chain": chain,
	"fail_closed": fail_closed,
	"timeouts_ms": timeouts_ms,
	"tags": tags,
} if {
	_known_tenant
	count(chain) > 0
}

default fail_closed := false

fail_closed if _rank >= data.catalog.sensitivity_rank.restricted

# Tiers cleared for the request's sensitivity that the tenant may use.
eligible contains tier.name if {
	some tier in data.catalog.tiers
	tier.clearance >= _rank
	_tenant_permits(tier)
}

# Preference order is the catalog order.
chain := [tier.name | some tier in data.catalog.tiers; tier.name in eligible]

timeouts_ms := {tier.name: tier.timeout_ms | some tier in data.catalog.tiers; tier.name in eligible}

tags contains "restricted" if input.sensitivity == "restricted"

tags contains sprintf("tenant:%s", [input.tenant]) if _known_tenant

tags contains "cloud-eligible" if "cloud" in eligible

_known_tenant if data.catalog.tenants[input.tenant]

_rank := data.catalog.sensitivity_rank[input.sensitivity]

_tenant_permits(tier) if tier.kind != "cloud"

_tenant_permits(tier) if {
	tier.kind == "cloud"
	data.catalog.tenants[input.tenant].allow_cloud
}
