"""Dialing through an HTTP CONNECT proxy, over real sockets.

A real proxy (:mod:`tests.net.connectproxy`) carries echo and KMS traffic; small fake proxies
(raw listeners below) give the answers a well-behaved proxy never would.
"""

from __future__ import annotations

import contextlib
import functools
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import trio

from novakms.client.aio import Client
from novakms.client.blocking import BlockingClient
from novakms.errors import FrameTooLarge, TransportError
from novakms.net.addresses import Address, parse_address
from novakms.net.dial import open_stream
from novakms.net.proxy import open_via_proxy
from novakms.net.sockets import connection_source
from novakms.wire.http_connect import connect_request, split_reply
from tests.harness.registry import Wallets
from tests.net.connectproxy import connect_proxy

Handler = Callable[[trio.SocketStream], Awaitable[None]]
TARGET = parse_address("10.0.0.7:443")


@contextlib.asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[str]:
    """Serve ``handler`` on 127.0.0.1 for the body; yields ``127.0.0.1:PORT``."""
    async with trio.open_nursery() as nursery:
        serve = functools.partial(trio.serve_tcp, handler, 0, host="127.0.0.1")
        listeners = await nursery.start(serve)
        try:
            yield f"127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        finally:
            nursery.cancel_scope.cancel()


class Echo:
    """An echo handler that counts connections and signals when one ends."""

    def __init__(self) -> None:
        self.connections = 0
        self.one_ended = trio.Event()

    async def __call__(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        with contextlib.suppress(trio.BrokenResourceError):
            while data := await stream.receive_some(65536):
                await stream.send_all(data)
        self.one_ended.set()


async def read_request(stream: trio.abc.Stream) -> bytes:
    """What a fake proxy received up to the blank line (b"" if the client left first)."""
    request = b""
    while b"\r\n\r\n" not in request:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return b""
        request += chunk
    return request


async def until_closed(stream: trio.abc.Stream) -> None:
    """Hold a connection open until the client closes it."""
    with contextlib.suppress(trio.BrokenResourceError):
        while await stream.receive_some(65536):
            pass


def fake_proxy(answer: bytes, *, then_close: bool = False) -> Handler:
    """A proxy that answers every request with ``answer``, then holds the connection (or closes)."""

    async def handler(stream: trio.SocketStream) -> None:
        if await read_request(stream):
            await stream.send_all(answer)
            if not then_close:
                await until_closed(stream)

    return handler


def closed_port() -> str:
    """A loopback address nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


async def dial(proxy: str, target: str, **kwargs: Any) -> trio.abc.Stream:
    return await open_via_proxy(parse_address(proxy), parse_address(target), **kwargs)


async def round_trip(stream: trio.abc.Stream, payload: bytes) -> bytes:
    """Send ``payload`` while reading its echo (so neither direction's buffers can stall)."""
    received = bytearray()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stream.send_all, payload)
        while len(received) < len(payload):
            chunk = await stream.receive_some(65536)
            assert chunk, "the tunnel closed early"
            received += chunk
    return bytes(received)


# --- the sans-I/O half -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("10.0.0.7:443", b"CONNECT 10.0.0.7:443 HTTP/1.1\r\nHost: 10.0.0.7:443\r\n\r\n"),
        (
            "kms.example:7400",
            b"CONNECT kms.example:7400 HTTP/1.1\r\nHost: kms.example:7400\r\n\r\n",
        ),
        (
            "[2001:db8::1]:443",
            b"CONNECT [2001:db8::1]:443 HTTP/1.1\r\nHost: [2001:db8::1]:443\r\n\r\n",
        ),
    ],
)
def test_connect_request_bytes(target: str, expected: bytes) -> None:
    assert connect_request(parse_address(target)) == expected


@pytest.mark.parametrize(
    "target",
    [
        parse_address("unix:///tmp/kms.sock"),
        parse_address("vsock://3:7400"),
        Address(scheme="tcp", host="evil\r\nX-Injected: 1", port=443),
        Address(scheme="tcp", host="two words", port=443),
        Address(scheme="tcp", host="kms.exämple", port=443),
    ],
)
def test_connect_request_refuses_what_cannot_tunnel(target: Address) -> None:
    with pytest.raises(TransportError):
        connect_request(target)


def test_split_reply_fed_byte_at_a_time_and_with_trailing_bytes() -> None:
    reply = b"HTTP/1.1 200 Connection established\r\nVia: 1.1 egress\r\n\r\n"
    for n in range(len(reply)):
        assert split_reply(reply[:n], TARGET) is None
    assert split_reply(reply, TARGET) == b""
    assert split_reply(reply + b"\x00\r\n\r\ntail", TARGET) == b"\x00\r\n\r\ntail"


def test_split_reply_max_head_is_inclusive() -> None:
    reply = b"HTTP/1.1 200 OK\r\n\r\n"
    assert split_reply(reply, TARGET, max_head=len(reply)) == b""
    with pytest.raises(TransportError, match="exceeds"):
        split_reply(reply, TARGET, max_head=len(reply) - 1)
    with pytest.raises(TransportError, match="exceeds"):  # cannot fit: no need to read on
        split_reply(reply[:-1], TARGET, max_head=len(reply) - 1)
    with pytest.raises(TransportError, match="exceeds"):  # incomplete, and already too long
        split_reply(b"HTTP/1.1 200 OK\r\nX: " + b"a" * 100, TARGET, max_head=50)


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        (
            b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n",
            "407 Proxy Authentication Required",
        ),
        (b"HTTP/1.0 503 Service Unavailable\r\n\r\n", "503 Service Unavailable"),
        (b"HTTP/1.1 301 Moved Permanently\r\nLocation: x\r\n\r\n", "301 Moved Permanently"),
        (b"HTTP/2 200 OK\r\n\r\n", "not HTTP/1.x"),
        (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", "not HTTP/1.x"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "not HTTP/1.x"),
    ],
)
def test_split_reply_refusals_name_the_status(reply: bytes, match: str) -> None:
    with pytest.raises(TransportError, match=match) as info:
        split_reply(reply, TARGET)
    assert "10.0.0.7:443" in str(info.value)


@pytest.mark.parametrize(
    "status", [b"HTTP/1.0 200 OK", b"HTTP/1.1 204 No Content", b"HTTP/1.1 200"]
)
def test_split_reply_accepts_any_2xx(status: bytes) -> None:
    assert split_reply(status + b"\r\n\r\n", TARGET) == b""


def test_split_reply_error_text_is_short_and_printable() -> None:
    reply = b"HTTP/1.1 403 \x1b[31mred\x00" + b"x" * 500 + b"\r\n\r\n"
    with pytest.raises(TransportError, match="403") as info:
        split_reply(reply, TARGET)
    message = str(info.value)
    assert message.isprintable() and len(message) < 200


# --- through the real proxy --------------------------------------------------------------------


async def test_bytes_round_trip_through_the_proxy() -> None:
    echo = Echo()
    payload = bytes(range(256)) * 1024  # several reads and writes on each hop
    async with serving(echo) as target, connect_proxy() as proxy:
        with trio.fail_after(10):
            stream = await dial(proxy.address, target)
            async with stream:
                assert await round_trip(stream, payload) == payload
                assert (proxy.tunnels, proxy.open_tunnels) == (1, 1)
            await echo.one_ended.wait()  # the client's close reached the target
        assert proxy.targets == [target]
        assert (proxy.tunnels, proxy.open_tunnels, echo.connections) == (1, 0, 1)


async def test_kms_client_health_through_the_proxy(start_server: Any, wallets: Wallets) -> None:
    srv = await start_server()
    async with connect_proxy() as proxy:
        async with await Client.connect(
            srv.tcp, signer=wallets.app1, expect_wallet=wallets.node.wallet, proxy=proxy.address
        ) as kms:
            assert (await kms.health()).status == "ok"
            assert (await kms.derive("via/proxy")).app_id == 1
        assert proxy.targets == [srv.tcp]
        assert proxy.tunnels == 1


async def test_blocking_client_through_the_proxy(start_server: Any, wallets: Wallets) -> None:
    srv = await start_server()
    async with connect_proxy() as proxy:

        def blocking_side() -> None:  # in a worker thread: server and proxy run on this loop
            with BlockingClient.connect(srv.tcp, signer=wallets.app1, proxy=proxy.address) as kms:
                assert kms.health().status == "ok"
            proxy_is_closed = closed_port()
            with BlockingClient.connect(srv.unix, proxy=proxy_is_closed) as kms:
                assert kms.health().status == "ok"
            with pytest.raises(TransportError, match="cannot connect"):
                BlockingClient.connect(srv.tcp, proxy=proxy_is_closed)

        await trio.to_thread.run_sync(blocking_side)
        proxy.block(srv.tcp)
        with pytest.raises(TransportError, match="403 Forbidden"):
            await trio.to_thread.run_sync(
                functools.partial(BlockingClient.connect, srv.tcp, proxy=proxy.address)
            )
        assert proxy.targets == [srv.tcp, srv.tcp]
        assert proxy.tunnels == 1


async def test_a_blocked_target_is_refused_with_403_until_unblocked() -> None:
    echo = Echo()
    async with serving(echo) as target, connect_proxy() as proxy:
        proxy.block(target)
        with pytest.raises(TransportError, match="403 Forbidden"):
            await dial(proxy.address, target)
        assert echo.connections == 0
        proxy.unblock(target)
        async with await dial(proxy.address, target) as stream:
            assert await round_trip(stream, b"ping") == b"ping"
        assert proxy.targets == [target, target]
        assert proxy.tunnels == 1


async def test_an_unreachable_target_is_a_502() -> None:
    target = closed_port()
    async with connect_proxy() as proxy:
        with pytest.raises(TransportError, match="502 Bad Gateway"):
            await dial(proxy.address, target)
        assert proxy.targets == [target]
        assert proxy.tunnels == 0


async def test_the_test_proxy_answers_a_malformed_request_with_400() -> None:
    async with connect_proxy() as proxy:
        stream = await open_stream(parse_address(proxy.address))
        async with stream:
            await stream.send_all(b"GET http://example/ HTTP/1.1\r\nHost: example\r\n\r\n")
            with trio.fail_after(5):
                assert (await read_request(stream)).startswith(b"HTTP/1.1 400 ")
        assert proxy.targets == []


async def test_block_cuts_open_tunnels_to_that_target_on_both_sides() -> None:
    cut, kept = Echo(), Echo()
    async with serving(cut) as cut_target, serving(kept) as kept_target, connect_proxy() as proxy:
        with trio.fail_after(10):
            to_cut = await dial(proxy.address, cut_target)
            to_keep = await dial(proxy.address, kept_target)
            async with to_cut, to_keep:
                assert await round_trip(to_cut, b"one") == b"one"
                proxy.block(cut_target)
                assert await to_cut.receive_some(100) == b""  # the client side sees the close
                await cut.one_ended.wait()  # and so does the target side
                assert await round_trip(to_keep, b"two") == b"two"  # other targets unaffected
                assert proxy.open_tunnels == 1


async def test_isolate_fails_the_next_call_and_heal_lets_clients_back(
    start_server: Any, wallets: Wallets
) -> None:
    srv = await start_server()
    async with connect_proxy() as proxy:
        kms = await Client.connect(srv.tcp, signer=wallets.app1, proxy=proxy.address)
        async with kms:
            assert (await kms.health()).status == "ok"
            proxy.isolate()
            with pytest.raises(TransportError):
                await kms.health()
        with pytest.raises(TransportError, match="403"):
            await Client.connect(srv.tcp, proxy=proxy.address)
        proxy.heal()
        async with await Client.connect(srv.tcp, proxy=proxy.address) as kms:
            assert (await kms.health()).status == "ok"
        assert proxy.tunnels == 2


async def test_unix_targets_ignore_the_proxy(start_server: Any) -> None:
    srv = await start_server()
    nobody = closed_port()
    async with await Client.connect(srv.unix, proxy=nobody) as kms:
        assert (await kms.health()).status == "ok"
    with pytest.raises(TransportError, match="cannot connect"):  # tcp targets do use it
        await Client.connect(srv.tcp, proxy=nobody)


async def test_a_unix_socket_proxy(tmp_path: Any) -> None:
    from novakms.net.sockets import listener_address, open_listener

    listener = await open_listener(parse_address(f"unix://{tmp_path}/egress.sock"))
    async with trio.open_nursery() as nursery:
        handler = fake_proxy(b"HTTP/1.1 200 OK\r\n\r\nhello")
        nursery.start_soon(trio.serve_listeners, handler, [listener])
        with trio.fail_after(5):
            async with await dial(listener_address(listener), "10.0.0.7:443") as stream:
                assert await stream.receive_some(100) == b"hello"
        nursery.cancel_scope.cancel()


async def test_a_non_tcp_target_is_refused_before_dialing() -> None:
    with pytest.raises(TransportError, match="only tcp"):
        await dial(closed_port(), "unix:///tmp/kms.sock")


# --- fake proxies: answers a real one would not give -------------------------------------------


async def test_a_reply_head_over_max_head_is_refused() -> None:
    head = b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 2000 + b"\r\n\r\n"
    async with serving(fake_proxy(head)) as proxy:
        with trio.fail_after(5), pytest.raises(TransportError, match="exceeds 1024"):
            await dial(proxy, "10.0.0.7:443", max_head=1024)
        with trio.fail_after(5):  # the same head within the limit passes
            async with await dial(proxy, "10.0.0.7:443", max_head=len(head)):
                pass


async def test_a_proxy_closing_mid_head_is_a_transport_error() -> None:
    async with serving(fake_proxy(b"HTTP/1.1 200 OK\r\nX-Half: ", then_close=True)) as proxy:
        with trio.fail_after(5), pytest.raises(TransportError, match="closed the connection"):
            await dial(proxy, "10.0.0.7:443")


async def test_bytes_after_the_head_are_read_first_from_the_tunnel() -> None:
    requests: list[bytes] = []

    async def handler(stream: trio.SocketStream) -> None:
        requests.append(await read_request(stream))
        await stream.send_all(b"HTTP/1.1 200 Connection established\r\n\r\nHELLO-TUNNEL")
        assert await stream.receive_some(100) == b"go"
        await stream.send_all(b"MORE")
        await until_closed(stream)

    async with serving(handler) as proxy:
        with trio.fail_after(5):
            stream = await dial(proxy, "[2001:db8::1]:443")
            async with stream:
                assert connection_source(stream) == "127.0.0.1"
                assert await stream.receive_some(5) == b"HELLO"
                assert await stream.receive_some() == b"-TUNNEL"
                await stream.send_all(b"go")
                assert await stream.receive_some() == b"MORE"
        assert requests == [
            b"CONNECT [2001:db8::1]:443 HTTP/1.1\r\nHost: [2001:db8::1]:443\r\n\r\n"
        ]


@pytest.mark.parametrize("blocking", [False, True])
async def test_both_clients_frame_the_bytes_that_came_with_the_reply(blocking: bool) -> None:
    # A frame header declaring 1 MiB rides in the proxy's reply segment. A client that dropped
    # it would wait for the server's challenge and time out instead of refusing the frame.
    reply = b"HTTP/1.1 200 OK\r\n\r\n" + (1 << 20).to_bytes(4, "big")
    async with serving(fake_proxy(reply)) as proxy:
        connect: Any = functools.partial(
            BlockingClient.connect if blocking else Client.connect,
            "10.0.0.7:443",
            proxy=proxy,
            timeout=2,
            max_frame=8192,
        )
        with pytest.raises(FrameTooLarge):
            await (trio.to_thread.run_sync(connect) if blocking else connect())


async def test_a_closed_tunnel_stream_yields_no_buffered_bytes() -> None:
    async with serving(fake_proxy(b"HTTP/1.1 200 OK\r\n\r\nunread")) as proxy:
        with trio.fail_after(5):
            stream = await dial(proxy, "10.0.0.7:443")
        await stream.aclose()
        with pytest.raises(trio.ClosedResourceError):
            await stream.receive_some()


async def test_a_silent_proxy_times_out_and_its_connection_is_closed() -> None:
    closed = trio.Event()

    async def handler(stream: trio.SocketStream) -> None:
        await read_request(stream)  # never answers
        await until_closed(stream)
        closed.set()

    async with serving(handler) as proxy:
        with pytest.raises(TransportError, match="timed out"):
            await Client.connect("10.0.0.7:443", proxy=proxy, timeout=0.3)
        with trio.fail_after(5):
            await closed.wait()


async def test_isolate_after_cuts_once_that_many_bytes_came_back() -> None:
    echo = Echo()
    async with serving(echo) as target, connect_proxy() as proxy:
        stream = await open_via_proxy(parse_address(proxy.address), parse_address(target))
        async with stream:
            proxy.isolate_after(10)
            assert await round_trip(stream, b"12345") == b"12345"  # 5 bytes back: still open
            await stream.send_all(b"67890")
            received = b""
            while chunk := await stream.receive_some(100):  # the 10th byte trips the cut
                received += chunk
            assert received == b"67890"
        assert proxy.relayed == 10
        with pytest.raises(TransportError, match="403"):  # isolated until healed
            await open_via_proxy(parse_address(proxy.address), parse_address(target))
