"""A real signed audit database and a status document for the dashboard tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.unit.decisionlog.helpers import identity_for, new_ca
from tiermesh.agents.decisionlog import (
    DecisionEntry,
    DecisionLog,
    StaticSigner,
    load_signers,
    read_spool,
)
from tiermesh.controlplane.audit import AuditStore

HOSTILE = '<script>alert("x")</script>&<img src=x onerror=alert(1)>'
"""Attacker-chosen text, as a tenant or reason could carry it."""


async def signed_db(tmp_path: Path, results: list[dict[str, Any]]) -> Path:
    """An audit database holding one signed request record per result, in order."""
    spool, db = tmp_path / "spool", tmp_path / "audit.sqlite3"
    async with DecisionLog(spool, StaticSigner(identity_for(new_ca()))) as log:
        for result in results:
            tenant = result.pop("_tenant", "acme")
            await log.append(
                DecisionEntry(
                    path="tiermesh/request/decision",
                    input={"tenant": tenant, "body": "[masked]"},
                    result=result,
                )
            )
    with AuditStore(db) as store:
        spooled = list(read_spool(spool))
        store.insert([(s.record, s.signer) for s in spooled], load_signers(spool))
    return db


def status_document(**traffic: Any) -> dict[str, Any]:
    """A status document as the control plane serves it (trimmed to what is read)."""
    return {
        "version": "v1",
        "trust_domain": "mesh.example",
        "bundle": {
            "revision": 7,
            "sha256": "ab" * 32,
            "provenance": {"git_commit": "0123abcd", "git_author": HOSTILE},
        },
        "nodes": [
            {
                "id": "edge-1",
                "spiffe_id": "spiffe://mesh.example/node/edge-1",
                "registered": True,
                "registration": {"tier": "local", "region": "eu"},
                "health": "healthy",
                "xds": {
                    "connected": True,
                    "types": {
                        "clusters": {"sent": "c1", "acked": "c1", "nacks": 0, "last_nack": None},
                        "listeners": {
                            "sent": "l2",
                            "acked": "l1",
                            "nacks": 1,
                            "last_nack": {"version": "l2", "message": HOSTILE},
                        },
                        "routes": {"sent": "r2", "acked": "r1", "nacks": 0, "last_nack": None},
                    },
                },
            },
            {
                "id": "cloud-gw-1",
                "spiffe_id": "spiffe://mesh.example/node/cloud-gw-1",
                "registered": True,
                "registration": {"tier": "cloud", "region": "eu"},
                "health": "unhealthy",
                "xds": {"connected": False, "types": {}},
            },
        ],
        "tenants": [
            {"name": "acme", "spent_usd": 0.25, "budget_usd": 1.0, "exhausted": False},
            {"name": "initech", "spent_usd": 0.002, "budget_usd": 0.001, "exhausted": True},
        ],
        **({"traffic": traffic} if traffic else {}),
    }
