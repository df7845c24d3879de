"""What only the REST engine has: a server that can be away, and HTTP-shaped limits."""

from __future__ import annotations

import socket

import pytest

from tiermesh.rego import EngineUnavailable, OpaRestEngine, PolicyError


def _closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def test_unreachable_server_is_unavailable_and_named() -> None:
    url = _closed_port_url()
    engine = OpaRestEngine(url, timeout=1.0)
    try:
        with pytest.raises(EngineUnavailable) as caught:
            engine.evaluate("data.a.b")
        assert caught.value.url == url
        assert url in str(caught.value)
        with pytest.raises(EngineUnavailable, match=url):
            engine.load({"a.rego": "package a\n\nb := 1\n"})
    finally:
        engine.close()


def test_url_must_be_http() -> None:
    with pytest.raises(ValueError, match="http"):
        OpaRestEngine("unix:///run/opa.sock")


def test_top_level_data_must_be_objects(opa_server: str) -> None:
    engine = OpaRestEngine(opa_server)
    try:
        with pytest.raises(PolicyError, match="'limit'"):
            engine.load({}, {"limit": 3})
    finally:
        engine.close()


def test_two_adapters_share_the_server(opa_server: str) -> None:
    writer, reader = OpaRestEngine(opa_server), OpaRestEngine(opa_server)
    try:
        writer.load({"a.rego": "package a\n\nb := data.c.d\n"}, {"c": {"d": "x"}})
        assert reader.evaluate("data.a.b") == "x"
    finally:
        writer.close()
        reader.close()
