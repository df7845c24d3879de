"""Verify every chain of an audit database: hash links and signatures.

:func:`verify_store` is what ``tiermesh audit verify --db`` and the dashboard's chain
status run. Reads only; thread-safe as far as :class:`AuditStore` is (it is).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from cryptography import x509
from pydantic import ValidationError

from tiermesh.controlplane.audit.chain import ChainProblem, verify_chain
from tiermesh.controlplane.audit.store import AuditStore

__all__ = ["StoreVerification", "signer_keys", "verify_store"]


@dataclass(frozen=True, slots=True)
class StoreVerification:
    """The outcome: ``checked`` records in ``chains`` chains; ``problems`` names the first
    bad record of each broken chain (empty: every chain verifies); ``unreadable`` names
    chains holding a record that no longer parses (each is also broken)."""

    checked: int
    chains: int
    problems: tuple[ChainProblem, ...]
    unreadable: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems and not self.unreadable


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
    chains = store.nodes()
    for chain in chains:
        try:
            rows = list(store.chain(chain))
        except ValidationError:
            unreadable.append(chain)
            continue
        signer_of = {row.record.decision_id: row.signer for row in rows}
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
    return StoreVerification(checked, len(chains), tuple(problems), tuple(unreadable))
