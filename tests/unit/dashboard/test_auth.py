"""Who may read the dashboard: loopback without a token, elsewhere only with it."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from tiermesh.controlplane.dashboard import (
    DashboardNeedsAuth,
    TokenFileError,
    authorized,
    check_bind,
    is_loopback,
    read_token_file,
)

TOKEN = "s3cret-token-0123456789"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.0.1", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("10.0.0.5", False),
        ("::", False),
        ("example.com", False),
    ],
)
def test_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_beyond_loopback_needs_a_token() -> None:
    check_bind("127.0.0.1", 8080, None)
    check_bind("0.0.0.0", 8080, TOKEN)
    with pytest.raises(DashboardNeedsAuth, match=r"0\.0\.0\.0:8080.*--dashboard-token-file"):
        check_bind("0.0.0.0", 8080, None)


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("header", "allowed"),
    [
        (f"Bearer {TOKEN}", True),
        (f"bearer   {TOKEN}", True),
        (_basic("ops", TOKEN), True),
        (_basic("", TOKEN), True),
        ("Bearer wrong-token-0123456789", False),
        (_basic("ops", "wrong"), False),
        ("Basic !!!notbase64", False),
        (f"Token {TOKEN}", False),
        (None, False),
    ],
)
def test_authorized(header: str | None, allowed: bool) -> None:
    assert authorized(header, TOKEN) is allowed
    assert authorized(header, None) is True


def test_token_file(tmp_path: Path) -> None:
    good = tmp_path / "token"
    good.write_text(TOKEN + "\n")
    good.chmod(0o600)
    assert read_token_file(good) == TOKEN
    good.chmod(0o640)
    with pytest.raises(TokenFileError, match="group or others"):
        read_token_file(good)
    short = tmp_path / "short"
    short.write_text("abc\n")
    short.chmod(0o600)
    with pytest.raises(TokenFileError, match="at least 16"):
        read_token_file(short)
    spaced = tmp_path / "spaced"
    spaced.write_text("abc def ghi jkl mno\n")
    spaced.chmod(0o600)
    with pytest.raises(TokenFileError, match="whitespace"):
        read_token_file(spaced)
    with pytest.raises(TokenFileError, match="missing"):
        read_token_file(tmp_path / "missing")
