package tiermesh.residency_test

import data.tiermesh.residency

_eu_only := {"name": "acme", "residency": ["eu", "onprem"]}

test_permits_backends_inside_the_residencies if {
	residency.permits(_eu_only, {"residency": "eu"})
	residency.permits(_eu_only, {"residency": "onprem"})
	not residency.permits(_eu_only, {"residency": "us"})
}

test_violation_for_a_tenant_no_backend_can_serve if {
	catalog := {
		"tenants": [_eu_only, {"name": "usco", "residency": ["us"]}],
		"backends": [{"name": "b", "residency": "us"}],
	}
	violations := residency.violations with data.catalog as catalog
	violations == {"tenant acme: no backend satisfies residency eu, onprem"}
}
