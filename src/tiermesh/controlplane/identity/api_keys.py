"""Tenant API keys kept in a :class:`Store`: what ``tiermesh key`` creates, lists and revokes.

A key belongs to one tenant of the pushed bundle's catalog (``data/catalog.yaml``); a
tenant the catalog does not name is refused before anything is written. The key itself
(:func:`~tiermesh.controlplane.api.new_api_key`) is returned once by :meth:`TenantKeys.create`;
the store keeps its digest only (``apikeys/<id>``, module doc of
:mod:`tiermesh.controlplane.api.tenant_keys` for why a plain SHA-256 suffices). Revoking
marks the record; the control plane watches ``apikeys/`` and serves the change to every
node with the request policy, so a revoked key is refused mesh-wide within a session
round trip, without restarts.

Errors (all :class:`ApiKeyError`, an ``IdentityError``): :class:`UnknownTenant`,
:class:`NoCatalog`. Store errors (``UnknownApiKey``, ``StoreUnavailable`` …) pass through.
"""

from __future__ import annotations

from tiermesh.controlplane.api import CatalogError, new_api_key, parse_catalog
from tiermesh.controlplane.identity.ca import Clock, utc_now
from tiermesh.controlplane.identity.errors import IdentityError
from tiermesh.controlplane.store import ApiKeyRecord, Bundle, Store

__all__ = ["ApiKeyError", "NoCatalog", "TenantKeys", "UnknownTenant", "catalog_tenants"]

_CATALOG_PATHS = ("data/catalog.yaml", "data/catalog.yml", "data/catalog.json")


class ApiKeyError(IdentityError):
    """A tenant key cannot be created; nothing was written."""


class NoCatalog(ApiKeyError):
    """The store holds no bundle with a readable catalog, so no tenant can be checked."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(f"no catalog to check the tenant against: {detail}")


class UnknownTenant(ApiKeyError):
    """The catalog of the pushed bundle names no such tenant."""

    def __init__(self, tenant: str, known: tuple[str, ...]) -> None:
        self.tenant = tenant
        self.known = known
        names = ", ".join(known) or "none"
        super().__init__(f"tenant {tenant!r} is not in the served catalog (tenants: {names})")


def catalog_tenants(bundle: Bundle) -> tuple[str, ...]:
    """The tenant names of ``bundle``'s catalog. Raises :class:`NoCatalog`."""
    if bundle.revision == 0:
        raise NoCatalog("no bundle has been pushed")
    for path in _CATALOG_PATHS:
        if path in bundle.files:
            try:
                catalog = parse_catalog(bundle.files[path].decode("utf-8"), file=path)
            except (CatalogError, UnicodeDecodeError) as exc:
                raise NoCatalog(f"{path} of bundle revision {bundle.revision}: {exc}") from exc
            return tuple(t.name for t in catalog.tenants)
    raise NoCatalog(f"bundle revision {bundle.revision} has no data/catalog.yaml")


class TenantKeys:
    """Creates, lists and revokes tenant API keys in ``store``.

    Task safety: as the store's. ``clock`` stamps ``created_at`` / ``revoked_at`` (aware).
    """

    def __init__(self, store: Store, *, clock: Clock = utc_now) -> None:
        self._store = store
        self._clock = clock

    def _now(self) -> str:
        return self._clock().replace(microsecond=0).isoformat()

    async def create(self, tenant: str) -> tuple[str, ApiKeyRecord]:
        """A new key for ``tenant``: the key (shown once) and its stored record.

        Raises:
            UnknownTenant, NoCatalog: nothing was written.
            StoreError: from the store.
        """
        known = catalog_tenants(await self._store.get_bundle())
        if tenant not in known:
            raise UnknownTenant(tenant, known)
        text, parsed = new_api_key()
        record = ApiKeyRecord(parsed.key_id, tenant, parsed.digest, self._now())
        # 64 random bits of id: a collision is loud (KeyExists), never an overwrite.
        return text, await self._store.create_api_key(record)

    async def list(self, tenant: str | None = None) -> tuple[ApiKeyRecord, ...]:
        """Every key record (of ``tenant`` only, when given), by id."""
        keys = await self._store.list_api_keys()
        return tuple(k for k in keys if tenant is None or k.tenant == tenant)

    async def revoke(self, key_id: str) -> ApiKeyRecord:
        """Revoke ``key_id`` (idempotent). Raises ``UnknownApiKey`` for an unknown id."""
        return await self._store.revoke_api_key(key_id, self._now())
