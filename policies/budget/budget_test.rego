package tiermesh.budget_test

import data.tiermesh.budget

_tenants := [
	{"name": "rich", "monthly_budget_usd": 100},
	{"name": "poor", "monthly_budget_usd": 5},
	{"name": "free", "monthly_budget_usd": 0},
]

_usage := {"rich": {"spent_usd": 99.5}, "poor": {"spent_usd": 5}}

test_spent_reads_usage_and_defaults_to_zero if {
	spent := [budget.spent(tenant) | some tenant in _tenants] with data.usage as _usage
	spent == [99.5, 5, 0]
}

test_exhausted_once_spend_reaches_budget if {
	exhausted := [tenant.name | some tenant in _tenants; budget.exhausted(tenant)] with data.usage as _usage
	exhausted == ["poor", "free"]
}

test_cost_adds_input_and_output_prices if {
	budget.cost({"cost_per_1k_tokens": {"input": 0.25, "output": 1.5}}) == 1.75
}

test_warnings_name_every_spent_tenant if {
	warnings := budget.warnings with data.catalog as {"tenants": _tenants} with data.usage as _usage
	warnings == {
		"tenant free: monthly budget spent; routes prefer the local and private tiers",
		"tenant poor: monthly budget spent; routes prefer the local and private tiers",
	}
}
