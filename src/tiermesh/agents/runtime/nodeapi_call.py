"""One unary call to the control plane's node API with the node's current SVID (mTLS),
trying the configured addresses in order."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final, TypeVar

import grpc
from pydantic import BaseModel

from tiermesh.agents.identity import SvidStore
from tiermesh.agents.identity.join_client import NodeApiCallError

__all__ = ["CALL_TIMEOUT_S", "UNREACHABLE", "call_node_api"]

UNREACHABLE: Final = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
"""Statuses after which the next address is tried."""
CALL_TIMEOUT_S: Final = 5.0

Reply = TypeVar("Reply", bound=BaseModel)


async def call_node_api(
    store: SvidStore,
    addresses: Sequence[str],
    *,
    server_name: str,
    method: str,
    path: str,
    request: BaseModel,
    reply: Callable[[bytes], Reply],
    timeout_s: float = CALL_TIMEOUT_S,
    max_reply_bytes: int | None = None,
) -> Reply:
    """Call ``path`` (named ``method`` in errors) with ``request`` on the first address that
    can be reached, authenticated by ``store``'s current SVID; ``reply`` decodes the answer.

    Raises:
        NodeApiCallError: the call was refused (any status but :data:`UNREACHABLE`), or
            no address could be reached (the last one's status).
    """
    current = store.require()
    credentials = grpc.ssl_channel_credentials(
        root_certificates=current.bundle_pem(),
        private_key=current.key_pem(),
        certificate_chain=current.chain_pem(),
    )
    options: list[tuple[str, str | int]] = [("grpc.ssl_target_name_override", server_name)]
    if max_reply_bytes is not None:
        options.append(("grpc.max_receive_message_length", max_reply_bytes))
    last: NodeApiCallError | None = None
    for address in addresses:
        async with grpc.aio.secure_channel(address, credentials, options=options) as channel:
            call = channel.unary_unary(
                path,
                request_serializer=lambda r: r.model_dump_json().encode(),
                response_deserializer=reply,
            )
            try:
                answer: Reply = await call(request, timeout=timeout_s)
            except grpc.aio.AioRpcError as exc:
                last = NodeApiCallError(method, exc.code(), exc.details() or "")
                if exc.code() in UNREACHABLE:
                    continue
                raise last from exc
        return answer
    assert last is not None, "no address to call"
    raise last
