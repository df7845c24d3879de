"""Who may read the dashboard: anyone on loopback, a token holder elsewhere.

A dashboard bound to a loopback address serves without authentication (like the admin
server). Bound to any other address it needs a token (:func:`read_token_file`), given as
``Authorization: Bearer <token>`` or as the password of HTTP basic auth (any user name),
so a browser's own login prompt works. :func:`check_bind` refuses the combination
"reachable from elsewhere, no token". Pure functions, thread-safe.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import os
import stat
from pathlib import Path
from typing import Final

from tiermesh.controlplane.dashboard.errors import DashboardNeedsAuth, TokenFileError

__all__ = ["MIN_TOKEN_CHARS", "authorized", "check_bind", "is_loopback", "read_token_file"]

MIN_TOKEN_CHARS: Final = 16
"""Shortest token accepted: anything shorter is guessable."""


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses (``127.0.0.0/8``, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, port: int, token: str | None) -> None:
    """Refuse to serve ``host`` beyond loopback without a token.

    Raises:
        DashboardNeedsAuth: ``host`` is not loopback and ``token`` is None.
    """
    if token is None and not is_loopback(host):
        raise DashboardNeedsAuth(f"{host}:{port}")


def read_token_file(path: Path) -> str:
    """The token in ``path``: its first line, stripped.

    Raises:
        TokenFileError: the file is missing or unreadable, not a regular file, readable by
            group or others, or its token is shorter than :data:`MIN_TOKEN_CHARS` or holds
            whitespace or ``:``.
    """
    try:
        with path.open("rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            if not stat.S_ISREG(mode):
                raise TokenFileError(str(path), "not a regular file")
            if mode & 0o077:
                raise TokenFileError(
                    str(path),
                    f"accessible by group or others (mode {stat.S_IMODE(mode):04o}); chmod 600",
                )
            data = handle.read(4096)
    except OSError as exc:
        raise TokenFileError(str(path), exc.strerror or str(exc)) from exc
    try:
        token = data.decode("utf-8").splitlines()[0].strip() if data.strip() else ""
    except UnicodeDecodeError:
        raise TokenFileError(str(path), "not UTF-8 text") from None
    if len(token) < MIN_TOKEN_CHARS:
        raise TokenFileError(str(path), f"the token needs at least {MIN_TOKEN_CHARS} characters")
    if any(ch.isspace() or ch == ":" for ch in token):
        raise TokenFileError(str(path), "the token must not hold whitespace or ':'")
    return token


def _password(header: str) -> str | None:
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        return value
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        _, sep, password = decoded.partition(":")
        return password if sep else None
    return None


def authorized(header: str | None, token: str | None) -> bool:
    """Whether a request with ``Authorization`` header ``header`` may read the dashboard
    (always, when ``token`` is None). Constant-time comparison."""
    if token is None:
        return True
    if header is None:
        return False
    given = _password(header)
    return given is not None and hmac.compare_digest(given.encode(), token.encode())
