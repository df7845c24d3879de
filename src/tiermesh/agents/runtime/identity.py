"""The node's first SVID (a saved one still valid, else a join with the token) and the
:class:`~tiermesh.agents.identity.SvidSource` that renews it over the node API.

Saved identities live in ``<state_dir>/svid`` (:class:`~tiermesh.agents.identity.SvidFiles`:
0700 directory, 0600 key), so a restarted agent does not need a new token while its SVID is
valid. Control-plane addresses are tried in order; only "unreachable" moves on to the next,
a refusal (bad token, foreign SVID) is final.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence

from cryptography.hazmat.primitives.serialization import load_pem_private_key

from tiermesh.agents.config import AgentConfig
from tiermesh.agents.identity import (
    AgentIdentityError,
    SvidFiles,
    SvidMaterial,
    SvidStore,
    generate_key,
    load_material,
)
from tiermesh.agents.identity.join_client import NodeApiCallError, join
from tiermesh.agents.runtime.errors import ControlPlaneUnreachable, JoinFailed
from tiermesh.agents.runtime.nodeapi_call import CALL_TIMEOUT_S, UNREACHABLE, call_node_api
from tiermesh.controlplane.api.join import RENEW_METHOD, RenewRequest, SvidResponse, method_path

__all__ = ["NodeApiSource", "first_identity", "saved_identity", "svid_files"]

log = logging.getLogger("tiermesh.agent")


def svid_files(config: AgentConfig) -> SvidFiles:
    """Where the node's identity is saved."""
    return SvidFiles(config.state_dir / "svid")


def saved_identity(files: SvidFiles, *, now: dt.datetime) -> SvidMaterial | None:
    """The saved identity if it is complete, checks out and is valid at ``now``; else None
    (the reason is logged)."""
    if not files.key_path.exists():
        return None
    try:
        key = load_pem_private_key(files.key_path.read_bytes(), password=None)
        return load_material(
            key,  # type: ignore[arg-type]
            files.chain_path.read_bytes(),
            files.bundle_path.read_bytes(),
            now=now,
        )
    except (OSError, ValueError, TypeError, AgentIdentityError) as exc:
        log.warning("saved SVID in %s not usable (%s); joining again", files.directory, exc)
        return None


async def first_identity(config: AgentConfig, *, now: dt.datetime) -> SvidMaterial:
    """A saved still-valid SVID, else one from joining with the token file.

    Raises :class:`JoinFailed` (no token, unreadable files, token refused) or
    :class:`ControlPlaneUnreachable` (no join address answered).
    """
    saved = saved_identity(svid_files(config), now=now)
    expected = f"spiffe://{config.control_plane.trust_domain}/node/{config.node.id}"
    if saved is not None and saved.spiffe_id == expected:
        log.info("reusing saved SVID %s (valid until %s)", saved.spiffe_id, saved.not_after)
        return saved
    token_file = config.identity.join_token_file
    bundle_file = config.control_plane.trust_bundle_file
    if token_file is None:
        raise JoinFailed("no saved SVID and no identity.join_token_file to join with")
    if bundle_file is None:
        raise JoinFailed("joining needs control_plane.trust_bundle_file (the CA bundle)")
    try:
        token = token_file.read_text().strip()
        bundle = bundle_file.read_bytes()
    except OSError as exc:
        raise JoinFailed(f"cannot read {exc.filename}: {exc.strerror}") from exc
    if not token:
        raise JoinFailed(f"join token file {token_file} is empty")
    key = generate_key()
    attempts: list[str] = []
    for address in config.control_plane.join:
        try:
            chain, new_bundle = await join(
                address,
                token,
                key,
                trust_bundle_pem=bundle,
                server_name=config.control_plane.tls_server_name,
                timeout_s=CALL_TIMEOUT_S,
            )
        except NodeApiCallError as exc:
            if exc.code in UNREACHABLE:
                attempts.append(f"{address}: {exc.code.name}: {exc.details}")
                continue
            raise JoinFailed(f"the control plane at {address} refused the join: {exc}") from exc
        try:
            return load_material(key, chain, new_bundle, now=now, expected_spiffe_id=expected)
        except AgentIdentityError as exc:
            raise JoinFailed(f"the SVID from {address} does not check out: {exc}") from exc
    raise ControlPlaneUnreachable("joining", attempts)


class NodeApiSource:
    """Renews over the node API, authenticated by the store's current SVID (mTLS).

    Satisfies :class:`~tiermesh.agents.identity.SvidSource`; tries ``addresses`` in order,
    moving on only when one is unreachable. Raises :class:`NodeApiCallError` otherwise.
    """

    def __init__(self, store: SvidStore, addresses: Sequence[str], server_name: str) -> None:
        self._store = store
        self._addresses = tuple(addresses)
        self._server_name = server_name

    async def renew(self, csr_pem: bytes) -> tuple[bytes, bytes]:
        response = await call_node_api(
            self._store,
            self._addresses,
            server_name=self._server_name,
            method=RENEW_METHOD,
            path=method_path(RENEW_METHOD),
            request=RenewRequest(csr_pem=csr_pem.decode()),
            reply=SvidResponse.model_validate_json,
        )
        return response.svid_chain_pem.encode(), response.bundle_pem.encode()
