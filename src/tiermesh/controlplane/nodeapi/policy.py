"""The served bundle as nodes see it: its :class:`BundleRef` and its request policy.

The registry service learns which bundle is served through :class:`ServedBundles` (the
:class:`~tiermesh.controlplane.reconciler.Reconciler` is one), so nodes get the request
policy of the very bundle whose routes they were compiled from, and never that of a bundle
the reconciler refused. :class:`RequestPolicies` cuts and encodes a bundle's request policy
once per bundle, however many nodes ask.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Protocol

import yaml
from pydantic import ValidationError

from tiermesh.controlplane.api import (
    MAX_REQUEST_MODULES,
    MAX_REQUEST_POLICY_BYTES,
    REQUEST_POLICY_FOLDER,
    BundleRef,
    Catalog,
    CatalogError,
    RequestPolicyBundle,
    parse_catalog,
)
from tiermesh.controlplane.api.request_policy import (
    REQUEST_CONFIG_DOCUMENT,
    RequestConfigValue,
    validate_request_config,
)
from tiermesh.controlplane.nodeapi.errors import NoRequestPolicy, RequestPolicyTooLarge
from tiermesh.controlplane.nodeapi.keys import NO_KEYS, ServedKeys, announced_ref
from tiermesh.controlplane.store import Bundle

__all__ = ["RequestPolicies", "ServedBundles", "bundle_ref", "request_policy_of"]

_CATALOG_PATHS = ("data/catalog.yaml", "data/catalog.yml", "data/catalog.json")
_REQUEST_CONFIG_PATHS = tuple(
    f"data/{REQUEST_CONFIG_DOCUMENT}{suffix}" for suffix in (".yaml", ".yml", ".json")
)


class ServedBundles(Protocol):
    """Which bundle the control plane serves. Called on the event loop."""

    @property
    def served_bundle(self) -> Bundle | None:
        """The served bundle, None before the first one."""
        ...

    async def next_served_bundle(self, after_revision: int, /) -> Bundle:
        """The served bundle once its revision is not ``after_revision``."""
        ...


def bundle_ref(bundle: Bundle) -> BundleRef:
    """The announcement of ``bundle``."""
    return BundleRef(
        revision=bundle.revision, sha256=bundle.sha256, etcd_revision=bundle.etcd_revision
    )


def _modules(files: Mapping[str, bytes]) -> dict[str, str]:
    modules: dict[str, str] = {}
    for path in sorted(files):
        pure = PurePosixPath(path)
        if (
            path.startswith(REQUEST_POLICY_FOLDER)
            and len(pure.parts) == 2
            and pure.suffix == ".rego"
            and not pure.name.endswith("_test.rego")
        ):
            modules[path] = files[path].decode("utf-8", errors="replace")
    return modules


def _catalog(files: Mapping[str, bytes]) -> Catalog | None:
    for path in _CATALOG_PATHS:
        if path in files:
            try:
                return parse_catalog(files[path].decode("utf-8"), file=path)
            except (CatalogError, UnicodeDecodeError):
                return None
    return None


def _request_config(
    revision: int, files: Mapping[str, bytes]
) -> dict[str, RequestConfigValue] | None:
    """The bundle's request settings; None when it has none. An invalid document (the
    reconciler serves no such bundle) raises ``RequestPolicyTooLarge`` (out of the
    contract's bounds): serving the policy without the settings its operator pushed would
    quietly change decisions."""
    for path in _REQUEST_CONFIG_PATHS:
        if path in files:
            try:
                return validate_request_config(yaml.safe_load(files[path].decode("utf-8")))
            except (UnicodeDecodeError, yaml.YAMLError, ValidationError) as exc:
                problem = str(exc).splitlines()[0]
                raise RequestPolicyTooLarge(revision, f"not servable: {path}: {problem}") from exc
    return None


def request_policy_of(bundle: Bundle, keys: ServedKeys = NO_KEYS) -> RequestPolicyBundle:
    """The request policy of ``bundle`` served with the tenant API ``keys`` (module doc of
    :mod:`tiermesh.controlplane.api.request_policy`); its ``bundle`` is
    :func:`~tiermesh.controlplane.nodeapi.keys.announced_ref`. Pure.

    Raises:
        NoRequestPolicy: the bundle has no ``request/*.rego`` (or is no bundle at all).
        RequestPolicyTooLarge: more than ``MAX_REQUEST_MODULES`` modules, or request
            settings (``data/request_config.*``) that are not a valid ``RequestConfig``.
    """
    if bundle.revision == 0:
        raise NoRequestPolicy("no bundle has been pushed")
    modules = _modules(bundle.files)
    if not modules:
        raise NoRequestPolicy(
            f"bundle revision {bundle.revision} has no {REQUEST_POLICY_FOLDER}*.rego"
        )
    if len(modules) > MAX_REQUEST_MODULES:
        raise RequestPolicyTooLarge(
            bundle.revision, f"{len(modules)} modules (at most {MAX_REQUEST_MODULES})"
        )
    return RequestPolicyBundle(
        bundle=announced_ref(bundle, keys),
        provenance=dict(bundle.provenance),
        modules=modules,
        catalog=_catalog(bundle.files),
        request_config=_request_config(bundle.revision, bundle.files),
        api_keys=keys.entries if keys.revision else None,
    )


class RequestPolicies:
    """The encoded request policy of the latest bundle asked for (one bundle kept: nodes
    all ask for the served one). Not thread-safe; use on the event loop."""

    def __init__(self, limit_bytes: int = MAX_REQUEST_POLICY_BYTES) -> None:
        self._limit = limit_bytes
        self._key: tuple[int, str, int, int] | None = None
        self._encoded = b""
        self.encodings = 0
        """How many times a policy was cut and encoded (statistics)."""

    def encoded(self, bundle: Bundle, keys: ServedKeys = NO_KEYS) -> bytes:
        """The JSON answer for ``bundle`` with ``keys``. Raises like
        :func:`request_policy_of`, and ``RequestPolicyTooLarge`` for an answer over the
        byte limit."""
        key = (bundle.revision, bundle.sha256, bundle.etcd_revision, keys.revision)
        if key != self._key:
            policy = request_policy_of(bundle, keys)
            # Left out when absent: nodes older than the fields refuse unknown fields.
            absent = {
                name for name in ("request_config", "api_keys") if getattr(policy, name) is None
            }
            encoded = policy.model_dump_json(exclude=absent or None).encode()
            self.encodings += 1
            if len(encoded) > self._limit:
                raise RequestPolicyTooLarge(
                    bundle.revision, f"{len(encoded)} bytes encoded (at most {self._limit})"
                )
            self._key, self._encoded = key, encoded
        return self._encoded
