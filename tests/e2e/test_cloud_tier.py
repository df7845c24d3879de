"""The cloud tier in the running mesh (``tiermesh up``): the stand-ins' API keys reach the
control plane in an owner-only credentials file and Envoy as SDS secrets, so a public
reasoning request is answered by the cloud; restricted data (declared, or found in the
body) never reaches it; the keys show up in no status document and no log."""

from __future__ import annotations

import json
import stat
import subprocess
from collections.abc import Iterator

import pytest
import yaml

from tests.e2e.agent_support import TIERMESH, chat, chat_text
from tests.e2e.test_request_policy import PII
from tests.e2e.up_support import CHILD_ENV, Up, cloud_answer, running_up

pytestmark = [pytest.mark.e2e, pytest.mark.etcd, pytest.mark.envoy, pytest.mark.model]
REASONING = {"x-tiermesh-tenant": "acme", "x-tiermesh-task": "reasoning",
             "x-tiermesh-sensitivity": "public"}  # fmt: skip


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    with running_up(tmp_path_factory.mktemp("up-cloud") / "state") as running:
        yield running


def _keys(up: Up) -> dict[str, str]:
    return dict(yaml.safe_load((up.state / "cloud-credentials.yaml").read_text()))


def test_the_credentials_file_is_owner_only_and_names_both_standins(up: Up) -> None:
    path = up.state / "cloud-credentials.yaml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    keys = _keys(up)
    assert set(keys) == {"frontier-us-key", "frontier-eu-key"}
    assert all(key.startswith("sk-standin-") for key in keys.values())
    catalog = yaml.safe_load((up.state / "policies" / "data" / "catalog.yaml").read_text())
    credentials = {b["name"]: b.get("credential") for b in catalog["backends"]}
    assert credentials["frontier-eu"] == {"secret": "frontier-eu-key"}
    assert credentials["frontier-us"] == {"secret": "frontier-us-key"}
    assert not any(key in json.dumps(catalog) for key in keys.values())


def test_a_public_reasoning_request_is_answered_by_the_cloud_tier(up: Up) -> None:
    headers, body = cloud_answer(up, REASONING)
    assert headers["x-tiermesh-backend"] == "frontier-eu", headers
    message = json.loads(body)["choices"][0]["message"]
    assert message["role"] == "assistant"
    assert message["content"].startswith("answered by frontier-eu"), message
    for _ in range(3):
        status, again, body = chat(up.port, up.keyed(REASONING))
        assert status == 200, body
        assert again["x-tiermesh-tier"] == "cloud", again


def test_restricted_data_never_reaches_the_cloud_tier(up: Up) -> None:
    cloud_answer(up, REASONING)  # the cloud answers public requests of this very route
    declared = {**REASONING, "x-tiermesh-sensitivity": "restricted"}
    for _ in range(3):
        status, headers, body = chat(up.port, up.keyed(declared))
        assert status == 200, body
        assert headers["x-tiermesh-tier"] in {"local", "private"}, headers
        assert "frontier" not in headers.get("x-tiermesh-backend", ""), headers
        assert b"frontier" not in body, body
    status, headers, body = chat_text(up.port, up.keyed(REASONING), PII)
    assert status == 200, body
    assert headers["x-tiermesh-tier"] in {"local", "private"}, headers
    assert "frontier" not in headers.get("x-tiermesh-backend", ""), headers
    assert b"frontier" not in body, body


def test_the_keys_are_in_no_status_and_no_log(up: Up) -> None:
    cloud_answer(up, REASONING)
    keys = _keys(up).values()
    shown = subprocess.run(
        [TIERMESH, "status", "--admin", up.mesh["control_plane"]["admin_url"], "--json"],
        capture_output=True, text=True, timeout=30, check=False, env=CHILD_ENV,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "cloud-gw-1" in shown.stdout
    logs = {path.name: path.read_text(errors="replace")
            for path in (up.state / "logs").glob("*.log")}  # fmt: skip
    assert "controlplane.log" in logs
    texts = {"tiermesh status --json": shown.stdout, "mesh.json": json.dumps(up.mesh),
             "tiermesh up's output": "".join(up.lines), **logs}  # fmt: skip
    for where, text in texts.items():
        assert not any(key in text for key in keys), f"an API key appears in {where}"
