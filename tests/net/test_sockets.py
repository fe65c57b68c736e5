"""Addresses, and listeners for every transport (vsock connect only where loopback exists)."""

from __future__ import annotations

import contextlib
import os
import socket
from typing import Any

import pytest
import trio

from novakms.errors import ListenError, TransportError
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
    from novakms.config import ServerConfig
    from novakms.server.node import build_node
    from novakms.server.server import serve
    from tests.harness.registry import MASTER_SECRET, registry_json

    config = ServerConfig(listen=("vsock://1:0",))  # VMADDR_CID_LOCAL, any port
    registry = StaticRegistry.from_json(registry_json(wallets))
    node = build_node(
        config=config,
        signer=wallets.node,
        registry=registry,
        membership=registry,
        secret=MASTER_SECRET,
    )
    [address] = await nursery.start(serve, node, config)
    async with await Client.connect(address, signer=wallets.app1) as kms:
        assert (await kms.derive("over/vsock")).app_id == 1


async def test_reuse_port_listeners_share_a_tcp_port_and_both_accept() -> None:
    first = await open_listener(parse_address("tcp://127.0.0.1:0"), reuse_port=True)
    port = first.socket.getsockname()[1]
    second = await open_listener(parse_address(f"tcp://127.0.0.1:{port}"), reuse_port=True)
    assert first.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
    # Without the option the port is taken: it is the option of every sharer.
    with pytest.raises(ListenError, match="cannot listen"):
        await open_listener(parse_address(f"tcp://127.0.0.1:{port}"))
    accepted = [0, 0]

    async def accept(index: int, listener: trio.SocketListener) -> None:
        while True:
            stream = await listener.accept()
            accepted[index] += 1
            await stream.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(accept, 0, first)
        nursery.start_soon(accept, 1, second)
        for _ in range(48):  # the kernel hashes each new connection's 4-tuple to one listener
            stream = await open_stream(parse_address(f"127.0.0.1:{port}"))
            await stream.aclose()
        with trio.fail_after(5):
            while sum(accepted) < 48:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert all(accepted), accepted  # 2**-47 to fail by chance
    await first.aclose()
    await second.aclose()


async def test_reuse_port_is_for_tcp_only(tmp_path: object) -> None:
    with pytest.raises(ListenError, match="TCP listeners only"):
        await open_listener(parse_address(f"unix://{tmp_path}/r.sock"), reuse_port=True)
    with pytest.raises(ListenError, match="TCP listeners only"):
        await open_listener(parse_address("vsock://4294967295:0"), reuse_port=True)


@pytest.mark.skipif(not hasattr(socket, "AF_VSOCK"), reason="this Python has no AF_VSOCK")
def test_vsock_has_no_reuse_port_on_this_kernel() -> None:
    """What docs/scaling.md says of vsock, as this kernel has it: no port shared by two sockets.

    Recent kernels refuse SO_REUSEPORT on a vsock socket (EOPNOTSUPP); older ones accept the
    option, but vsock's bind refuses a bound port whatever the option (EADDRINUSE).
    """
    try:
        first = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
    except OSError as exc:
        pytest.skip(f"this kernel cannot create vsock sockets: {exc}")
    second = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
    with first, second:
        for sock in (first, second):
            with contextlib.suppress(OSError):  # EOPNOTSUPP on recent kernels
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        first.bind((socket.VMADDR_CID_ANY, socket.VMADDR_PORT_ANY))
        first.listen(1)
        with pytest.raises(OSError):
            second.bind((socket.VMADDR_CID_ANY, first.getsockname()[1]))
