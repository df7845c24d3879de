"""``policy push`` and ``policy diff`` against a real etcd: the CAS, and every refusal
leaving the stored bundle exactly as it was."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from tests.integration.policy_cli.conftest import invoke, read_bundle
from tests.unit.reconciler.policyfiles import node_registration
from tiermesh.controlplane.store import EtcdStore
from tiermesh.procs.etcd import EtcdServer

pytestmark = pytest.mark.etcd


def push(policy_dir: Path, endpoint: str, root: str, *extra: str) -> tuple[int, str]:
    result = invoke("policy", "push", str(policy_dir), "--etcd", endpoint, "--root", root, *extra)
    return result.exit_code, result.output


def test_push_then_unchanged_then_changed(
    policy_dir: Path, etcd_server: EtcdServer, root: str
) -> None:
    code, output = push(policy_dir, etcd_server.endpoint, root)
    assert code == 0, output
    assert "pushed bundle revision 1" in output
    stored = read_bundle(etcd_server.endpoint, root)
    assert stored.revision == 1
    assert stored.provenance["source"] == str(policy_dir)
    assert "pushed_by" in stored.provenance
    code, output = push(policy_dir, etcd_server.endpoint, root)
    assert (code, "unchanged" in output) == (0, True)
    (policy_dir / "data" / "extra.json").write_text('{"note": 1}')
    code, output = push(policy_dir, etcd_server.endpoint, root, "--expect-revision", "1")
    assert code == 0, output
    assert read_bundle(etcd_server.endpoint, root).revision == 2


def test_a_concurrent_push_is_a_conflict(
    policy_dir: Path, etcd_server: EtcdServer, root: str
) -> None:
    assert push(policy_dir, etcd_server.endpoint, root)[0] == 0

    async def someone_else() -> None:
        async with EtcdStore(etcd_server.endpoint, root=root) as store:
            await store.push_bundle({"x.rego": b"package x\n"}, expected_revision=1)

    asyncio.run(someone_else())
    before = read_bundle(etcd_server.endpoint, root)
    (policy_dir / "data" / "extra.json").write_text("{}")
    code, output = push(policy_dir, etcd_server.endpoint, root, "--expect-revision", "1")
    assert code == 1
    assert "expected bundle revision 1" in output
    assert "holds revision 2" in output
    after = read_bundle(etcd_server.endpoint, root)
    assert (after.revision, after.sha256) == (before.revision, before.sha256)


def test_a_bad_bundle_is_not_pushed(policy_dir: Path, etcd_server: EtcdServer, root: str) -> None:
    assert push(policy_dir, etcd_server.endpoint, root)[0] == 0
    before = read_bundle(etcd_server.endpoint, root)
    path = policy_dir / "residency" / "residency.rego"
    path.write_text(path.read_text() + "\nnope if {\n")
    code, output = push(policy_dir, etcd_server.endpoint, root)
    assert code == 1
    assert f"{path}:" in output
    assert "nothing was pushed" in output
    after = read_bundle(etcd_server.endpoint, root)
    assert (after.revision, after.sha256) == (before.revision, before.sha256)


def test_etcd_down(policy_dir: Path, root: str) -> None:
    with EtcdServer.for_tests() as server:
        endpoint = server.endpoint
        assert push(policy_dir, endpoint, root)[0] == 0
        before = read_bundle(endpoint, root)
        (policy_dir / "data" / "extra.json").write_text("{}")
        server.stop()
        code, output = push(policy_dir, endpoint, root, "--timeout", "1")
        assert code == 1
        assert f"etcd at {endpoint} is unreachable" in output
    assert before.revision == 1


def test_etcd_frozen_changes_nothing(policy_dir: Path, root: str) -> None:
    with EtcdServer.for_tests() as server:
        assert push(policy_dir, server.endpoint, root)[0] == 0
        before = read_bundle(server.endpoint, root)
        (policy_dir / "data" / "extra.json").write_text("{}")
        os.kill(server.pid, signal.SIGSTOP)
        try:
            code, output = push(policy_dir, server.endpoint, root, "--timeout", "1")
        finally:
            os.kill(server.pid, signal.SIGCONT)
        assert code == 1
        assert f"etcd at {server.endpoint} is unreachable" in output
        after = read_bundle(server.endpoint, root)
        assert (after.revision, after.sha256) == (before.revision, before.sha256)


def test_a_bundle_over_the_request_limit(policy_dir: Path, root: str) -> None:
    limit = 64 * 1024
    with EtcdServer(
        unsafe_no_fsync=True, heartbeat_interval_ms=10, election_timeout_ms=50,
        max_request_bytes=limit,
    ) as server:  # fmt: skip
        extra = "--max-request-bytes", str(limit)
        assert push(policy_dir, server.endpoint, root, *extra)[0] == 0
        before = read_bundle(server.endpoint, root)
        (policy_dir / "data" / "big.json").write_text('{"blob": "' + "x" * 80_000 + '"}')
        code, output = push(policy_dir, server.endpoint, root, *extra)
        assert code == 1
        assert f"at most {limit} bytes per request" in output
        assert "'data/big.json'" in output
        assert "nothing was pushed" in output
        after = read_bundle(server.endpoint, root)
        assert (after.revision, after.sha256) == (before.revision, before.sha256)


def test_diff(policy_dir: Path, etcd_server: EtcdServer, root: str) -> None:
    result = invoke(
        "policy", "diff", str(policy_dir), "--etcd", etcd_server.endpoint, "--root", root
    )
    assert result.exit_code == 0, result.output
    assert "added" in result.output
    assert push(policy_dir, etcd_server.endpoint, root)[0] == 0

    async def register() -> None:
        async with EtcdStore(etcd_server.endpoint, root=root) as store:
            await store.register_node("edge-9", node_registration("edge-9"), ttl_s=30)

    asyncio.run(register())
    args = ("policy", "diff", str(policy_dir), "--etcd", etcd_server.endpoint, "--root", root)
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert "0 change(s) across 3 node(s)" in result.output
    catalog = policy_dir / "data" / "catalog.yaml"
    catalog.write_text(catalog.read_text().replace("port: 9002", "port: 9003"))
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert "changed" in result.output
    assert "tm-cloud-eu" in result.output
    assert "3 change(s) across 3 node(s)" in result.output
