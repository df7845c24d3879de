# METADATA
# title: Request-time decision
# description: |
#   The per-request verdict of the node's ext_authz server, from what only the request
#   shows: PII findings in the body, a token estimate and the tenant's budget. Envoy sets
#   the returned headers before routing, so the compiled routes match on them.
#   Input: policies/schemas/request_input.schema.json. Optional settings under
#   data.request_config: default_tenant (string), max_request_tokens (number);
#   require_credential (or its older name require_api_key, boolean) is read by the
#   authz server, which refuses a request without a valid credential (a tenant API key,
#   or a JWT Envoy verified against a catalog issuer) before this policy is asked and
#   sets input.tenant from it (input.credential names it: kind api_key or jwt).
#   Mesh-wide values go in the bundle's data/request_config.yaml (a mapping, checked
#   by tiermesh policy check; none is shipped: unset means no default tenant and no
#   token limit); a node's authz.request_config in node.yaml overrides them key by key.
package tiermesh.request

# METADATA
# description: Sensitivity labels the compiled routes match on.
levels := {"public", "internal", "restricted"}

_setting(key) := data.request_config[key]

# METADATA
# description: The caller's tenant header, when present and not empty.
_declared_tenant := input.tenant if {
	is_string(input.tenant)
	input.tenant != ""
}

# METADATA
# description: The tenant the request is decided for; the configured default when the header is missing.
tenant := name if {
	name := _declared_tenant
} else := name if {
	name := _setting("default_tenant")
	is_string(name)
}

_kinds := {finding.kind | some finding in input.findings}

_body_reasons contains sprintf("body contains %s", [concat(", ", sort(_kinds))]) if count(_kinds) > 0

_body_reasons contains "body not fully inspected" if input.payload.truncated == true

_body_reasons contains "body is not plain text" if input.payload.encoding in {"binary", "invalid_utf8"}

_body_reasons contains input.payload.uninspectable if is_string(input.payload.uninspectable)

_request_places := {f.where | some f in input.request_findings}

_body_reasons contains sprintf("%s contains %s", [where, concat(", ", sort(kinds))]) if {
	some where in _request_places
	kinds := {f.kind | some f in input.request_findings; f.where == where}
}

_declared_level := input.headers.sensitivity if input.headers.sensitivity in levels

# METADATA
# description: |
#   Effective sensitivity: restricted when the body, path, query or headers show personal
#   data, or the body could not be fully or cleanly inspected, whatever the caller declared; else the declared label; restricted
#   when the header is missing or not a known label (fail closed).
sensitivity := "restricted" if {
	count(_body_reasons) > 0
} else := level if {
	level := _declared_level
} else := "restricted"

_sensitivity_reason := sprintf("restricted: %s", [concat("; ", sort(_body_reasons))]) if {
	count(_body_reasons) > 0
} else := sprintf("%s: as declared", [_declared_level]) if {
	_declared_level
} else := "restricted: x-tiermesh-sensitivity missing" if {
	not input.headers.sensitivity
} else := "restricted: x-tiermesh-sensitivity is not a known label"

# METADATA
# description: True when the budget source says the tenant's budget is spent.
default budget_exhausted := false

budget_exhausted if input.budget.exhausted == true

_denials contains "no tenant: x-tiermesh-tenant is missing and no default tenant is configured" if not tenant

_denials contains sprintf("unknown tenant %s", [tenant]) if {
	names := {t.name | some t in data.catalog.tenants}
	count(names) > 0
	not tenant in names
}

_denials contains sprintf("token estimate %d exceeds the per-request limit %d", [input.token_estimate, limit]) if {
	limit := _setting("max_request_tokens")
	is_number(limit)
	input.token_estimate > limit
}

# METADATA
# description: Allowed unless a denial applies.
default allow := false

allow if count(_denials) == 0

_reason := concat("; ", sort(_denials)) if {
	count(_denials) > 0
} else := concat("; ", [_sensitivity_reason, "budget exhausted"]) if {
	budget_exhausted
} else := _sensitivity_reason

_budget_header := {"x-tiermesh-budget": "exhausted"} if budget_exhausted else := {}

_tenant_header := {"x-tiermesh-tenant": tenant} if {
	not _declared_tenant
	tenant
} else := {}

# METADATA
# description: Request headers the ext_authz server sets (overwriting the caller's).
headers := object.union(object.union({"x-tiermesh-sensitivity": sensitivity}, _budget_header), _tenant_header)

# METADATA
# description: The verdict the ext_authz server applies and records.
decision := {
	"allow": allow,
	"sensitivity": sensitivity,
	"budget_exhausted": budget_exhausted,
	"reason": _reason,
	"headers": headers,
}
