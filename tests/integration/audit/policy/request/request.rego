# METADATA
# title: A tiny request-time policy for replay tests (version 1).
# description: Requests with detector findings stay local; the rest go to the cloud.
package tiermesh.request

# METADATA
# entrypoint: true
decision := {"allow": true, "tier": "local"} if {
	count(input.findings) > 0
} else := {"allow": true, "tier": "cloud"}
