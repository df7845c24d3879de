# METADATA
# title: Budget
# description: Per-tenant monthly budgets against data.usage, and per-backend token cost.
package tiermesh.budget

# METADATA
# description: Tiers a tenant whose budget is spent is routed to first.
cheap_tiers := {"local", "private"}

# METADATA
# description: USD spent this month by the tenant, 0 when data.usage has no entry.
spent(tenant) := amount if {
	amount := data.usage[tenant.name].spent_usd
} else := 0

# METADATA
# description: True once the tenant's spend has reached its monthly budget.
exhausted(tenant) if spent(tenant) >= tenant.monthly_budget_usd

# METADATA
# description: USD per 1000 prompt tokens plus 1000 completion tokens, the ordering cost of a backend.
cost(backend) := backend.cost_per_1k_tokens.input + backend.cost_per_1k_tokens.output

# METADATA
# description: One warning per tenant whose budget is spent.
warnings contains msg if {
	some tenant in data.catalog.tenants
	exhausted(tenant)
	msg := sprintf("tenant %s: monthly budget spent; routes prefer the local and private tiers", [tenant.name])
}
