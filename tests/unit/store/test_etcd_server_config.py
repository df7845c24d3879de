"""EtcdServer configuration, without starting a process."""

from __future__ import annotations

import pytest

from tiermesh.controlplane.store import StoreUnavailable
from tiermesh.controlplane.store.etcd import EtcdStore
from tiermesh.procs.etcd import EtcdNotInstalled, EtcdServer


def test_missing_binary_says_how_to_install_it() -> None:
    with pytest.raises(EtcdNotInstalled, match="apt-get install etcd-server"):
        EtcdServer(binary="tiermesh-no-such-etcd")


def test_unstarted_server_has_no_endpoint() -> None:
    server = EtcdServer.for_tests()
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.endpoint
    server.stop()  # stopping a never-started server is a no-op


@pytest.mark.parametrize("endpoint", ["localhost", ":2379", "host:port", ""])
def test_store_endpoint_must_be_host_and_port(endpoint: str) -> None:
    with pytest.raises(ValueError, match="host:port"):
        EtcdStore(endpoint)


async def test_closed_etcd_store_refuses_calls_without_network() -> None:
    store = EtcdStore("127.0.0.1:9")
    await store.aclose()
    with pytest.raises(StoreUnavailable, match="closed") as caught:
        await store.get("ca/a")
    assert caught.value.endpoint == "127.0.0.1:9"
