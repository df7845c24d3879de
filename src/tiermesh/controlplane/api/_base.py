"""The base class and shared vocabulary of every contract model.

Private: import the public names from :mod:`tiermesh.controlplane.api`.
"""

from __future__ import annotations

from typing import Annotated, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, StringConstraints

__all__ = ["Contract", "Name", "Sensitivity", "Tier"]

Tier: TypeAlias = Literal["local", "private", "cloud"]
"""Where a model server runs: on the node itself, on an on-prem/private host, or a cloud API."""

Sensitivity: TypeAlias = Literal["public", "internal", "restricted"]
"""Data class of a request, least to most sensitive. Restricted data never leaves
local (or explicitly allowed private) backends."""

Name: TypeAlias = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
"""A catalog name (backend, tenant, alias, task): lower case, digits, ``-`` and ``_``.

Names travel in HTTP headers (``x-tiermesh-*``) and in Envoy resource names,
so dots, spaces and upper case are refused."""


class Contract(BaseModel):
    """Base of every contract model: immutable, unknown fields refused.

    Field docstrings are the documentation and become the JSON Schema
    ``description``.
    """

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        use_attribute_docstrings=True,
    )
