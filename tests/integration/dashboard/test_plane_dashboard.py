"""A control plane on a real etcd serves the dashboard: a node's usage report with answer
counts, sent over the real mTLS registry session, moves the dashboard's figures by exactly
what it carried; a re-send moves nothing. ``controlplane run`` refuses an unsafe address."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.integration.controlplane.conftest import open_session
from tests.support.svids import issue_svid
from tiermesh.controlplane.api import (
    AnswerCounts,
    NodeRegistration,
    SessionMessage,
    UsageDelta,
    UsageReport,
)
from tiermesh.controlplane.api.join import control_plane_dns_name
from tiermesh.controlplane.runtime import ControlPlane, ControlPlaneConfig, HostPort
from tiermesh.procs.etcd import EtcdServer

pytestmark = [pytest.mark.etcd]
TD = "mesh.example"
TIERMESH = str(Path(sys.executable).with_name("tiermesh"))
ANY = HostPort("127.0.0.1", 0)


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdServer]:
    with EtcdServer.for_tests() as server:
        yield server


@pytest.fixture
async def plane(etcd: EtcdServer, tmp_path: Path) -> AsyncIterator[ControlPlane]:
    config = ControlPlaneConfig(
        etcd=(etcd.endpoint,),
        trust_domain=TD,
        data_dir=tmp_path / "cp",
        ca_passphrase=b"passphrase-for-tests",
        ads=ANY,
        node_api=ANY,
        join=ANY,
        admin=ANY,
        dashboard=ANY,
        root=f"/{tmp_path.name}/tiermesh/v1/",
    )
    running = ControlPlane(config)
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


def view(plane: ControlPlane) -> dict[str, Any]:
    url = plane.addresses["dashboard"] + "api/dashboard"
    with urllib.request.urlopen(url, timeout=10) as answer:
        return dict(json.load(answer)["view"])


COUNTS = AnswerCounts(
    by_tier={"cloud": 2, "local": 1},
    first_choice=2,
    fallback=1,
    fallback_reasons={"retry": 1},
    refused={"401": 1},
)


async def test_reported_answers_move_the_dashboard_by_exactly_what_was_sent(
    plane: ControlPlane,
) -> None:
    before = await asyncio.to_thread(view, plane)
    assert before["traffic"]["total"]["answers"] == 0
    chain, key = issue_svid(plane.ca, "edge-1")
    credentials = grpc.ssl_channel_credentials(
        plane.ca.bundle().to_pem(), private_key=key, certificate_chain=chain
    )
    options = [("grpc.ssl_target_name_override", control_plane_dns_name(TD))]
    report = UsageReport(
        epoch="e1", seq=1, tenants={"acme": UsageDelta(tokens=10, cost_micro=5)}, answers=COUNTS
    )
    async with grpc.aio.secure_channel(plane.addresses["node_api"], credentials, options) as ch:
        call = open_session(ch)
        await call.write(
            SessionMessage(
                registration=NodeRegistration(
                    node_id="edge-1", tier="local", region="eu", app_port=10000
                )
            )
        )
        assert (await call.read()).answer_reports is True  # type: ignore[union-attr]
        for _ in range(2):  # the second is a re-send: counted once
            await call.write(SessionMessage(usage=report))
            await call.read()
        after = await asyncio.to_thread(view, plane)
        await call.write(SessionMessage(goodbye=True))
    total = after["traffic"]["total"]
    assert total["answers"] == 3
    assert total["by_tier"] == {"cloud": 2, "local": 1}
    assert (total["first_choice"], total["fallback"]) == (2, 1)
    assert total["fallback_reasons"] == {"retry": 1}
    assert total["refused"] == {"401": 1}
    assert after["traffic"]["recent"]["answers"] == 3
    edge = next(n for n in after["nodes"] if n["id"] == "edge-1")
    assert (edge["answers"], edge["fallback"], edge["svid"]) == (3, 1, "registered")
    assert after["audit"]["ok"] is True  # the plane's own plan chain (maybe empty) verifies


def test_controlplane_run_refuses_a_dashboard_beyond_loopback_without_a_token(
    tmp_path: Path,
) -> None:
    passphrase = tmp_path / "pass"
    passphrase.write_text("x" * 20)
    done = subprocess.run(
        [TIERMESH, "controlplane", "run", "--etcd", "127.0.0.1:1", "--trust-domain", TD,
         "--data-dir", str(tmp_path / "cp"), "--ca-passphrase-file", str(passphrase),
         "--dashboard", "0.0.0.0:0"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "without authentication" in done.stderr
    assert "--dashboard-token-file" in done.stderr
