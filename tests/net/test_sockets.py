"""Addresses, and listeners for every transport (vsock connect only where loopback exists)."""

from __future__ import annotations

import os
import socket
from typing import Any

import pytest
import trio

from novakms.errors import TransportError
from novakms.net.addresses import parse_address
from novakms.net.dial import open_stream
from novakms.net.sockets import listener_address, open_listener


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:7400", "127.0.0.1:7400"),
        ("tcp://localhost:1", "localhost:1"),
        ("[::1]:80", "[::1]:80"),
        ("unix:///tmp/x.sock", "unix:///tmp/x.sock"),
        ("vsock://3:5000", "vsock://3:5000"),
    ],
)
def test_parse_and_format(text: str, expected: str) -> None:
    assert str(parse_address(text)) == expected


@pytest.mark.parametrize(
    "text",
    ["", "7400", "host:", "host:99999", "http://x:1", "vsock://x:1", "unix://rel", "[::1]80"],
)
def test_bad_addresses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_address(text)


async def test_tcp_and_unix_listeners_roundtrip(tmp_path: object) -> None:
    for text in ("tcp://127.0.0.1:0", f"unix://{tmp_path}/l.sock"):
        listener = await open_listener(parse_address(text))
        address = listener_address(listener)
        async with trio.open_nursery() as nursery:

            async def echo_once(listener: trio.SocketListener = listener) -> None:
                conn = await listener.accept()
                await conn.send_all(await conn.receive_some(10))
                await conn.aclose()

            nursery.start_soon(echo_once)
            stream = await open_stream(parse_address(address))
            await stream.send_all(b"ping")
            assert await stream.receive_some(10) == b"ping"
            await stream.aclose()
        await listener.aclose()


async def test_stale_unix_socket_file_is_replaced(tmp_path: object) -> None:
    path = f"{tmp_path}/stale.sock"
    old = socket.socket(socket.AF_UNIX)
    old.bind(path)
    old.close()  # leaves the socket file behind, as a crash would
    listener = await open_listener(parse_address(f"unix://{path}"))
    await listener.aclose()


async def test_unix_listener_never_removes_a_regular_file(tmp_path: object) -> None:
    path = f"{tmp_path}/file"
    with open(path, "w") as handle:
        handle.write("data")
    with pytest.raises(OSError):
        await open_listener(parse_address(f"unix://{path}"))
    with open(path) as handle:
        assert handle.read() == "data"


async def test_connect_refused_is_a_transport_error() -> None:
    with pytest.raises(TransportError):
        await open_stream(parse_address("127.0.0.1:1"))


@pytest.mark.skipif(not hasattr(socket, "AF_VSOCK"), reason="this Python has no AF_VSOCK")
async def test_vsock_listener_binds_and_listens() -> None:
    try:
        listener = await open_listener(
            parse_address("vsock://4294967295:0")
        )  # VMADDR_CID_ANY, any port
    except OSError as exc:
        pytest.skip(f"this kernel cannot create vsock sockets: {exc}")
    try:
        address = listener_address(listener)
        assert address.startswith("vsock://")
        assert listener.socket.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
    finally:
        await listener.aclose()


@pytest.mark.skipif(
    not os.path.exists("/sys/module/vsock_loopback"), reason="no vsock loopback in this kernel"
)
async def test_vsock_end_to_end_through_the_server(nursery: trio.Nursery, wallets: Any) -> None:
    from novakms.auth.static import StaticRegistry
    from novakms.client.aio import Client
    from novakms.config import Mode, ServerConfig
    from novakms.server.node import Node
    from novakms.server.server import Server
    from tests.harness.registry import MASTER_SECRET, registry_json

    config = ServerConfig(listen=("vsock://1:0",))  # VMADDR_CID_LOCAL, any port
    node = Node(
        signer=wallets.node,
        auth=StaticRegistry.from_json(registry_json(wallets)),
        limits=config.limits,
        mode=Mode.DEVELOPMENT,
        master_secret=MASTER_SECRET,
    )
    [address] = await nursery.start(Server(config=config, node=node).run)
    async with await Client.connect(address, signer=wallets.app1) as kms:
        assert (await kms.derive("over/vsock")).app_id == 1
