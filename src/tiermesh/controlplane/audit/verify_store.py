"""Verify every chain of an audit database: hash links and signatures, and the plan
bodies plan records name (each stored body hashes to its key; a body a record says was
stored is there).

:func:`verify_store` is what ``tiermesh audit verify --db`` and the dashboard's chain
status run. Reads only; thread-safe as far as :class:`AuditStore` is (it is).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from cryptography import x509
from pydantic import ValidationError

from tiermesh.controlplane.audit.chain import ChainProblem, verify_chain
from tiermesh.controlplane.audit.plans import body_digest
from tiermesh.controlplane.audit.store import AuditStore, StoredRecord

__all__ = ["StoreVerification", "signer_keys", "verify_store"]


@dataclass(frozen=True, slots=True)
class StoreVerification:
    """The outcome: ``checked`` records in ``chains`` chains; ``problems`` names the first
    bad record of each broken chain (empty: every chain verifies); ``unreadable`` names
    chains holding a record that no longer parses (each is also broken); ``bodies`` says
    what is wrong with stored plan bodies (altered, or missing though a record says it was
    stored)."""

    checked: int
    chains: int
    problems: tuple[ChainProblem, ...]
    unreadable: tuple[str, ...] = ()
    bodies: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems and not self.unreadable and not self.bodies


def signer_keys(signers: dict[str, str]) -> dict[str, object]:
    """Public key of each signer fingerprint (PEM chains as the store keeps them)."""
    return {
        fingerprint: x509.load_pem_x509_certificates(pem.encode())[0].public_key()
        for fingerprint, pem in signers.items()
    }


def verify_store(store: AuditStore) -> StoreVerification:
    """Check every chain of ``store`` (module doc)."""
    keys = signer_keys(store.signers())
    problems: list[ChainProblem] = []
    unreadable: list[str] = []
    checked = 0
    named: dict[str, str] = {}
    chains = store.nodes()
    for chain in chains:
        try:
            rows = list(store.chain(chain))
        except ValidationError:
            unreadable.append(chain)
            continue
        signer_of = {row.record.decision_id: row.signer for row in rows}
        named.update(_stored_bodies(rows))
        checked += len(rows)
        # A node's own chain names only that node; the control plane's chain of plan
        # records names the node each plan was made for.
        own = not rows or rows[0].record.node_spiffe_id == chain
        problem = verify_chain(
            (row.record for row in rows),
            key_for=lambda r, s=signer_of: keys.get(s[r.decision_id]),  # type: ignore[misc]
            one_node=own,
        )
        if problem is not None:
            problems.append(problem if own else replace(problem, node_spiffe_id=chain))
    bodies = _body_problems(store, named)
    return StoreVerification(checked, len(chains), tuple(problems), tuple(unreadable), bodies)


def _stored_bodies(rows: list[StoredRecord]) -> dict[str, str]:
    """Plan body digest → the first record (decision id) saying it was stored."""
    named: dict[str, str] = {}
    for row in rows:
        result = row.record.result
        if row.record.kind == "plan" and isinstance(result, dict):
            key = result.get("plan_body_sha256")
            if key is not None and result.get("plan_body_stored") is True:
                named.setdefault(str(key), str(row.record.decision_id))
    return named


def _body_problems(store: AuditStore, named: dict[str, str]) -> tuple[str, ...]:
    found: list[str] = []
    seen: set[str] = set()
    for key, text in store.plan_bodies():
        seen.add(key)
        if body_digest(text) != key:
            found.append(f"plan body {key} was altered (its text hashes to {body_digest(text)})")
    found.extend(
        f"plan body {key} is missing (record {decision_id} says it was stored)"
        for key, decision_id in sorted(named.items())
        if key not in seen
    )
    return tuple(found)
