"""Where peers are dialed: registered instance URLs → protocol addresses, and the dial paths."""

from __future__ import annotations

import socket

import pytest

from novakms.auth.model import dialable_address
from novakms.client.aio import Client
from novakms.cluster.peering import peer_address
from novakms.errors import TransportError
from tests.net.connectproxy import connect_proxy


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("http://10.0.0.5:7400", "10.0.0.5:7400"),
        ("https://kms.example.org:443/some/path", "kms.example.org:443"),
        ("http://[2001:db8::1]:7400/", "[2001:db8::1]:7400"),
        ("vsock://3:7400", "vsock://3:7400"),
    ],
)
def test_peer_address_from_the_registered_instance_url(url: str, address: str) -> None:
    assert peer_address(url) == address


@pytest.mark.parametrize(
    "url", ["http://10.0.0.5", "ftp://10.0.0.5:21", "10.0.0.5:7400", "https://:443", ""]
)
def test_peer_address_refuses_urls_without_host_and_port(url: str) -> None:
    with pytest.raises(ValueError, match="host:port"):
        peer_address(url)
    # What ``nodes`` reports as the entry's ``address`` then: none to dial.
    assert dialable_address(url) is None


@pytest.mark.skipif(not hasattr(socket, "AF_VSOCK"), reason="no AF_VSOCK in this Python")
async def test_vsock_peers_are_dialed_over_vsock_never_through_the_proxy() -> None:
    # No enclave answers on CID 99 here (and this kernel has no vsock loopback to answer on
    # CID 1), so the dial fails — but it fails as a vsock connect, and the proxy never saw it.
    async with connect_proxy() as proxy:
        with pytest.raises(TransportError, match="cannot connect to vsock://99:7400"):
            await Client.connect("vsock://99:7400", proxy=proxy.address, timeout=5)
        assert proxy.targets == []
        # A TCP peer with the same proxy setting does go through it.
        with pytest.raises(TransportError, match="502"):
            await Client.connect("127.0.0.1:1", proxy=proxy.address, timeout=5)
        assert proxy.targets == ["127.0.0.1:1"]
