package tiermesh.request_test

import data.tiermesh.request

_clean := {
	"tenant": "acme",
	"headers": {"sensitivity": "public", "task": "classify"},
	"request": {"method": "POST", "path": "/v1/chat/completions"},
	"payload": {"sha256": "sha256:00", "received_bytes": 80, "inspected_bytes": 80, "truncated": false, "encoding": "utf-8", "json": true},
	"findings": [],
	"token_estimate": 20,
	"budget": {"known": true, "exhausted": false, "spent_usd": 1, "limit_usd": 100},
}

_email := [{"kind": "email", "count": 1, "spans": [[4, 21]]}]

_card_and_email := [
	{"kind": "payment_card", "count": 2, "spans": [[0, 19], [30, 49]]},
	{"kind": "email", "count": 1, "spans": [[60, 77]]},
]

test_a_clean_public_request_keeps_its_label if {
	request.decision with input as _clean == {
		"allow": true,
		"sensitivity": "public",
		"budget_exhausted": false,
		"reason": "public: as declared",
		"headers": {"x-tiermesh-sensitivity": "public"},
	}
}

test_personal_data_makes_a_public_request_restricted if {
	request.decision with input as object.union(_clean, {"findings": _email}) == {
		"allow": true,
		"sensitivity": "restricted",
		"budget_exhausted": false,
		"reason": "restricted: body contains email",
		"headers": {"x-tiermesh-sensitivity": "restricted"},
	}
}

test_every_finding_kind_is_named_in_order if {
	decision := request.decision with input as object.union(_clean, {"findings": _card_and_email})
	decision.reason == "restricted: body contains email, payment_card"
}

test_a_declared_label_is_never_lowered if {
	input_doc := object.union(_clean, {"headers": {"sensitivity": "internal"}})
	request.decision with input as input_doc == {
		"allow": true,
		"sensitivity": "internal",
		"budget_exhausted": false,
		"reason": "internal: as declared",
		"headers": {"x-tiermesh-sensitivity": "internal"},
	}
}

test_a_missing_label_is_restricted if {
	request.decision with input as object.union(_clean, {"headers": {}}) == {
		"allow": true,
		"sensitivity": "restricted",
		"budget_exhausted": false,
		"reason": "restricted: x-tiermesh-sensitivity missing",
		"headers": {"x-tiermesh-sensitivity": "restricted"},
	}
}

test_an_unknown_label_is_restricted if {
	decision := request.decision with input as object.union(_clean, {"headers": {"sensitivity": "PUBLIC"}})
	decision == {
		"allow": true,
		"sensitivity": "restricted",
		"budget_exhausted": false,
		"reason": "restricted: x-tiermesh-sensitivity is not a known label",
		"headers": {"x-tiermesh-sensitivity": "restricted"},
	}
}

test_a_body_not_fully_inspected_is_restricted if {
	payload := object.union(_clean.payload, {"truncated": true, "encoding": "invalid_utf8", "json": false})
	decision := request.decision with input as object.union(_clean, {"payload": payload})
	decision == {
		"allow": true,
		"sensitivity": "restricted",
		"budget_exhausted": false,
		"reason": "restricted: body is not plain text; body not fully inspected",
		"headers": {"x-tiermesh-sensitivity": "restricted"},
	}
}

test_a_spent_budget_sets_the_budget_header if {
	budget := {"known": true, "exhausted": true, "spent_usd": 100, "limit_usd": 100}
	request.decision with input as object.union(_clean, {"budget": budget}) == {
		"allow": true,
		"sensitivity": "public",
		"budget_exhausted": true,
		"reason": "public: as declared; budget exhausted",
		"headers": {"x-tiermesh-sensitivity": "public", "x-tiermesh-budget": "exhausted"},
	}
}

test_an_unknown_budget_is_not_exhausted if {
	decision := request.decision with input as object.union(_clean, {"budget": {"known": false}})
	decision.budget_exhausted == false
	decision.allow == true
}

test_no_tenant_and_no_default_is_denied if {
	request.decision with input as object.remove(_clean, ["tenant"]) == {
		"allow": false,
		"sensitivity": "public",
		"budget_exhausted": false,
		"reason": "no tenant: x-tiermesh-tenant is missing and no default tenant is configured",
		"headers": {"x-tiermesh-sensitivity": "public"},
	}
}

test_an_empty_tenant_is_no_tenant if {
	decision := request.decision with input as object.union(_clean, {"tenant": ""})
	decision.allow == false
}

test_no_tenant_uses_the_configured_default if {
	decision := request.decision with input as object.remove(_clean, ["tenant"])
		with data.request_config as {"default_tenant": "acme"}
	decision == {
		"allow": true,
		"sensitivity": "public",
		"budget_exhausted": false,
		"reason": "public: as declared",
		"headers": {"x-tiermesh-sensitivity": "public", "x-tiermesh-tenant": "acme"},
	}
}

test_a_tenant_outside_the_catalog_is_denied if {
	decision := request.decision with input as object.union(_clean, {"tenant": "mallory"})
		with data.catalog as {"tenants": [{"name": "acme"}]}
	decision == {
		"allow": false,
		"sensitivity": "public",
		"budget_exhausted": false,
		"reason": "unknown tenant mallory",
		"headers": {"x-tiermesh-sensitivity": "public"},
	}
}

test_a_catalog_tenant_is_allowed if {
	decision := request.decision with input as _clean
		with data.catalog as {"tenants": [{"name": "acme"}]}
	decision.allow == true
}

test_too_many_tokens_is_denied if {
	decision := request.decision with input as object.union(_clean, {"token_estimate": 5000})
		with data.request_config as {"max_request_tokens": 4096}
	decision == {
		"allow": false,
		"sensitivity": "public",
		"budget_exhausted": false,
		"reason": "token estimate 5000 exceeds the per-request limit 4096",
		"headers": {"x-tiermesh-sensitivity": "public"},
	}
}

test_an_empty_input_is_a_denial_not_an_error if {
	request.decision with input as {} == {
		"allow": false,
		"sensitivity": "restricted",
		"budget_exhausted": false,
		"reason": "no tenant: x-tiermesh-tenant is missing and no default tenant is configured",
		"headers": {"x-tiermesh-sensitivity": "restricted"},
	}
}

test_personal_data_in_the_query_makes_a_public_request_restricted if {
	found := [{"kind": "email", "count": 1, "where": "query"}]
	d := request.decision with input as object.union(_clean, {"request_findings": found})
	d.sensitivity == "restricted"
	d.headers["x-tiermesh-sensitivity"] == "restricted"
	d.reason == "restricted: query contains email"
}

test_an_uninspectable_body_is_restricted if {
	payload := object.union(_clean.payload, {"uninspectable": "body looks like JSON but does not parse"})
	d := request.decision with input as object.union(_clean, {"payload": payload})
	d.sensitivity == "restricted"
	d.reason == "restricted: body looks like JSON but does not parse"
}
