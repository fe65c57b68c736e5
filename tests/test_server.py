"""End to end over real TCP and Unix sockets: derive, authorization, limits, bad input, shutdown."""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import socket
from typing import Any

import pytest
import trio

from novakms.client.aio import Client
from novakms.client.blocking import BlockingClient
from novakms.config import Limits
from novakms.errors import (
    BadRequest,
    Forbidden,
    HandshakeError,
    InternalError,
    NovaKMSError,
    RateLimited,
    Unauthenticated,
    Unavailable,
    UnknownOp,
)
from novakms.net.addresses import parse_address
from novakms.net.dial import open_stream
from novakms.net.framed import END_OF_STREAM, FramedStream, SealedStream
from novakms.wire import cbor
from novakms.wire.messages import parse_close_notice
from tests.harness.registry import MASTER_SECRET, GatedSource, Wallets
from tests.sessions import handshake


def reference_hkdf(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869, written out independently of the code under test."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def expected_key(app_id: int, path: str, context: str = "", length: int = 32) -> bytes:
    info = path if not context else f"{path}:{context}"
    return reference_hkdf(MASTER_SECRET, f"nova-kms:app:{app_id}".encode(), info.encode(), length)


# --- derive and authorization ------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["tcp", "unix"])
async def test_derive_matches_independent_hkdf(
    start_server: Any, wallets: Wallets, transport: str
) -> None:
    srv = await start_server()
    address = getattr(srv, transport)
    async with await Client.connect(
        address, signer=wallets.app1, expect_wallet=wallets.node.wallet
    ) as kms:
        assert kms.server_wallet == wallets.node.wallet and kms.wallet == wallets.app1.wallet
        r = await kms.derive("disk/key")
        assert (r.app_id, r.path, r.length, r.key) == (
            1,
            "disk/key",
            32,
            expected_key(1, "disk/key"),
        )
        r = await kms.derive("disk/key", context="v2", length=64)
        assert r.key == expected_key(1, "disk/key", "v2", 64)
        assert (await kms.derive("disk/key", context="")).key == expected_key(1, "disk/key")
        assert (await kms.derive("x", length=1024)).key == expected_key(1, "x", length=1024)
    async with await Client.connect(address, signer=wallets.app2) as kms:
        r = await kms.derive("disk/key")
        assert r.app_id == 2 and r.key == expected_key(2, "disk/key") != expected_key(1, "disk/key")
    # A deprecated (not revoked) version still gets keys.
    async with await Client.connect(address, signer=wallets.deprecated_version) as kms:
        assert (await kms.derive("p")).app_id == 1


@pytest.mark.parametrize(
    ("who", "reason"),
    [
        ("stranger", "unknown_wallet"),
        ("stopped", "instance_not_active"),
        ("not_zk", "instance_not_zk_verified"),
        ("inactive_app", "app_not_active"),
        ("revoked_version", "version_revoked"),
    ],
)
async def test_unauthorized_wallets_are_forbidden(
    start_server: Any, wallets: Wallets, who: str, reason: str
) -> None:
    srv = await start_server()
    async with await Client.connect(srv.tcp, signer=getattr(wallets, who)) as kms:
        with pytest.raises(Forbidden) as info:
            await kms.derive("p")
        assert info.value.details["reason"] == reason
        # The connection stays usable for unauthenticated ops.
        assert (await kms.health()).status == "ok"


async def test_anonymous_derive_is_unauthenticated(start_server: Any) -> None:
    srv = await start_server()
    async with await Client.connect(srv.unix) as kms:
        assert kms.wallet is None
        with pytest.raises(Unauthenticated):
            await kms.derive("p")
        status = await kms.call("status")
        assert status["ready"] is True and status["secret"]["initialized"] is True
        assert (
            status["secret"]["fingerprint"].startswith("0x")
            and len(status["secret"]["fingerprint"]) == 66
        )
        assert MASTER_SECRET.hex() not in repr(status)


async def test_peer_role_cannot_derive(start_server: Any, wallets: Wallets) -> None:
    srv = await start_server()
    async with await Client.connect(srv.tcp, signer=wallets.app1, role="peer") as kms:
        with pytest.raises(Forbidden) as info:
            await kms.derive("p")
        assert info.value.details["reason"] == "wrong_role"


async def test_revocation_applies_to_open_connections(start_server: Any, wallets: Wallets) -> None:
    srv = await start_server()
    async with await Client.connect(srv.tcp, signer=wallets.app1) as kms:
        await kms.derive("p")
        srv.registry.set_version_status(1, 1, "REVOKED")
        with pytest.raises(Forbidden):
            await kms.derive("p")


async def test_node_without_secret_is_unavailable(start_server: Any, wallets: Wallets) -> None:
    srv = await start_server(master_secret=None)
    async with await Client.connect(srv.tcp, signer=wallets.app1) as kms:
        with pytest.raises(Unavailable) as info:
            await kms.derive("p")
        assert info.value.reason == "not_ready"
        status = await kms.call("status")
        assert status["ready"] is False and status["secret"] == {
            "initialized": False,
            "fingerprint": None,
            "matches_pin": True,
            "pinned": False,
            "pin_required": False,
        }


@pytest.mark.parametrize(
    "args",
    [
        {},
        {"path": ""},
        {"path": "x" * 1025},
        {"path": 7},
        {"path": None},
        {"path": b"bytes"},
        {"path": "p", "length": 0},
        {"path": "p", "length": 1025},
        {"path": "p", "length": True},
        {"path": "p", "length": "32"},
        {"path": "p", "context": "c" * 1025},
        {"path": "p", "context": 5},
        {"path": "p", "app_id": 2},
    ],
)
async def test_bad_derive_arguments(
    start_server: Any, wallets: Wallets, args: dict[str, Any]
) -> None:
    srv = await start_server()
    async with await Client.connect(srv.tcp, signer=wallets.app1) as kms:
        with pytest.raises(BadRequest):
            await kms.call("derive", args)
        assert (await kms.derive("still/fine")).app_id == 1


async def test_unknown_op_and_unknown_health_args(start_server: Any) -> None:
    srv = await start_server()
    async with await Client.connect(srv.tcp) as kms:
        with pytest.raises(UnknownOp):
            await kms.call("kv.teleport")
        with pytest.raises(BadRequest):
            await kms.call("health", {"verbose": True})


async def test_wrong_expected_server_wallet(start_server: Any, wallets: Wallets) -> None:
    srv = await start_server()
    with pytest.raises(HandshakeError):
        await Client.connect(srv.tcp, expect_wallet=wallets.app1.wallet)


# --- concurrency and backpressure --------------------------------------------------------------


async def test_many_tasks_share_one_connection(start_server: Any, wallets: Wallets) -> None:
    srv = await start_server()
    results: dict[int, bytes] = {}
    async with await Client.connect(srv.tcp, signer=wallets.app1) as kms:

        async def one(i: int) -> None:
            results[i] = (await kms.derive(f"k/{i}")).key

        async with trio.open_nursery() as nursery:
            for i in range(200):
                nursery.start_soon(one, i)
    assert results == {i: expected_key(1, f"k/{i}") for i in range(200)}


async def test_responses_come_back_out_of_order(start_server: Any, wallets: Wallets) -> None:
    srv = await start_server()
    srv.node.registry = gated = GatedSource(srv.node.registry)
    order: list[str] = []
    async with await Client.connect(srv.tcp, signer=wallets.app1) as kms:

        async def slow() -> None:
            await kms.derive("slow")
            order.append("derive")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow)
            await trio.testing.wait_all_tasks_blocked()
            assert gated.calls == 1
            await kms.health()
            order.append("health")
            gated.gate.set()
    assert order == ["health", "derive"]


async def test_inflight_limit_applies_backpressure(start_server: Any, wallets: Wallets) -> None:
    srv = await start_server(limits=Limits(max_inflight=2))
    srv.node.registry = gated = GatedSource(srv.node.registry)
    async with await Client.connect(srv.tcp, signer=wallets.app1) as kms:
        assert kms.server_max_inflight == 2
        async with trio.open_nursery() as nursery:
            for i in range(6):
                nursery.start_soon(kms.derive, f"p{i}")
            await trio.sleep(0.2)
            # Only two requests are being processed; the rest wait unread in the socket.
            assert gated.calls == 2
            gated.gate.set()
    # Six authorizations, plus the per-session registration check of the first two requests
    # (both began before either finished it), which picks the rate-limit bucket.
    assert gated.calls == 8


async def test_pipelined_requests_are_answered_in_few_writes_and_in_order_of_sealing(
    start_server: Any, wallets: Wallets, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 64 derives sent in one write: the reader answers them without tasks and queues the
    # answers; before it waits, they go out together (max_inflight 32: at least two writes).
    srv = await start_server()
    writes: list[int] = []  # frames per write
    send_data, send_now = FramedStream.send_data, FramedStream.send_now

    async def counted(self: FramedStream, data: bytes) -> None:
        writes.append(frames_in(data))
        await send_data(self, data)

    def counted_now(self: FramedStream, data: bytes) -> int:
        sent = send_now(self, data)
        if sent:
            assert sent == len(data)  # a small write on loopback is taken whole
            writes.append(frames_in(data))
        return sent

    monkeypatch.setattr(FramedStream, "send_data", counted)
    monkeypatch.setattr(FramedStream, "send_now", counted_now)
    s = await raw_session(srv.tcp, signer=wallets.app1)
    writes.clear()
    plaintexts = [
        cbor.encode({"id": i, "op": "derive", "args": {"path": f"k/{i}"}}) for i in range(64)
    ]
    bodies = [s.channel.seal_plaintext(p) for p in plaintexts]
    await s.framed.stream.send_all(b"".join(len(b).to_bytes(4, "big") + b for b in bodies))
    answers = [await s.receive() for _ in range(64)]
    assert [a["id"] for a in answers] == list(range(64))  # every frame opened: sealing order
    assert [a["ok"]["key"] for a in answers] == [expected_key(1, f"k/{i}") for i in range(64)]
    assert sum(writes) == 64 and 2 <= len(writes) <= 8, writes
    await s.framed.aclose()


async def test_answers_the_kernel_does_not_take_at_once_are_sent_whole_and_in_order(
    start_server: Any, wallets: Wallets, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A client with a small receive buffer asks for large values and reads only later: the
    # reader's direct write is cut short, the writer sends the rest, and every answer arrives
    # whole, in order, interleaved correctly with the answers of request tasks (kv.put).
    srv = await start_server()
    value = os.urandom(300_000)
    async with await Client.connect(srv.tcp, signer=wallets.app1) as kms:
        await kms.kv_put("big", value)
    partial: list[tuple[int, int]] = []
    send_now = FramedStream.send_now

    def noted(self: FramedStream, data: bytes) -> int:
        sent = send_now(self, data)
        if sent < len(data):
            partial.append((sent, len(data)))
        return sent

    monkeypatch.setattr(FramedStream, "send_now", noted)
    # The buffer is set before connecting, so the window it offers is a sane one (shrunk
    # afterwards, loopback TCP waits on its persist timer instead of sending window updates).
    host, port = srv.tcp.removeprefix("tcp://").rsplit(":", 1)
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    await sock.connect((host, int(port)))
    s = await handshake(trio.SocketStream(sock), wallets.app1)
    requests: list[dict[str, Any]] = []
    for i in range(12):
        if i % 4 == 3:  # a task's answer between the reader's
            requests.append({"id": i, "op": "kv.put", "args": {"key": f"k{i}", "value": b"v"}})
        else:
            requests.append({"id": i, "op": "kv.get", "args": {"key": "big"}})
    bodies = [s.channel.seal_plaintext(cbor.encode(r)) for r in requests]
    await s.framed.stream.send_all(b"".join(len(b).to_bytes(4, "big") + b for b in bodies))
    await trio.sleep(0.3)  # nothing read: the server's writes stop at the full buffers
    assert partial, "no direct write was cut short"
    answers = {}
    for _ in requests:
        answer = await s.receive()
        answers[answer["id"]] = answer["ok"]
    assert sorted(answers) == list(range(12))
    for i, ok in answers.items():
        if i % 4 != 3:
            assert ok["value"] == value
    await s.send({"id": 99, "op": "health"})  # the channel is still in step
    assert (await s.receive())["id"] == 99
    await s.framed.aclose()


def frames_in(data: bytes) -> int:
    """How many whole frames ``data`` holds (it must end at a frame's end)."""
    count, at = 0, 0
    while at < len(data):
        at += 4 + int.from_bytes(data[at : at + 4], "big")
        count += 1
    assert at == len(data)
    return count


async def test_crashing_handler_is_an_internal_error_not_a_crash(
    start_server: Any, wallets: Wallets
) -> None:
    srv = await start_server()
    srv.node.registry = gated = GatedSource(srv.node.registry)
    gated.crash = True
    async with await Client.connect(srv.tcp, signer=wallets.app1) as kms:
        with pytest.raises(InternalError) as info:
            await kms.derive("p")
        assert "boom" not in info.value.message  # details stay in the server log
        assert (await kms.health()).status == "ok"


# --- limits ------------------------------------------------------------------------------------


async def test_wallet_rate_limit(start_server: Any, wallets: Wallets) -> None:
    srv = await start_server(limits=Limits(wallet_rate=0.01, wallet_burst=3))
    async with await Client.connect(srv.tcp, signer=wallets.app1) as kms:
        for _ in range(3):
            await kms.derive("p")
        with pytest.raises(RateLimited) as info:
            await kms.derive("p")
        assert info.value.details["retry_after_ms"] > 0
    # Another wallet has its own bucket.
    async with await Client.connect(srv.tcp, signer=wallets.app2) as kms:
        await kms.derive("p")


async def test_handshake_rate_limit_per_source(start_server: Any) -> None:
    srv = await start_server(limits=Limits(handshake_rate=0.01, handshake_burst=2))
    for _ in range(2):
        async with await Client.connect(srv.tcp):
            pass
    with pytest.raises(RateLimited):
        await Client.connect(srv.tcp)


async def test_connection_limit(start_server: Any, wallets: Wallets) -> None:
    srv = await start_server(limits=Limits(max_connections=2))
    app1, app2 = wallets.app1, wallets.app2
    async with (
        await Client.connect(srv.tcp, signer=app1) as one,
        await Client.connect(srv.unix, signer=app2) as two,
    ):
        await one.derive("p")  # authorized: no longer evictable
        await two.derive("p")
        with pytest.raises(Unavailable) as info:
            await Client.connect(srv.tcp)
        assert info.value.reason == "too_many_connections"
    # Slots are released when connections close.
    await trio.sleep(0.05)
    async with await Client.connect(srv.tcp) as kms:
        await kms.health()


# --- bad input never hurts other clients --------------------------------------------------------


async def raw_session(address: str, signer: Any = None) -> SealedStream:
    """A hand-driven session, for sending what the client library never would."""
    return await handshake(await open_stream(parse_address(address)), signer)


async def next_notice(sealed: SealedStream) -> NovaKMSError | None:
    item = await sealed.receive()
    assert item is not END_OF_STREAM
    return parse_close_notice(item)


async def test_malformed_sealed_messages(start_server: Any) -> None:
    srv = await start_server()
    # A map with a usable id but a bad shape: an error response, the connection lives on.
    s = await raw_session(srv.tcp)
    await s.send({"id": 5, "op": "health"})
    assert (await s.receive())["err"]["code"] == "bad_request"
    await s.send({"id": 6, "op": "health", "args": {}})
    assert await s.receive() == {"id": 6, "ok": {"status": "ok"}}
    # No usable id: close notice, then the connection ends.
    await s.send(["not", "a", "request"])
    notice = await next_notice(s)
    assert notice is not None and notice.code == "bad_request"
    assert await s.receive() is END_OF_STREAM
    await s.framed.aclose()
    # A plaintext frame after the handshake breaks the channel: closed without an answer.
    s = await raw_session(srv.unix)
    await s.framed.send_body(cbor.encode({"id": 1, "op": "health", "args": {}}))
    with trio.fail_after(5):
        assert await s.receive() is END_OF_STREAM
    await s.framed.aclose()


async def test_duplicate_inflight_id_closes(start_server: Any, wallets: Wallets) -> None:
    srv = await start_server()
    srv.node.registry = gated = GatedSource(srv.node.registry)
    s = await raw_session(srv.tcp, signer=wallets.app1)
    await s.send({"id": 9, "op": "derive", "args": {"path": "p"}})
    while gated.calls == 0:  # the first request is now held in flight by the gate
        await trio.sleep(0.01)
    await s.send({"id": 9, "op": "derive", "args": {"path": "p"}})
    notice = await next_notice(s)
    assert notice is not None and notice.code == "bad_request" and "in flight" in notice.message
    assert await s.receive() is END_OF_STREAM
    await s.framed.aclose()


async def test_garbage_and_half_open_connections_do_not_disturb_others(
    start_server: Any, wallets: Wallets
) -> None:
    srv = await start_server(
        limits=Limits(max_frame=8192, max_value_bytes=1024, handshake_timeout=2)
    )
    host, port = srv.tcp.rsplit(":", 1)
    bad: list[socket.socket] = []
    # random bytes, an oversize length prefix, a frame that never completes, an idle socket
    for payload in (os.urandom(300), b"\xff\xff\xff\xff", b"\x00\x00\x10\x00" + b"\xa1" * 10, b""):
        sock = socket.create_connection((host, int(port)))
        if payload:
            sock.sendall(payload)
        bad.append(sock)
    try:
        async with await Client.connect(srv.tcp, signer=wallets.app1) as kms:
            for i in range(20):
                assert (await kms.derive(f"ok/{i}")).key == expected_key(1, f"ok/{i}")
        # The oversize prefix got a too_large notice before the server closed.
        bad[1].settimeout(5)
        data = bad[1].recv(4096)
        assert b"too_large" in data
    finally:
        for sock in bad:
            sock.close()


# --- shutdown and the blocking client ------------------------------------------------------------


def test_blocking_client(wallets: Wallets, tmp_path: Any) -> None:
    """The blocking client against a server running in another thread's trio loop."""
    import threading

    from novakms.auth.static import StaticRegistry
    from novakms.config import ServerConfig
    from novakms.server.node import build_node
    from novakms.server.server import serve
    from tests.harness.registry import registry_json

    config = ServerConfig(listen=("tcp://127.0.0.1:0", f"unix://{tmp_path}/b.sock"))
    registry = StaticRegistry.from_json(registry_json(wallets))
    node = build_node(
        config=config,
        signer=wallets.node,
        registry=registry,
        membership=registry,
        secret=MASTER_SECRET,
    )
    started = threading.Event()
    token: list[Any] = []
    stops: list[trio.Event] = []
    addresses: list[str] = []

    async def main() -> None:
        stops.append(trio.Event())
        async with trio.open_nursery() as nursery:
            addresses.extend(
                await nursery.start(functools.partial(serve, node, config, stop=stops[0]))
            )
            token.append(trio.lowlevel.current_trio_token())
            started.set()

    thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        for address in addresses:
            with BlockingClient.connect(
                address, signer=wallets.app2, expect_wallet=wallets.node.wallet
            ) as kms:
                assert kms.health().status == "ok"
                assert kms.derive("b", length=48).key == expected_key(2, "b", length=48)
                with pytest.raises(BadRequest):
                    kms.derive("")
                assert kms.derive("c").app_id == 2  # still usable after an error response
        with BlockingClient.connect(addresses[0]) as anon, pytest.raises(Unauthenticated):
            anon.derive("b")
        with pytest.raises(HandshakeError):
            BlockingClient.connect(addresses[0], expect_wallet=wallets.app1.wallet)
    finally:
        trio.from_thread.run_sync(stops[0].set, trio_token=token[0])
        thread.join(15)
    assert not thread.is_alive()


async def test_nodes_lists_operators_from_the_static_registry(
    start_server: Any, wallets: Wallets
) -> None:
    srv = await start_server()
    async with await Client.connect(srv.tcp) as kms:
        nodes = await kms.call("nodes")
    assert nodes["self"] == wallets.node.wallet
    # The node is an operator in the test registry but has no instance record there.
    assert nodes["nodes"] == [
        {
            "wallet": wallets.node.wallet,
            "authorized": False,  # the peer policy's verdict: no instance, no peer
            "reason": "unknown_wallet",
            "instance_id": None,
            "instance_url": None,
            "address": None,  # nowhere to dial without an instance URL
            "status": None,
            "zk_verified": None,
            "version_id": None,
            "probe": None,
        }
    ]


async def test_a_request_too_large_for_a_frame_fails_locally_and_the_connection_survives(
    start_server: Any, wallets: Wallets
) -> None:
    from novakms.errors import TooLarge

    srv = await start_server(limits=Limits(max_frame=8192, max_value_bytes=1024))
    async with await Client.connect(srv.tcp, signer=wallets.app1, max_frame=8192) as kms:
        with pytest.raises(TooLarge):
            await kms.kv_put("k", bytes(9000))
        assert (await kms.derive("still/works")).app_id == 1

    def blocking_side() -> None:  # in a worker thread: the server runs on this trio loop
        with BlockingClient.connect(srv.tcp, signer=wallets.app1, max_frame=8192) as blocking:
            with pytest.raises(TooLarge):
                blocking.kv_put("k", bytes(9000))
            assert blocking.derive("still/works").app_id == 1

    await trio.to_thread.run_sync(blocking_side)


# --- the OPS table's auth column decides who may call each op ------------------------------------

#: For each auth column, the refusal each kind of caller gets: (error class, reason) or None when
#: the column admits it (the op may still refuse its arguments).
_REFUSALS: dict[str, dict[str, tuple[type[NovaKMSError], str | None] | None]] = {
    "none": {"anonymous": None, "app": None, "peer": None, "guardian": None},
    "app": {
        "anonymous": (Unauthenticated, None),
        "app": None,
        "peer": (Forbidden, "wrong_role"),
        "guardian": (Forbidden, "wrong_role"),
    },
    "peer": {
        "anonymous": (Unauthenticated, None),
        "app": (Forbidden, "wrong_role"),
        "peer": None,
        "guardian": (Forbidden, "wrong_role"),
    },
    "proven_peer": {
        "anonymous": (Unauthenticated, None),
        "app": (Forbidden, "wrong_role"),
        "peer": (Forbidden, "no_cluster_proof"),  # authorized, but no sync.hello on the channel
        "guardian": (Forbidden, "wrong_role"),
    },
    "guardian": {
        "anonymous": (Unauthenticated, None),
        "app": (Forbidden, "wrong_role"),
        "peer": (Forbidden, "wrong_role"),
        "guardian": (Forbidden, "not_guardian"),  # the registry has no guardian set
    },
}
_AUTH_REFUSALS = {"wrong_role", "no_cluster_proof", "not_guardian"}
#: The policy itself: who may call what (PROTOCOL.md). A new op must be placed here too.
_COLUMNS = {
    **dict.fromkeys(["health", "status", "nodes", "cert.ca"], "none"),
    **dict.fromkeys(["derive", "cert.sign", "kv.get", "kv.put", "kv.delete", "kv.list"], "app"),
    **dict.fromkeys(["keys.public", "keys.attest", "sign", "encrypt", "decrypt"], "app"),
    **dict.fromkeys(["secret.status", "secret.get", "sync.hello"], "peer"),
    **dict.fromkeys(
        ["sync.push", "sync.digests", "sync.buckets", "sync.keys", "sync.pull"], "proven_peer"
    ),
    **dict.fromkeys(["sync.snapshot", "sync.forget"], "proven_peer"),
    **dict.fromkeys(["cas.prepare", "cas.accept", "cas.recover"], "proven_peer"),
    **dict.fromkeys(["guardian.share", "guardian.restore"], "guardian"),
}


async def test_every_op_is_refused_to_the_callers_its_auth_column_excludes(
    start_server: Any, wallets: Wallets
) -> None:
    from novakms.server.ops.dispatch import OPS

    assert {name: op.auth for name, op in OPS.items()} == _COLUMNS
    # app2's instance stands in for a KMS node: its app is the KMS app and it is an operator.
    srv = await start_server(registry_changes={"kms_app_id": 2, "operators": [wallets.app2.wallet]})
    callers = {
        "anonymous": await Client.connect(srv.tcp),
        "app": await Client.connect(srv.tcp, signer=wallets.app1),
        "peer": await Client.connect(srv.tcp, signer=wallets.app2, role="peer"),
        "guardian": await Client.connect(srv.tcp, signer=wallets.app1, role="guardian"),
    }
    try:
        for op, (auth, _) in sorted(OPS.items()):
            for who, client in callers.items():
                expected = _REFUSALS[auth][who]
                try:
                    await client.call(op, {})
                except NovaKMSError as exc:
                    got: tuple[type[NovaKMSError], str | None] | None = (
                        type(exc),
                        exc.details.get("reason"),
                    )
                else:
                    got = None
                if expected is None:  # admitted: whatever it answers, it is no auth refusal
                    assert got is None or (
                        got[0] is not Unauthenticated and got[1] not in _AUTH_REFUSALS
                    ), (op, who, got)
                else:
                    assert got is not None, (op, who, "admitted")
                    assert issubclass(got[0], expected[0]), (op, who, got)
                    if expected[1] is not None:
                        assert got[1] == expected[1], (op, who, got)
    finally:
        for client in callers.values():
            await client.aclose()


async def test_a_server_with_nothing_to_listen_on_refuses_to_start(wallets: Wallets) -> None:
    """No listen address and no listener handed over: a clear error, not a silent idle node."""
    from novakms.auth.static import StaticRegistry
    from novakms.config import ServerConfig
    from novakms.server.node import build_node
    from novakms.server.server import Server
    from tests.harness.registry import registry_json

    config = ServerConfig()
    registry = StaticRegistry.from_json(registry_json(wallets))
    node = build_node(
        config=config, signer=wallets.node, registry=registry, membership=None, secret=MASTER_SECRET
    )
    with pytest.raises(ValueError, match="listen"):
        await Server(config=config, node=node).run()
