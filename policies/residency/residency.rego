# METADATA
# title: Residency
# description: Which backends may process a tenant's data, by the residency each backend declares.
package tiermesh.residency

# METADATA
# description: True when the backend processes data inside one of the tenant's allowed residencies.
permits(tenant, backend) if backend.residency in tenant.residency

# METADATA
# description: Tenants that no backend of the catalog may serve at all.
violations contains msg if {
	some tenant in data.catalog.tenants
	count([backend | some backend in data.catalog.backends; permits(tenant, backend)]) == 0
	msg := sprintf("tenant %s: no backend satisfies residency %s", [tenant.name, concat(", ", tenant.residency)])
}
