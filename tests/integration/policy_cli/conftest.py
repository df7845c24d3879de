"""Fixtures for the ``tiermesh policy`` commands: a policy dir, etcd, a CLI runner."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from tests.unit.reconciler.fake_compiler import FakeCompiler
from tests.unit.reconciler.policyfiles import write_policy_dir
from tiermesh.cli.main import app
from tiermesh.cli.policy_cmd import PolicyCli
from tiermesh.controlplane.store import Bundle, EtcdStore
from tiermesh.procs.etcd import EtcdServer


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[EtcdServer]:
    with EtcdServer.for_tests() as server:
        yield server


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    return write_policy_dir(tmp_path / "policies")


@pytest.fixture
def root() -> str:
    return f"/test-{uuid.uuid4().hex}/tiermesh/v1/"


def invoke(*args: str, compiler: FakeCompiler | None = None) -> Result:
    """Run ``tiermesh ARGS`` with the test compiler injected."""
    settings = PolicyCli(compiler_factory=lambda: compiler or FakeCompiler())
    return CliRunner().invoke(app, list(args), obj=settings)


def read_bundle(endpoint: str, root: str) -> Bundle:
    async def read() -> Bundle:
        async with EtcdStore(endpoint, root=root) as store:
            return await store.get_bundle()

    return asyncio.run(read())
