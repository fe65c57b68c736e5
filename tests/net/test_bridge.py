"""``novakms bridge``: real sockets on both sides, a real server behind it (TCP↔TCP here; the
enclave's side is vsock, which these machines lack: see tests/net/test_sockets.py)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from typing import Any

import pytest
import trio

from novakms.client.aio import Client
from novakms.client.blocking import BlockingClient
from novakms.crypto.kdf import derive_app_key
from novakms.errors import NovaKMSError
from novakms.net.addresses import parse_address
from novakms.net.bridge import Bridge
from novakms.wire.proxy_header import parse_v2
from tests.harness.registry import MASTER_SECRET, Wallets


async def start_bridge(nursery: trio.Nursery, to: str, **options: Any) -> tuple[Bridge, str]:
    bridge = Bridge(listen=parse_address("tcp://127.0.0.1:0"), to=parse_address(to), **options)
    address = await nursery.start(bridge.run)
    return bridge, address


def app_key(path: str) -> bytes:
    return derive_app_key(master_secret=MASTER_SECRET, app_id=1, path=path, context=None, length=32)


async def test_a_handshake_and_a_derive_go_through_the_bridge(
    nursery: trio.Nursery, start_server: Any, wallets: Wallets
) -> None:
    srv = await start_server()
    _, address = await start_bridge(nursery, srv.tcp)
    # The node's proof travels end to end: the client checks the node's wallet through the bridge.
    async with await Client.connect(
        address, signer=wallets.app1, expect_wallet=wallets.node.wallet
    ) as kms:
        assert (await kms.derive("via/bridge")).key == app_key("via/bridge")


async def test_with_the_proxy_protocol_the_bridge_reaches_a_proxy_listener(
    nursery: trio.Nursery, start_server: Any, wallets: Wallets
) -> None:
    srv = await start_server(proxy=True)
    _, address = await start_bridge(nursery, srv.proxied, proxy_protocol=True)
    async with await Client.connect(address, signer=wallets.app1) as kms:
        assert (await kms.derive("via/proxy")).key == app_key("via/proxy")
    # Without the header, the same listener refuses the bridge's connections.
    _, plain = await start_bridge(nursery, srv.proxied)
    with pytest.raises(NovaKMSError):
        await Client.connect(plain, signer=wallets.app1, timeout=2.0)


@pytest.fixture
async def upstream(
    nursery: trio.Nursery,
) -> tuple[str, trio.MemoryReceiveChannel[Any]]:
    """A raw TCP listener that hands each accepted stream to the test."""
    send, receive = trio.open_memory_channel[Any](16)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")

    async def accept(stream: trio.SocketStream) -> None:
        done = trio.Event()
        await send.send((stream, done))
        await done.wait()

    nursery.start_soon(trio.serve_listeners, accept, listeners)
    port = listeners[0].socket.getsockname()[1]
    return f"tcp://127.0.0.1:{port}", receive


async def read_exactly(stream: trio.abc.Stream, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = await stream.receive_some(size - len(data))
        assert chunk, "the stream ended early"
        data += chunk
    return data


async def test_the_header_carries_the_client_address_and_the_bytes_follow_unchanged(
    nursery: trio.Nursery, upstream: tuple[str, Any]
) -> None:
    to, accepted = upstream
    _, address = await start_bridge(nursery, to, proxy_protocol=True)
    target = parse_address(address)
    client = await trio.open_tcp_stream(target.host, target.port)
    client_port = client.socket.getsockname()[1]
    await client.send_all(b"hello through")
    with trio.fail_after(10):
        stream, done = await accepted.receive()
        head = await read_exactly(stream, 28 + len(b"hello through"))  # IPv4 header is 28 bytes
    parsed = parse_v2(head)
    assert parsed is not None
    header, rest = parsed
    assert header.source == "127.0.0.1" and header.source_port == client_port
    assert rest == b"hello through"
    # And back: the node's answer reaches the client; the client's close reaches the node.
    await stream.send_all(b"answer")
    assert await read_exactly(client, 6) == b"answer"
    await client.send_eof()
    with trio.fail_after(10):
        assert await stream.receive_some(100) == b""
    await stream.aclose()
    with trio.fail_after(10):
        assert await client.receive_some(100) == b""
    await client.aclose()
    done.set()


async def test_connections_over_the_limit_are_closed_before_dialing(
    nursery: trio.Nursery, upstream: tuple[str, Any]
) -> None:
    to, accepted = upstream
    bridge, address = await start_bridge(nursery, to, max_connections=1)
    target = parse_address(address)
    first = await trio.open_tcp_stream(target.host, target.port)
    with trio.fail_after(10):
        stream, done = await accepted.receive()  # the first is forwarded and held open
    second = await trio.open_tcp_stream(target.host, target.port)
    with trio.fail_after(10):
        assert await second.receive_some(100) == b""  # closed at once
    assert bridge.refused == 1 and bridge.active == 1 and bridge.forwarded == 1
    await second.aclose()
    await first.aclose()
    await stream.aclose()
    done.set()


async def test_an_unreachable_node_closes_the_client_connection(nursery: trio.Nursery) -> None:
    _, address = await start_bridge(nursery, "tcp://127.0.0.1:1")  # nothing listens on port 1
    target = parse_address(address)
    client = await trio.open_tcp_stream(target.host, target.port)
    with trio.fail_after(10):
        assert await client.receive_some(100) == b""
    await client.aclose()


async def test_the_bridge_command_forwards_until_sigterm(
    start_server: Any, wallets: Wallets
) -> None:
    """``novakms bridge`` as a process: its ready line, a blocking client through it, SIGTERM."""
    srv = await start_server()

    def run() -> tuple[int | None, str]:
        argv = [sys.executable, "-m", "novakms.cli", "bridge", "--listen", "tcp://127.0.0.1:0"]
        with subprocess.Popen(
            [*argv, "--to", srv.tcp],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as proc:
            try:
                assert proc.stdout is not None
                ready = json.loads(proc.stdout.readline())
                assert ready["to"] == srv.tcp and ready["proxy_protocol"] is False
                with BlockingClient.connect(
                    ready["listening"], signer=wallets.app1, expect_wallet=wallets.node.wallet
                ) as kms:
                    assert kms.derive("via/cli").key == app_key("via/cli")
            finally:
                proc.send_signal(signal.SIGTERM)
                _, stderr = proc.communicate(timeout=30)
            return proc.returncode, stderr

    returncode, stderr = await trio.to_thread.run_sync(run)
    assert returncode == 0, stderr


def test_the_bridge_command_refuses_a_bad_limit_with_one_json_line() -> None:
    argv = [sys.executable, "-m", "novakms.cli", "bridge", "--listen", "tcp://127.0.0.1:0"]
    out = subprocess.run(
        [*argv, "--to", "tcp://127.0.0.1:1", "--max-connections", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    error = json.loads(out.stdout)["error"]
    assert error["code"] == "bad_request" and "max_connections" in error["message"]
