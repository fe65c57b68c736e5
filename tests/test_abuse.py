"""Attacks on a real server over real sockets: each costs bounded work and spares the victim.

Issue 9, items 1-5: pre-auth decode cost, unbounded answers to invalid requests, connection
slots, clients that never read, and whose limit it is (PROXY protocol v2, unregistered wallets).
Every test performs the attack and asserts the structural outcome (refused at the prefix,
connection closed, victim served), never a duration.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import pytest
import trio

from novakms.client.aio import Client
from novakms.cluster.proof import cluster_proof
from novakms.config import Limits
from novakms.crypto.signer import LocalSigner
from novakms.errors import BadRequest, NovaKMSError, RateLimited, TransportError, Unavailable
from novakms.net.addresses import parse_address
from novakms.net.framed import END_OF_STREAM, FramedStream, SealedStream
from novakms.wire import cbor
from novakms.wire.handshake import ClientHandshake
from novakms.wire.messages import parse_close_notice
from novakms.wire.proxy_header import encode_v2
from tests.harness.registry import MASTER_SECRET, Wallets
from tests.sessions import handshake


async def dial(address: str, *, source: str = "127.0.0.1") -> trio.SocketStream:
    """A TCP connection from a chosen loopback source address (any 127.x works on Linux)."""
    target = parse_address(address)
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    await sock.bind((source, 0))
    await sock.connect((target.host, target.port))
    return trio.SocketStream(sock)


async def plain_notice(stream: trio.SocketStream) -> NovaKMSError | None:
    """Read the plaintext close notice the server sends before closing (None: just closed)."""
    framed = FramedStream(stream, max_frame=2_097_152)
    with trio.fail_after(10):
        try:
            body = await framed.receive_body()
        except TransportError:
            return None
    return None if body is None else parse_close_notice(cbor.decode(body))


async def closing_notice(sealed: SealedStream) -> NovaKMSError | None:
    """Skip answers until the close notice (or the end of the stream)."""
    with trio.fail_after(10):
        while True:
            try:
                item = await sealed.receive()
            except TransportError:
                return None
            if item is END_OF_STREAM:
                return None
            notice = parse_close_notice(item)
            if notice is not None:
                return notice


async def victim_is_served(srv: Any, signer: LocalSigner) -> None:
    async with await Client.connect(srv.tcp, signer=signer) as kms:
        assert (await kms.derive("victim")).app_id == 1


# --- 1. pre-auth decode cost -------------------------------------------------------------------


async def test_a_huge_client_hello_is_refused_at_its_length_prefix(
    start_server: Any, wallets: Wallets
) -> None:
    srv = await start_server()
    attackers = []
    for _ in range(10):
        stream = await dial(srv.tcp)
        # Only the 4-byte prefix: the server must refuse without waiting for the 2 MiB body.
        await stream.send_all((2 * 1_048_576).to_bytes(4, "big"))
        attackers.append(stream)
    for stream in attackers:
        notice = await plain_notice(stream)
        assert notice is not None and notice.code == "too_large"
        assert "exceeds max_frame 1024" in notice.message
        await stream.aclose()
    await victim_is_served(srv, wallets.app1)


async def test_a_small_hello_with_many_items_is_refused_by_the_decode_budget(
    start_server: Any,
) -> None:
    srv = await start_server()
    stream = await dial(srv.tcp)
    body = b"\x99\x03\xe8" + b"\x00" * 1000  # an array of 1000 items in 1003 bytes
    await stream.send_all(len(body).to_bytes(4, "big") + body)
    notice = await plain_notice(stream)
    assert notice is not None and notice.code == "bad_request"
    assert "more than 8 items" in notice.message
    await stream.aclose()


async def test_anonymous_sessions_have_a_small_frame_limit_and_decode_budget(
    start_server: Any,
) -> None:
    srv = await start_server()
    async with await Client.connect(srv.tcp) as anonymous:
        assert anonymous.server_max_frame == Limits().max_anonymous_frame
    # A frame above the anonymous limit: refused at its prefix.
    sealed = await handshake(await dial(srv.tcp))
    await sealed.framed.stream.send_all((5000).to_bytes(4, "big"))
    notice = await closing_notice(sealed)
    assert notice is not None and notice.code == "too_large"
    assert "exceeds max_frame 4096" in notice.message
    await sealed.framed.aclose()
    # Within the frame limit but over the anonymous decode budget (64 items).
    sealed = await handshake(await dial(srv.tcp))
    await sealed.send({"id": 1, "op": "health", "args": {"x": list(range(100))}})
    notice = await closing_notice(sealed)
    assert notice is not None and notice.code == "bad_request"
    assert "more than 64 items" in notice.message
    await sealed.framed.aclose()


async def test_app_requests_have_a_decode_budget(start_server: Any, wallets: Wallets) -> None:
    srv = await start_server()
    sealed = await handshake(await dial(srv.tcp), wallets.app1)
    await sealed.send({"id": 1, "op": "derive", "args": {"path": "a", "x": [0] * 2000}})
    notice = await closing_notice(sealed)
    assert notice is not None and notice.code == "bad_request"
    assert "more than 1024 items" in notice.message
    await sealed.framed.aclose()
    await victim_is_served(srv, wallets.app1)


# --- 2. invalid requests take slots; a connection that keeps sending them is closed -------------


async def test_a_client_sending_invalid_requests_is_closed(start_server: Any) -> None:
    srv = await start_server(limits=Limits(max_invalid_requests=5))
    sealed = await handshake(await dial(srv.tcp))
    for i in range(200):  # never reading; a bad op type makes each one invalid
        try:
            await sealed.send({"id": i, "op": 7, "args": {}})
        except TransportError:
            break
    answers = 0
    with trio.fail_after(10):
        while True:
            try:
                item = await sealed.receive()
            except TransportError:
                break
            if item is END_OF_STREAM:
                break
            notice = parse_close_notice(item)
            if notice is not None:
                assert notice.code == "bad_request"
                assert notice.details.get("reason") == "invalid_requests"
                break
            assert item["err"]["code"] == "bad_request"
            answers += 1
    assert answers <= 5
    await sealed.framed.aclose()


# --- 3. connection slots -----------------------------------------------------------------------


async def test_one_source_cannot_take_every_connection(start_server: Any, wallets: Wallets) -> None:
    srv = await start_server(limits=Limits(max_connections_per_source=3))
    held = [await handshake(await dial(srv.tcp, source="127.0.0.2")) for _ in range(3)]
    refused = await dial(srv.tcp, source="127.0.0.2")
    notice = await plain_notice(refused)
    assert notice is not None and notice.code == "unavailable"
    assert notice.details["reason"] == "too_many_connections_from_source"
    await refused.aclose()
    await victim_is_served(srv, wallets.app1)  # from 127.0.0.1
    for sealed in held:
        await sealed.framed.aclose()


async def test_idle_anonymous_sessions_are_evicted_for_apps_and_peers(
    start_server: Any, wallets: Wallets
) -> None:
    srv = await start_server(limits=Limits(max_connections=8, max_unproven_connections=2))
    first = await handshake(await dial(srv.tcp, source="127.0.0.2"))
    second = await handshake(await dial(srv.tcp, source="127.0.0.3"))
    await second.send({"id": 1, "op": "health", "args": {}})  # second is the more recent
    assert (await second.receive())["ok"] == {"status": "ok"}
    # The unproven pool is full: an app's connection evicts the least recently active one.
    await victim_is_served(srv, wallets.app1)
    notice = await closing_notice(first)
    assert notice is not None and notice.details["reason"] == "evicted"
    await second.send({"id": 2, "op": "health", "args": {}})
    assert (await second.receive())["ok"] == {"status": "ok"}
    await first.framed.aclose()
    await second.framed.aclose()


async def test_handshaking_connections_are_not_evicted_and_the_pool_refuses(
    start_server: Any,
) -> None:
    srv = await start_server(limits=Limits(max_connections=8, max_unproven_connections=2))
    silent = [await dial(srv.tcp, source="127.0.0.2") for _ in range(2)]  # mid-handshake
    await trio.testing.wait_all_tasks_blocked()
    refused = await dial(srv.tcp, source="127.0.0.3")
    notice = await plain_notice(refused)
    assert notice is not None and notice.details["reason"] == "too_many_unproven"
    for stream in [*silent, refused]:
        await stream.aclose()


async def test_one_source_cannot_fill_the_pool_with_silent_handshakes(
    start_server: Any, wallets: Wallets
) -> None:
    srv = await start_server(limits=Limits(max_unproven_connections=4, max_unproven_per_source=2))
    silent = [await dial(srv.tcp, source="127.0.0.2") for _ in range(2)]  # never handshake
    await trio.testing.wait_all_tasks_blocked()
    refused = await dial(srv.tcp, source="127.0.0.2")
    notice = await plain_notice(refused)
    assert notice is not None and notice.details["reason"] == "too_many_connections_from_source"
    await victim_is_served(srv, wallets.app1)  # another source still finds room
    for stream in [*silent, refused]:
        await stream.aclose()


# --- 4. clients that never read ----------------------------------------------------------------


async def test_a_client_that_never_reads_is_disconnected_and_its_answers_are_bounded(
    start_server: Any, wallets: Wallets
) -> None:
    budget = 2 * 1_048_576
    srv = await start_server(limits=Limits(send_timeout=0.5, max_queued_response_bytes=budget))
    async with await Client.connect(srv.tcp, signer=wallets.app1) as kms:
        await kms.kv_put("big", b"v" * 1_048_576)
    stream = await dial(srv.tcp)
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck = await handshake(stream, wallets.app1)
    for i in range(40):
        await stuck.send({"id": i, "op": "kv.get", "args": {"key": "big"}})
    # While it is stuck, no connection holds more than its budget plus one answer.
    await trio.testing.wait_all_tasks_blocked()
    for conn in srv.server._connections.values():
        assert conn.budget.used <= budget + 1_048_576 + 4096
    await victim_is_served(srv, wallets.app1)
    # The send deadline closes the stuck connection: its slot is given back.
    with trio.fail_after(10):
        while srv.node.connections:
            await trio.sleep(0.05)
    await stuck.framed.aclose()


# --- 5. whose limit is it ----------------------------------------------------------------------


async def test_proxy_protocol_v2_limits_key_on_the_real_client(
    start_server: Any, wallets: Wallets
) -> None:
    srv = await start_server(proxy=True, limits=Limits(handshake_burst=2, handshake_rate=0.001))
    for _ in range(2):
        sealed = await handshake(await dial(srv.proxied), prefix=encode_v2("203.0.113.7", 4000))
        await sealed.framed.aclose()
    # The third handshake of 203.0.113.7 is over its burst ...
    refused = await dial(srv.proxied)
    await refused.send_all(encode_v2("203.0.113.7", 4001))
    notice = await plain_notice(refused)
    assert isinstance(notice, RateLimited)
    await refused.aclose()
    # ... while another client behind the same proxy (same socket source) is served.
    sealed = await handshake(await dial(srv.proxied), prefix=encode_v2("198.51.100.9", 4000))
    await sealed.send({"id": 1, "op": "health", "args": {}})
    assert (await sealed.receive())["ok"] == {"status": "ok"}
    await sealed.framed.aclose()


@pytest.mark.parametrize(
    "prefix",
    [b"", b"GET / HTTP/1.1\r\n\r\n", encode_v2("10.0.0.1")[:12] + b"\x22\x11\x00\x0c" + bytes(12)],
    ids=["no-header", "not-a-header", "bad-version"],
)
async def test_a_proxy_listener_refuses_connections_without_a_valid_header(
    start_server: Any, prefix: bytes
) -> None:
    srv = await start_server(proxy=True, limits=Limits(handshake_timeout=0.5))
    stream = await dial(srv.proxied)
    hs = ClientHandshake(role="app", eph_private=os.urandom(32))
    await stream.send_all(prefix + len(hs.hello()).to_bytes(4, "big") + hs.hello())
    with trio.fail_after(10):
        data = b""
        while chunk := await stream.receive_some(4096):
            data += chunk
    assert data == b""  # closed without a challenge
    await stream.aclose()


async def test_a_local_proxy_header_keeps_the_socket_source(start_server: Any) -> None:
    srv = await start_server(proxy=True)
    sealed = await handshake(await dial(srv.proxied), prefix=encode_v2(None))
    await sealed.send({"id": 1, "op": "health", "args": {}})
    assert (await sealed.receive())["ok"] == {"status": "ok"}
    await sealed.framed.aclose()


async def test_unregistered_wallets_share_their_source_bucket(
    start_server: Any, wallets: Wallets
) -> None:
    srv = await start_server(
        limits=Limits(anonymous_burst=5, anonymous_rate=0.001, wallet_burst=5, wallet_rate=0.001)
    )
    codes = []
    for _ in range(8):  # fresh key pairs, each on its own connection
        async with await Client.connect(srv.tcp, signer=LocalSigner(os.urandom(32))) as kms:
            with pytest.raises(NovaKMSError) as refused:
                await kms.derive("x")
            codes.append(refused.value.code)
    # One bucket of 5 for the source, not 5 per key pair.
    assert codes == ["forbidden"] * 5 + ["rate_limited"] * 3
    # A registered app from the same source has its own bucket.
    async with await Client.connect(srv.tcp, signer=wallets.app1) as kms:
        for _ in range(5):
            await kms.derive("mine")
        with pytest.raises(RateLimited):
            await kms.derive("mine")


async def test_a_rate_limited_connection_is_not_read_until_its_bucket_refills(
    start_server: Any,
) -> None:
    srv = await start_server(limits=Limits(anonymous_burst=2, anonymous_rate=0.001))
    sealed = await handshake(await dial(srv.tcp))
    for i in range(50):  # far over the burst, sent at once
        await sealed.send({"id": i, "op": "health", "args": {}})
    answers = []
    with trio.move_on_after(0.5):  # within the 1 s pause the node reads nothing more
        while True:
            answers.append(await sealed.receive())
    codes = [a.get("err", {}).get("code", "ok") for a in answers]
    # The burst is served, the first request over it refused; the rest wait unread (reading
    # resumes after at most 1 s, and answers come then, not in a flood of refusals now).
    assert codes[:2] == ["ok", "ok"] and set(codes[2:]) == {"rate_limited"}
    assert len(codes) < 50
    await sealed.framed.aclose()


async def test_an_unregistered_wallet_session_is_evictable_like_an_anonymous_one(
    start_server: Any, wallets: Wallets
) -> None:
    srv = await start_server(limits=Limits(max_connections=8, max_unproven_connections=1))
    async with await Client.connect(srv.tcp, signer=LocalSigner(os.urandom(32))) as stranger:
        with pytest.raises(NovaKMSError):
            await stranger.derive("x")  # forbidden: now known as unregistered
        await victim_is_served(srv, wallets.app1)  # evicts the idle stranger for its handshake
        with pytest.raises(Unavailable) as info:
            await stranger.health()
        assert info.value.reason == "evicted"


async def test_a_source_at_its_unproven_cap_evicts_its_own_idle_sessions(
    start_server: Any, wallets: Wallets
) -> None:
    srv = await start_server(limits=Limits(max_unproven_per_source=2))
    idle = [await handshake(await dial(srv.tcp)) for _ in range(2)]  # anonymous, idle
    await victim_is_served(srv, wallets.app1)  # same source: it evicts the older one
    notice = await closing_notice(idle[0])
    assert notice is not None and notice.details["reason"] == "evicted"
    for sealed in idle:
        await sealed.framed.aclose()


# --- 11, 14. handshake refusals: each with its documented code (PROTOCOL.md §4.6) ----------------


def hello(**fields: Any) -> bytes:
    body = cbor.encode({"v": 1, "role": "app", "eph": os.urandom(32)} | fields)
    return len(body).to_bytes(4, "big") + body


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"v": True}, "bad_request"),  # True == 1 in Python: types are checked before values
        ({"v": "1"}, "bad_request"),
        ({"v": 2}, "unsupported_version"),
        ({"role": "admin"}, "bad_request"),
        ({"eph": bytes(31)}, "bad_request"),
        ({"eph": bytes(32)}, "unauthenticated"),  # a low-order key: all-zero shared secret
    ],
    ids=["v-true", "v-text", "v-2", "role", "eph-size", "eph-low-order"],
)
async def test_client_hello_refusals(start_server: Any, fields: dict[str, Any], code: str) -> None:
    srv = await start_server()
    stream = await dial(srv.tcp)
    await stream.send_all(hello(**fields))
    notice = await plain_notice(stream)
    assert notice is not None and notice.code == code
    if code == "unsupported_version":
        assert notice.details["versions"] == [1]
    await stream.aclose()


async def sealed_refusal(srv: Any, role: str, auth: Any) -> NovaKMSError | None:
    framed = FramedStream(await dial(srv.tcp), max_frame=2_097_152)
    hs = ClientHandshake(role=role, eph_private=os.urandom(32))  # type: ignore[arg-type]
    await framed.send_body(hs.hello())
    body = await framed.receive_body()
    assert body is not None
    sealed = SealedStream(framed, hs.receive_challenge(body))
    await sealed.send(auth)
    notice = await closing_notice(sealed)
    await framed.aclose()
    return notice


@pytest.mark.parametrize(
    ("role", "auth", "code"),
    [
        ("peer", {}, "unauthenticated"),  # the peer role cannot be anonymous
        ("app", {"wallet": "0x00", "ts": 1, "sig": bytes(65)}, "bad_request"),
        ("app", {"wallet": "0x" + "11" * 20, "ts": True, "sig": bytes(65)}, "bad_request"),
        ("app", {"wallet": "0x" + "11" * 20}, "bad_request"),
        ("app", {"wallet": "0x" + "11" * 20, "ts": 1, "sig": bytes(65)}, "unauthenticated"),
    ],
    ids=["anonymous-peer", "bad-wallet", "ts-bool", "missing-keys", "stale-ts"],
)
async def test_client_auth_refusals(start_server: Any, role: str, auth: Any, code: str) -> None:
    srv = await start_server()
    notice = await sealed_refusal(srv, role, auth)
    assert notice is not None and notice.code == code


# --- the decode budget follows authorization at once --------------------------------------------


class GatedPeers:
    """Wraps the static registry: authorize_peer waits on a gate (a slow chain lookup)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.gate = trio.Event()
        self.name = inner.name

    async def authorize_app(self, wallet: str) -> Any:
        return await self.inner.authorize_app(wallet)

    async def authorize_peer(self, wallet: str) -> Any:
        await self.gate.wait()
        return await self.inner.authorize_peer(wallet)

    def describe(self) -> dict[str, object]:
        return {}


async def test_the_request_after_a_peers_first_authorization_gets_the_peer_budget(
    start_server: Any, wallets: Wallets
) -> None:
    # app2's instance stands in for a KMS node: its app is the KMS app and it is an operator.
    srv = await start_server(registry_changes={"kms_app_id": 2, "operators": [wallets.app2.wallet]})
    srv.node.registry = gated = GatedPeers(srv.node.registry)
    async with await Client.connect(srv.tcp, signer=wallets.app2, role="peer") as peer:
        proof = cluster_proof(
            master_secret=MASTER_SECRET, transcript_hash=peer.transcript_hash, direction="c2s"
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer.call, "sync.hello", {"proof": proof})
            # The node is now reading the next request, with the budget of a wallet that has
            # not been authorized yet, while the hello's authorization is still pending.
            await trio.testing.wait_all_tasks_blocked()
            gated.gate.set()
        # 5000 items: over the 1024 of an unauthorized wallet, so decoded only because the
        # budget switched when the hello was authorized; then refused as arguments.
        with pytest.raises(BadRequest):
            await peer.call("sync.digests", {"junk": list(range(5000))})
        assert (await peer.call("sync.digests", {}))["apps"] == []
