package tiermesh.fixture.routing_test

import data.tiermesh.fixture.routing

test_restricted_stays_on_the_edge if {
	plan := routing.plan with input as {"tenant": "acme", "sensitivity": "restricted"}
	plan.chain == ["edge"]
	plan.fail_closed
}

test_unknown_tenant_gets_no_route if {
	plan := routing.plan with input as {"tenant": "nobody", "sensitivity": "public"}
	plan == {"allow": false, "reason": "no_route"}
}

# Fails on purpose: the contract suite checks that failures are reported.
test_deliberately_wrong if {
	plan := routing.plan with input as {"tenant": "globex", "sensitivity": "public"}
	"cloud" in plan.chain
}
