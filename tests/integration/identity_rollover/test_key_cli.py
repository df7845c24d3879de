"""``tiermesh key create|list|revoke`` against a real etcd."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tiermesh.cli.main import app
from tiermesh.controlplane.api import parse_api_key, verify_digest
from tiermesh.controlplane.store import ApiKeyRecord, EtcdStore
from tiermesh.procs.etcd import EtcdServer

runner = CliRunner()
CATALOG = Path(__file__).parents[3] / "policies" / "data" / "catalog.yaml"


@pytest.fixture
def root() -> str:
    return f"/test-{uuid.uuid4().hex}/tiermesh/v1/"


def key(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["key", *args])
    return result.exit_code, result.stdout, result.stderr


async def _push_catalog(endpoint: str, root: str) -> None:
    async with EtcdStore(endpoint, root=root) as store:
        await store.push_bundle({"data/catalog.yaml": CATALOG.read_bytes()}, expected_revision=0)


async def _records(endpoint: str, root: str) -> tuple[ApiKeyRecord, ...]:
    async with EtcdStore(endpoint, root=root) as store:
        return await store.list_api_keys()


@pytest.mark.etcd
def test_create_list_revoke(rollover_etcd: EtcdServer, root: str) -> None:
    endpoint = rollover_etcd.endpoint
    where = ["--etcd", endpoint, "--root", root]
    asyncio.run(_push_catalog(endpoint, root))

    code, out, err = key("create", "--tenant", "acme", *where)
    assert code == 0, err
    text = out.strip()
    assert out == text + "\n", "stdout must hold the key and nothing else"
    parsed = parse_api_key(text)
    assert parsed is not None
    assert parsed.key_id in err
    assert text not in err
    assert key("create", "--tenant", "globex", *where)[0] == 0

    (acme, globex) = sorted(asyncio.run(_records(endpoint, root)), key=lambda r: r.tenant)
    assert (acme.key_id, acme.tenant, acme.revoked) == (parsed.key_id, "acme", False)
    assert verify_digest(parsed, acme.sha256)
    assert globex.tenant == "globex"

    code, out, err = key("list", *where)
    assert code == 0, err
    assert parsed.key_id in out
    assert globex.key_id in out
    assert parsed.secret not in out
    code, out, _ = key("list", "--tenant", "acme", *where)
    assert parsed.key_id in out
    assert globex.key_id not in out

    code, _, err = key("revoke", parsed.key_id, *where)
    assert code == 0, err
    assert "revoked" in err
    revoked = {r.key_id: r for r in asyncio.run(_records(endpoint, root))}
    assert revoked[parsed.key_id].revoked
    assert not revoked[globex.key_id].revoked
    code, out, _ = key("list", "--tenant", "acme", *where)
    assert revoked[parsed.key_id].revoked_at in out


@pytest.mark.etcd
def test_a_tenant_the_catalog_does_not_name_is_refused_and_nothing_stored(
    rollover_etcd: EtcdServer, root: str
) -> None:
    endpoint = rollover_etcd.endpoint
    asyncio.run(_push_catalog(endpoint, root))

    code, out, err = key("create", "--tenant", "umbrella", "--etcd", endpoint, "--root", root)

    assert code == 1
    assert out == ""
    assert "'umbrella' is not in the served catalog" in err
    assert "acme" in err
    assert asyncio.run(_records(endpoint, root)) == ()


@pytest.mark.etcd
def test_without_a_pushed_catalog_nothing_is_stored(rollover_etcd: EtcdServer, root: str) -> None:
    endpoint = rollover_etcd.endpoint
    code, out, err = key("create", "--tenant", "acme", "--etcd", endpoint, "--root", root)
    assert code == 1
    assert out == ""
    assert "no bundle has been pushed" in err
    assert asyncio.run(_records(endpoint, root)) == ()


@pytest.mark.etcd
def test_revoking_an_unknown_id_fails_and_says_so(rollover_etcd: EtcdServer, root: str) -> None:
    endpoint = rollover_etcd.endpoint
    code, _, err = key("revoke", "0123456789abcdef", "--etcd", endpoint, "--root", root)
    assert code == 1
    assert "no API key with id '0123456789abcdef'" in err
    assert asyncio.run(_records(endpoint, root)) == ()
