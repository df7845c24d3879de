"""Test identities, entries and spools for the decision-log tests."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from tiermesh.agents.decisionlog import DecisionEntry, SigningIdentity
from tiermesh.controlplane.identity import CaConfig, LocalCertificateAuthority

TRUST_DOMAIN = "mesh.example"


def new_ca() -> LocalCertificateAuthority:
    return LocalCertificateAuthority.create(CaConfig(TRUST_DOMAIN))


def identity_for(
    ca: LocalCertificateAuthority, node: str = "edge-1", ttl: dt.timedelta | None = None
) -> SigningIdentity:
    key = ec.generate_private_key(ec.SECP256R1())
    issued = ca.issue_for_key(key.public_key(), node, ttl=ttl)
    return SigningIdentity(issued.spiffe_id, key, issued.chain)


def entry(index: int = 0, *, tenant: str = "acme", **extra: Any) -> DecisionEntry:
    data: dict[str, Any] = {
        "tenant": tenant,
        "body": f"please summarise contract {index}",
        "messages": [{"role": "user", "content": f"secret prompt {index}"}],
        "findings": [{"detector": "email", "count": index % 3}],
        "token_estimate": 100 + index,
    }
    return DecisionEntry(
        path="tiermesh/request/decision",
        input=data,
        result={"allow": True, "tier": "local", "index": index},
        timers={"timer_rego_query_eval_ns": 1000 + index},
        bundle_revision="b1",
        etcd_revision=7,
        snapshot_version="s1",
        **extra,
    )


def segment_files(spool: Path) -> list[Path]:
    return sorted((spool / "segments").glob("*.jsonl"))
