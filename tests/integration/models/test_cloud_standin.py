"""The cloud stand-in behaves like an OpenAI-compatible HTTPS provider, and can be steered."""

from __future__ import annotations

import json
import ssl
import threading
import time
import urllib.error
from collections.abc import Iterator

import pytest

from tests.integration.models.http import Reply, call
from tiermesh.demo.cloud_standin import CloudStandin

HELLO = {"model": "cloud-large", "messages": [{"role": "user", "content": "hi there"}]}


@pytest.fixture(scope="module")
def cloud() -> Iterator[CloudStandin]:
    with CloudStandin(name="cloud-a", api_key="sk-test-key") as standin:
        yield standin


@pytest.fixture(autouse=True)
def _calm(cloud: CloudStandin) -> Iterator[None]:
    yield
    cloud.first_byte_delay_s = 0.0
    cloud.recover()
    cloud.come_up()


@pytest.fixture(scope="module")
def trust(cloud: CloudStandin) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cloud.ca_path))


def _get(cloud: CloudStandin, trust: ssl.SSLContext, key: str | None = "sk-test-key") -> Reply:
    headers = {"authorization": f"Bearer {key}"} if key is not None else {}
    return call(f"{cloud.base_url}/v1/models", headers=headers, context=trust)


def _chat(cloud: CloudStandin, trust: ssl.SSLContext, **extra: object) -> Reply:
    return call(
        f"{cloud.base_url}/v1/chat/completions",
        {**HELLO, **extra},
        headers={"authorization": "Bearer sk-test-key"},
        context=trust,
    )


@pytest.mark.parametrize("key", [None, "sk-wrong"])
def test_without_the_key_401_like_openai(
    cloud: CloudStandin, trust: ssl.SSLContext, key: str | None
) -> None:
    reply = _get(cloud, trust, key)
    assert reply.status == 401
    assert reply.headers["x-tiermesh-backend"] == "cloud-a"
    error = reply.json()["error"]
    assert error["code"] == "invalid_api_key"
    assert error["type"] == "invalid_request_error"


def test_with_the_key_over_verified_tls(cloud: CloudStandin, trust: ssl.SSLContext) -> None:
    reply = _get(cloud, trust)
    assert reply.status == 200
    assert reply.headers["x-tiermesh-backend"] == "cloud-a"
    assert [m["id"] for m in reply.json()["data"]] == ["cloud-large"]
    by_name = call(
        f"https://localhost:{cloud.port}/v1/models",
        headers={"authorization": "Bearer sk-test-key"},
        context=trust,
    )
    assert by_name.status == 200


def test_tls_is_refused_without_its_ca(cloud: CloudStandin) -> None:
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        call(f"{cloud.base_url}/v1/models", context=ssl.create_default_context())


def test_chat_completion_has_usage(cloud: CloudStandin, trust: ssl.SSLContext) -> None:
    reply = _chat(cloud, trust)
    assert reply.status == 200
    body = reply.json()
    assert body["object"] == "chat.completion"
    assert "cloud-a" in body["choices"][0]["message"]["content"]
    assert body["choices"][0]["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["prompt_tokens"] == 2
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_streaming_sse(cloud: CloudStandin, trust: ssl.SSLContext) -> None:
    reply = _chat(cloud, trust, stream=True, stream_options={"include_usage": True})
    assert reply.status == 200
    assert reply.headers["content-type"] == "text/event-stream"
    events = reply.events()
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert "answered by cloud-a" in text
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == len(text.split())


def test_streaming_without_usage_request(cloud: CloudStandin, trust: ssl.SSLContext) -> None:
    chunks = [json.loads(e) for e in _chat(cloud, trust, stream=True).events()[:-1]]
    assert all("usage" not in c for c in chunks)


def test_first_byte_delay(cloud: CloudStandin, trust: ssl.SSLContext) -> None:
    cloud.first_byte_delay_s = 0.4
    started = time.monotonic()
    assert _chat(cloud, trust).status == 200
    assert time.monotonic() - started >= 0.4
    started = time.monotonic()
    assert _get(cloud, trust).status == 200  # models (health checks) are not delayed
    assert time.monotonic() - started < 0.4


def test_fail_and_recover(cloud: CloudStandin, trust: ssl.SSLContext) -> None:
    cloud.fail(503)
    reply = _chat(cloud, trust)
    assert reply.status == 503
    assert reply.json()["error"]["type"] == "server_error"
    assert reply.headers["x-tiermesh-backend"] == "cloud-a"
    cloud.recover()
    assert _chat(cloud, trust).status == 200


def test_go_down_and_come_up_on_the_same_port(cloud: CloudStandin, trust: ssl.SSLContext) -> None:
    port = cloud.port
    cloud.go_down()
    with pytest.raises(urllib.error.URLError, match="Connection refused"):
        _get(cloud, trust)
    cloud.come_up()
    assert cloud.port == port
    assert _get(cloud, trust).status == 200


def test_go_down_cuts_a_waiting_request(cloud: CloudStandin, trust: ssl.SSLContext) -> None:
    cloud.first_byte_delay_s = 5.0
    errors: list[BaseException] = []

    def ask() -> None:
        try:
            _chat(cloud, trust)
        except BaseException as exc:
            errors.append(exc)

    asker = threading.Thread(target=ask)
    asker.start()
    time.sleep(0.2)
    started = time.monotonic()
    cloud.go_down()
    asker.join(5.0)
    assert time.monotonic() - started < 2.0
    assert errors


def test_stop_removes_its_files() -> None:
    standin = CloudStandin()
    standin.start()
    ca = standin.ca_path
    assert ca.is_file()
    assert standin.api_key.startswith("sk-standin-")
    standin.stop()
    assert not ca.parent.exists()
    standin.stop()
