"""``tiermesh token create`` against a real etcd: the printed token joins exactly once."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import pytest
from typer.testing import CliRunner

from tiermesh.cli.main import app
from tiermesh.cli.token_cmd import parse_ttl
from tiermesh.controlplane.identity.tokens import TOKEN_PREFIX, JoinTokens, TokenReusedOrUnknown
from tiermesh.controlplane.store import EtcdStore
from tiermesh.procs.etcd import EtcdServer
from tiermesh.procs.ports import free_port

runner = CliRunner()


@pytest.fixture
def root() -> str:
    return f"/test-{uuid.uuid4().hex}/tiermesh/v1/"


def create(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["token", "create", *args])
    return result.exit_code, result.stdout, result.stderr


async def _consume_twice(endpoint: str, root: str, token: str) -> tuple[str, BaseException]:
    async with EtcdStore(endpoint, root=root) as store:
        tokens = JoinTokens(store)
        node_id = await tokens.consume(token)
        try:
            await tokens.consume(token)
        except TokenReusedOrUnknown as exc:
            return node_id, exc
    raise AssertionError("the token was consumed twice")


async def _token_records(endpoint: str, root: str) -> int:
    async with EtcdStore(endpoint, root=root) as store:
        return len((await store.read_prefix(TOKEN_PREFIX)).entries)


@pytest.mark.etcd
def test_the_printed_token_joins_once(rollover_etcd: EtcdServer, root: str) -> None:
    endpoint = rollover_etcd.endpoint
    code, out, err = create(
        "--node-id", "edge-1", "--ttl", "30m", "--etcd", endpoint, "--root", root
    )
    assert code == 0, err
    token = out.strip()
    assert out == token + "\n", "stdout must hold the token and nothing else"
    assert len(token) == 43
    assert "edge-1" in err
    assert token not in err
    node_id, _ = asyncio.run(_consume_twice(endpoint, root, token))
    assert node_id == "edge-1"


@pytest.mark.etcd
@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--node-id", "Edge_1"], "--node-id"),
        (["--node-id", ""], "--node-id"),
        (["--node-id", "edge-1", "--ttl", "0s"], "--ttl"),
        (["--node-id", "edge-1", "--ttl", "8d"], "--ttl"),
        (["--node-id", "edge-1", "--ttl", "soon"], "--ttl"),
    ],
)
def test_bad_input_is_refused_before_etcd_is_touched(
    rollover_etcd: EtcdServer, root: str, args: list[str], option: str
) -> None:
    code, out, err = create(*args, "--etcd", rollover_etcd.endpoint, "--root", root)
    assert code == 2
    assert out == ""
    assert option in err
    assert asyncio.run(_token_records(rollover_etcd.endpoint, root)) == 0


def test_a_malformed_endpoint_is_refused() -> None:
    code, out, err = create("--node-id", "edge-1", "--etcd", "localhost")
    assert (code, out) == (2, "")
    assert "--etcd" in err


def test_an_unreachable_etcd_is_a_clear_error_naming_the_endpoint() -> None:
    endpoint = f"127.0.0.1:{free_port()}"
    code, out, err = create("--node-id", "edge-1", "--etcd", endpoint)
    assert (code, out) == (1, "")
    assert err.startswith("error: ")
    assert endpoint in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1h", 3600), ("30m", 1800), ("3600s", 3600), ("1h30m", 5400), ("7d", 604800), (" 2H ", 7200)],
)
def test_ttls(text: str, seconds: int) -> None:
    assert parse_ttl(text) == dt.timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "0s", "1", "h", "-1h", "1.5h", "8d", "1h 30m", "1y"])
def test_bad_ttls(text: str) -> None:
    with pytest.raises(ValueError, match="got"):
        parse_ttl(text)
