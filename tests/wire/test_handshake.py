"""The handshake and channel against protocol/vectors/handshake.json; every way they fail closed."""

from __future__ import annotations

import random
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given
from hypothesis import strategies as st

from novakms.crypto.eth import sign_text
from novakms.crypto.kdf import derive_app_key
from novakms.crypto.signer import LocalSigner
from novakms.errors import (
    ChannelError,
    HandshakeError,
    InvalidSignature,
    LocalProtocolError,
    NovaKMSError,
    ProtocolError,
    RateLimited,
    Unauthenticated,
    Unavailable,
    UnsupportedVersion,
)
from novakms.wire import cbor
from novakms.wire.channel import SecureChannel
from novakms.wire.framing import FrameDecoder, encode_frame
from novakms.wire.handshake import (
    CLIENT_TRANSITIONS,
    SERVER_TRANSITIONS,
    ClientHandshake,
    ClientState,
    ServerHandshake,
    ServerState,
    session_keys,
    transcript_hash,
)
from novakms.wire.messages import (
    close_notice,
    error_response,
    parse_close_notice,
    parse_request,
    parse_response,
)
from novakms.wire.proxy_header import ProxyHeader, encode_v2, parse_v2
from tests.harness.registry import load_vectors

V: dict[str, Any] = load_vectors("handshake.json")


def h(name: str, source: dict[str, Any] | None = None) -> bytes:
    return bytes.fromhex((source or V)[name])


def body_of(frame_hex: str) -> bytes:
    frame = bytes.fromhex(frame_hex)
    assert int.from_bytes(frame[:4], "big") == len(frame) - 4
    return frame[4:]


def run_to_challenge(
    role: str = "app", expect: str | None = None
) -> tuple[ClientHandshake, ServerHandshake, SecureChannel, SecureChannel]:
    client = ClientHandshake(role=role, eph_private=h("client_eph_private"), expect_wallet=expect)  # type: ignore[arg-type]
    server = ServerHandshake(
        wallet=V["server_wallet"], eph_private=h("server_eph_private"), nonce=h("server_nonce")
    )
    text = server.receive_hello(client.hello())
    body, server_channel = server.challenge(
        LocalSigner(h("server_wallet_key")).sign_text_sync(text)
    )
    client_channel = client.receive_challenge(body)
    return client, server, client_channel, server_channel


def test_vectors_app_role_full_exchange() -> None:
    client = ClientHandshake(role="app", eph_private=h("client_eph_private"))
    hello = client.hello()
    assert hello == h("client_hello_body")
    assert encode_frame(hello) == h("client_hello_frame")

    server = ServerHandshake(
        wallet=V["server_wallet"], eph_private=h("server_eph_private"), nonce=h("server_nonce")
    )
    text = server.receive_hello(hello)
    assert text == V["server_text"]
    assert server.th == h("transcript_hash")
    sig = LocalSigner(h("server_wallet_key")).sign_text_sync(text)
    assert sig == h("server_sig")
    body, server_channel = server.challenge(sig)
    assert body == h("challenge_body")
    assert encode_frame(body) == h("challenge_frame")

    client_channel = client.receive_challenge(body)
    assert client.th == h("transcript_hash")
    assert client.server_wallet == V["server_wallet"]
    assert session_keys(
        own_eph_private=h("client_eph_private"),
        other_eph_public=h("server_eph_public"),
        th=client.th,
    ) == (
        h("k_c2s"),
        h("k_s2c"),
    )

    auth_text = client.auth_text(V["ts"])
    assert auth_text == V["client_text"]
    client_sig = sign_text(private_key=h("client_wallet_key"), text=auth_text)
    assert client_sig == h("client_sig")
    auth = client.auth_message(wallet=V["client_wallet"], ts=V["ts"], sig=client_sig)
    assert cbor.encode(auth) == h("client_auth_plaintext")
    auth_body = client_channel.seal(auth)
    assert encode_frame(auth_body) == h("client_auth_frame")

    opened = server_channel.open(auth_body)
    assert server.receive_auth(opened, now=V["ts"] + 5, window=120) == V["client_wallet"]

    ready = server.ready(wallet=V["client_wallet"], max_frame=2097152, max_inflight=32)
    assert cbor.encode(ready) == h("ready_plaintext")
    ready_body = server_channel.seal(ready)
    assert encode_frame(ready_body) == h("ready_frame")
    info = client.receive_ready(client_channel.open(ready_body))
    assert (info.wallet, info.max_frame, info.max_inflight) == (V["client_wallet"], 2097152, 32)

    request = cbor.decode(h("request_plaintext"))
    request_body = client_channel.seal(request)
    assert encode_frame(request_body) == h("request_frame")
    parsed = parse_request(server_channel.open(request_body))
    assert (parsed.id, parsed.op, dict(parsed.args)) == (1, "derive", {"path": "app/key"})

    response = cbor.decode(h("response_plaintext"))
    assert response["ok"]["key"] == derive_app_key(
        master_secret=bytes(range(32)), app_id=1, path="app/key"
    )
    assert encode_frame(server_channel.seal(response)) == h("response_frame")


def test_vectors_anonymous_auth() -> None:
    client, server, client_channel, server_channel = run_to_challenge()
    auth = client.auth_message(wallet=None)
    assert cbor.encode(auth) == h("anonymous_auth_plaintext")
    body = client_channel.seal(auth)
    assert encode_frame(body) == h("anonymous_auth_frame")
    assert server.receive_auth(server_channel.open(body), now=0, window=120) is None


def test_vectors_peer_role() -> None:
    peer = V["peer"]
    client, server, _, _ = run_to_challenge(role="peer")
    assert client.hello_body == h("client_hello_body", peer)
    assert client.th == h("transcript_hash", peer)
    assert client.auth_text(peer["ts"]) == peer["client_text"]
    assert peer["client_text"].startswith("NovaKMS:Auth:")
    assert sign_text(private_key=h("client_wallet_key"), text=peer["client_text"]) == h(
        "client_sig", peer
    )


def test_vectors_guardian_role() -> None:
    guardian = V["guardian"]
    client, server, _, _ = run_to_challenge(role="guardian")
    assert client.hello_body == h("client_hello_body", guardian)
    assert client.th == h("transcript_hash", guardian)
    assert client.auth_text(V["ts"]) == guardian["client_text"]
    assert guardian["client_text"].startswith("NovaKMS:GuardianAuth:")
    assert sign_text(private_key=h("client_wallet_key"), text=guardian["client_text"]) == h(
        "client_sig", guardian
    )


def test_a_guardian_cannot_be_anonymous() -> None:
    client, server, client_channel, server_channel = run_to_challenge(role="guardian")
    with pytest.raises(HandshakeError):
        server.receive_auth(client.auth_message(wallet=None), now=0, window=120)


def test_negative_server_signed_by_another_key() -> None:
    case = next(c for c in V["negative"] if c["name"] == "server_sig_wrong_signer")
    client = ClientHandshake(role="app", eph_private=h("client_eph_private"))
    client.hello()
    with pytest.raises(HandshakeError):
        client.receive_challenge(bytes.fromhex(case["challenge_body"]))


def test_negative_client_signature_over_other_timestamp() -> None:
    case = next(c for c in V["negative"] if c["name"] == "client_sig_wrong_ts")
    client, server, client_channel, server_channel = run_to_challenge()
    body = client_channel.seal(cbor.decode(bytes.fromhex(case["client_auth_plaintext"])))
    with pytest.raises(HandshakeError):
        server.receive_auth(server_channel.open(body), now=case["ts"], window=120)


@pytest.mark.parametrize(
    "name", ["client_auth_bit_flipped", "request_counter_gap", "request_replay"]
)
def test_negative_sealed_frames_fail_closed(name: str) -> None:
    case = next(c for c in V["negative"] if c["name"] == name)
    channel = SecureChannel(send_key=bytes(32), recv_key=bytes.fromhex(case["key"]))
    genuine = [V["client_auth_frame"], V["request_frame"]]
    for frame in case.get("preceding_frames", genuine[: case["expected_counter"]]):
        channel.open(body_of(frame))
    with pytest.raises(ChannelError):
        channel.open(body_of(case["frame"]))
    # Fail closed: even the genuine next frame is refused afterwards.
    with pytest.raises(ChannelError):
        channel.open(body_of(genuine[min(case["expected_counter"], 1)]))


def test_negative_low_order_client_key() -> None:
    case = next(c for c in V["negative"] if c["name"] == "low_order_client_eph")
    server = ServerHandshake(
        wallet=V["server_wallet"], eph_private=h("server_eph_private"), nonce=h("server_nonce")
    )
    text = server.receive_hello(bytes.fromhex(case["client_hello_body"]))
    with pytest.raises(HandshakeError):
        server.challenge(LocalSigner(h("server_wallet_key")).sign_text_sync(text))


def test_wrong_expected_server_wallet_is_refused() -> None:
    with pytest.raises(HandshakeError, match="not the expected"):
        run_to_challenge(expect="0x" + "11" * 20)
    # and the right one passes
    client, *_ = run_to_challenge(expect=V["server_wallet"].upper().replace("0X", "0x"))
    assert client.server_wallet == V["server_wallet"]


def test_challenge_with_tampered_fields_is_refused() -> None:
    challenge = cbor.decode(h("challenge_body"))
    for field, value in (("nonce", bytes(32)), ("eph", h("client_eph_public")), ("sig", bytes(65))):
        forged = {**challenge, field: value}
        fresh = ClientHandshake(role="app", eph_private=h("client_eph_private"))
        fresh.hello()
        with pytest.raises((HandshakeError, InvalidSignature)):
            fresh.receive_challenge(cbor.encode(forged))


def test_stale_and_future_timestamps_are_refused() -> None:
    for offset in (-121, 121, -10_000):
        client, server, client_channel, server_channel = run_to_challenge()
        ts = V["ts"] + offset
        sig = sign_text(private_key=h("client_wallet_key"), text=client.auth_text(ts))
        body = client_channel.seal(client.auth_message(wallet=V["client_wallet"], ts=ts, sig=sig))
        with pytest.raises(HandshakeError, match="window"):
            server.receive_auth(server_channel.open(body), now=V["ts"], window=120)
    # the edges of the window are accepted
    for offset in (-120, 120):
        client, server, client_channel, server_channel = run_to_challenge()
        ts = V["ts"] + offset
        sig = sign_text(private_key=h("client_wallet_key"), text=client.auth_text(ts))
        body = client_channel.seal(client.auth_message(wallet=V["client_wallet"], ts=ts, sig=sig))
        assert (
            server.receive_auth(server_channel.open(body), now=V["ts"], window=120)
            == V["client_wallet"]
        )


def test_signature_by_another_wallet_than_claimed_is_refused() -> None:
    client, server, client_channel, server_channel = run_to_challenge()
    sig = sign_text(private_key=h("server_wallet_key"), text=client.auth_text(V["ts"]))
    body = client_channel.seal(client.auth_message(wallet=V["client_wallet"], ts=V["ts"], sig=sig))
    with pytest.raises(HandshakeError):
        server.receive_auth(server_channel.open(body), now=V["ts"], window=120)


def test_signature_from_another_session_is_refused() -> None:
    """A PoP signature replayed into a session with another server nonce does not verify."""
    client, server, client_channel, server_channel = run_to_challenge()
    sig = sign_text(private_key=h("client_wallet_key"), text=client.auth_text(V["ts"]))
    other_server = ServerHandshake(
        wallet=V["server_wallet"], eph_private=h("server_eph_private"), nonce=bytes(32)
    )
    other_client = ClientHandshake(role="app", eph_private=h("client_eph_private"))
    text = other_server.receive_hello(other_client.hello())
    body, other_channel = other_server.challenge(
        LocalSigner(h("server_wallet_key")).sign_text_sync(text)
    )
    sealed = other_client.receive_challenge(body).seal(
        other_client.auth_message(wallet=V["client_wallet"], ts=V["ts"], sig=sig)
    )
    with pytest.raises(HandshakeError):
        other_server.receive_auth(other_channel.open(sealed), now=V["ts"], window=120)


def test_anonymous_peer_is_refused() -> None:
    client, server, client_channel, server_channel = run_to_challenge(role="peer")
    with pytest.raises(HandshakeError):
        server.receive_auth(server_channel.open(client_channel.seal({})), now=0, window=120)


@pytest.mark.parametrize(
    "hello",
    [
        {"v": 1, "role": "app"},
        {"v": 1, "role": "admin", "eph": bytes(32)},
        {"v": 1, "role": "app", "eph": bytes(31)},
        {"v": 1, "role": "app", "eph": bytes(32), "extra": 1},
        [1, "app"],
        "hello",
    ],
)
def test_malformed_hello_is_a_protocol_error(hello: Any) -> None:
    server = ServerHandshake(
        wallet=V["server_wallet"], eph_private=h("server_eph_private"), nonce=h("server_nonce")
    )
    with pytest.raises(ProtocolError):
        server.receive_hello(cbor.encode(hello))


def test_unknown_version_is_unsupported() -> None:
    server = ServerHandshake(
        wallet=V["server_wallet"], eph_private=h("server_eph_private"), nonce=h("server_nonce")
    )
    with pytest.raises(UnsupportedVersion) as info:
        server.receive_hello(cbor.encode({"v": 2, "role": "app", "eph": bytes(32)}))
    assert info.value.to_wire()["versions"] == [1]


def test_client_reports_the_servers_close_notice() -> None:
    client = ClientHandshake(role="app", eph_private=h("client_eph_private"))
    client.hello()
    with pytest.raises(UnsupportedVersion):
        client.receive_challenge(cbor.encode(close_notice(UnsupportedVersion("no", versions=[1]))))
    client, server, client_channel, server_channel = run_to_challenge()
    notice = server_channel.seal(close_notice(Unauthenticated("bad signature")))
    with pytest.raises(Unauthenticated):
        client.receive_ready(client_channel.open(notice))


def test_out_of_order_steps_are_local_misuse_not_peer_faults() -> None:
    server = ServerHandshake(
        wallet=V["server_wallet"], eph_private=h("server_eph_private"), nonce=h("server_nonce")
    )
    with pytest.raises(LocalProtocolError):
        server.challenge(bytes(65))
    with pytest.raises(LocalProtocolError):
        server.receive_auth({}, now=0, window=1)
    client = ClientHandshake(role="app", eph_private=h("client_eph_private"))
    with pytest.raises(LocalProtocolError):
        client.receive_challenge(h("challenge_body"))
    with pytest.raises(LocalProtocolError):
        client.auth_text(0)
    assert not issubclass(LocalProtocolError, ProtocolError)
    assert server.state is ServerState.IDLE and client.state is ClientState.IDLE


# -- every state x every method ---------------------------------------------------------------

_CLIENT_PATH = {  # the steps that bring a fresh client into each state
    ClientState.IDLE: [],
    ClientState.HELLO_SENT: ["hello"],
    ClientState.CHALLENGED: ["hello", "receive_challenge"],
    ClientState.READY: ["hello", "receive_challenge", "receive_ready"],
    ClientState.FAILED: ["hello", "bad_challenge"],
}
_SERVER_PATH = {
    ServerState.IDLE: [],
    ServerState.HELLO_RECEIVED: ["receive_hello"],
    ServerState.CHALLENGE_SENT: ["receive_hello", "challenge"],
    ServerState.AUTHENTICATED: ["receive_hello", "challenge", "receive_auth"],
    ServerState.FAILED: ["bad_hello"],
}


def _ready_item() -> dict[str, Any]:
    return ServerHandshake.ready(wallet=None, max_frame=1024, max_inflight=4)


def _client_step(client: ClientHandshake, method: str) -> object:
    if method == "hello":
        return client.hello()
    if method == "receive_challenge":
        return client.receive_challenge(h("challenge_body"))
    if method == "bad_challenge":
        with pytest.raises(ProtocolError):
            client.receive_challenge(cbor.encode("not a challenge"))
        return None
    if method == "auth_text":
        return client.auth_text(V["ts"])
    assert method == "receive_ready"
    return client.receive_ready(_ready_item())


def _server_step(server: ServerHandshake, method: str) -> object:
    if method == "receive_hello":
        return server.receive_hello(h("client_hello_body"))
    if method == "bad_hello":
        with pytest.raises(ProtocolError):
            server.receive_hello(cbor.encode("not a hello"))
        return None
    if method == "challenge":
        return server.challenge(h("server_sig"))
    assert method == "receive_auth"
    return server.receive_auth({}, now=0, window=1)


@pytest.mark.parametrize("state", list(ClientState))
@pytest.mark.parametrize("method", ["hello", "receive_challenge", "auth_text", "receive_ready"])
def test_every_client_state_and_method(state: ClientState, method: str) -> None:
    client = ClientHandshake(role="app", eph_private=h("client_eph_private"))
    for step in _CLIENT_PATH[state]:
        _client_step(client, step)
    assert client.state is state
    target = CLIENT_TRANSITIONS[state].get(method)
    if target is None:
        with pytest.raises(LocalProtocolError):
            _client_step(client, method)
        assert client.state is state
    else:
        _client_step(client, method)
        assert client.state is target


@pytest.mark.parametrize("state", list(ServerState))
@pytest.mark.parametrize("method", ["receive_hello", "challenge", "receive_auth"])
def test_every_server_state_and_method(state: ServerState, method: str) -> None:
    server = ServerHandshake(
        wallet=V["server_wallet"], eph_private=h("server_eph_private"), nonce=h("server_nonce")
    )
    for step in _SERVER_PATH[state]:
        _server_step(server, step)
    assert server.state is state
    target = SERVER_TRANSITIONS[state].get(method)
    if target is None:
        with pytest.raises(LocalProtocolError):
            _server_step(server, method)
        assert server.state is state
    else:
        _server_step(server, method)
        assert server.state is target


def test_a_peer_fault_fails_the_machine_for_good() -> None:
    client, server, client_channel, server_channel = run_to_challenge()
    with pytest.raises(ProtocolError):
        client.receive_ready({"wallet": None})
    assert client.state is ClientState.FAILED
    with pytest.raises(LocalProtocolError):
        client.receive_ready(_ready_item())
    with pytest.raises(HandshakeError):
        server.receive_auth(
            {"wallet": V["client_wallet"], "ts": 0, "sig": bytes(65)}, now=10**6, window=1
        )
    assert server.state is ServerState.FAILED
    with pytest.raises(LocalProtocolError):
        server.receive_auth({}, now=0, window=1)


def test_a_bad_signature_argument_changes_nothing() -> None:
    server = ServerHandshake(
        wallet=V["server_wallet"], eph_private=h("server_eph_private"), nonce=h("server_nonce")
    )
    server.receive_hello(h("client_hello_body"))
    with pytest.raises(ValueError, match="65 bytes"):
        server.challenge(b"short")
    assert server.state is ServerState.HELLO_RECEIVED


def test_session_keys_are_rfc5869_hkdf_sha256_of_the_x25519_secret() -> None:
    # session_keys computes HKDF with one shared extract step; check it against a library HKDF.
    rng = random.Random(15)
    for _ in range(20):
        own, other = X25519PrivateKey.generate(), X25519PrivateKey.generate()
        th = rng.randbytes(32)
        shared = own.exchange(other.public_key())

        def hkdf(info: bytes, shared: bytes = shared, th: bytes = th) -> bytes:
            return HKDF(algorithm=hashes.SHA256(), length=32, salt=th, info=info).derive(shared)

        assert session_keys(
            own_eph_private=own.private_bytes_raw(),
            other_eph_public=other.public_key().public_bytes_raw(),
            th=th,
        ) == (hkdf(b"novakms/1 key c2s"), hkdf(b"novakms/1 key s2c"))


def test_transcript_hash_binds_every_input() -> None:
    base = dict(
        hello_body=h("client_hello_body"),
        server_eph=h("server_eph_public"),
        nonce=h("server_nonce"),
        server_wallet=V["server_wallet"],
    )
    reference = transcript_hash(**base)
    assert reference == h("transcript_hash")
    variants = [
        {**base, "hello_body": h("client_hello_body") + b"\x00"},
        {**base, "server_eph": bytes(32)},
        {**base, "nonce": bytes(32)},
        {**base, "server_wallet": "0x" + "00" * 20},
    ]
    assert len({transcript_hash(**v) for v in variants} | {reference}) == 5


def test_channel_round_trip_and_counters() -> None:
    a = SecureChannel(send_key=b"\x01" * 32, recv_key=b"\x02" * 32)
    b = SecureChannel(send_key=b"\x02" * 32, recv_key=b"\x01" * 32)
    for i in range(5):
        assert b.open(a.seal({"n": i})) == {"n": i}
    assert a.counters == (5, 0) and b.counters == (0, 5)
    with pytest.raises(ChannelError):
        b.open(cbor.encode("not bytes"))
    with pytest.raises(ChannelError):  # broken for good
        b.open(a.seal({"n": 5}))


def test_sealed_frame_head_of_any_width_opens() -> None:
    a = SecureChannel(send_key=b"\x01" * 32, recv_key=b"\x02" * 32)
    b = SecureChannel(send_key=b"\x02" * 32, recv_key=b"\x01" * 32)
    for i, width in enumerate((2, 4, 8)):  # non-minimal lengths are valid CBOR (§3)
        sealed = cbor.decode(a.seal({"n": i}))
        ai = {2: 25, 4: 26, 8: 27}[width]
        assert b.open(bytes([0x40 | ai]) + len(sealed).to_bytes(width, "big") + sealed) == {"n": i}


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\x00",
        cbor.encode([b"\x00" * 32]),
        cbor.encode("x" * 32),
        b"\x5f" + cbor.encode(b"\x00" * 32) + b"\xff",  # indefinite length
        b"\x58\x20" + b"\x00" * 31,  # truncated
        cbor.encode(b"\x00" * 32) + b"\x00",  # trailing byte
        cbor.encode(b"\x00" * 15),  # shorter than a tag
    ],
)
def test_sealed_frame_that_is_not_one_byte_string_breaks_the_channel(frame: bytes) -> None:
    a = SecureChannel(send_key=b"\x01" * 32, recv_key=b"\x02" * 32)
    b = SecureChannel(send_key=b"\x02" * 32, recv_key=b"\x01" * 32)
    with pytest.raises(ChannelError, match="not a CBOR byte string"):
        b.open(frame)
    with pytest.raises(ChannelError, match="closed"):
        b.open(a.seal({"n": 0}))


def test_reordered_frames_fail_closed() -> None:
    a = SecureChannel(send_key=b"\x01" * 32, recv_key=b"\x02" * 32)
    b = SecureChannel(send_key=b"\x02" * 32, recv_key=b"\x01" * 32)
    first, second = a.seal({"n": 1}), a.seal({"n": 2})
    with pytest.raises(ChannelError):
        b.open(second)
    with pytest.raises(ChannelError):
        b.open(first)


@given(st.binary(max_size=300))
def test_random_input_to_every_step_raises_only_protocol_errors(data: bytes) -> None:
    server = ServerHandshake(
        wallet=V["server_wallet"], eph_private=h("server_eph_private"), nonce=h("server_nonce")
    )
    with pytest.raises(NovaKMSError):
        server.receive_hello(data)
    client = ClientHandshake(role="app", eph_private=h("client_eph_private"))
    client.hello()
    with pytest.raises(NovaKMSError):
        client.receive_challenge(data)
    client, server, client_channel, server_channel = run_to_challenge()
    with pytest.raises(NovaKMSError):
        server_channel.open(data)
    # and well-formed CBOR of the wrong shape inside a valid seal
    try:
        item = cbor.decode(data)
    except NovaKMSError:
        return
    if item != {}:  # the empty map is the valid anonymous ClientAuth
        with pytest.raises(NovaKMSError):
            server.receive_auth(server_channel.open(client_channel.seal(item)), now=0, window=1)
    with pytest.raises(NovaKMSError):
        client.receive_ready(client_channel.open(server_channel.seal(item)))


def test_a_message_too_large_for_a_frame_is_refused_before_sealing() -> None:
    from novakms.errors import TooLarge
    from novakms.wire.channel import sealed_body_size

    a = SecureChannel(send_key=b"\x01" * 32, recv_key=b"\x02" * 32)
    b = SecureChannel(send_key=b"\x02" * 32, recv_key=b"\x01" * 32)
    big = {"blob": bytes(5000)}
    body = a.seal(big)
    assert len(body) == sealed_body_size(len(cbor.encode(big)))
    assert b.open(body) == big
    with pytest.raises(TooLarge):
        a.seal(big, max_body=4096)
    # The refused message consumed no counter value: the peer still opens what follows.
    assert b.open(a.seal({"n": 1}, max_body=4096)) == {"n": 1}


def test_vectors_error_response_close_notices_and_anonymous_ready() -> None:
    server = SecureChannel(send_key=h("k_s2c"), recv_key=h("k_c2s"))
    client = SecureChannel(send_key=h("k_c2s"), recv_key=h("k_s2c"))
    ready = ServerHandshake.ready(wallet=None, max_frame=4096, max_inflight=32)
    assert cbor.encode(ready) == h("anonymous_ready_plaintext")
    assert encode_frame(server.seal(ready)) == h("anonymous_ready_frame")
    server.seal({})  # counter 1: the response of the main exchange
    error = error_response(2, RateLimited("too many requests", retry_after_ms=250))
    assert cbor.encode(error) == h("error_response_plaintext")
    assert encode_frame(server.seal(error)) == h("error_response_frame")
    notice = close_notice(Unavailable("closing an idle connection", reason="idle_timeout"))
    assert cbor.encode(notice) == h("close_notice_plaintext")
    assert encode_frame(server.seal(notice)) == h("close_notice_frame")
    # The client side parses them back.
    frames = [h(f"{n}_frame") for n in ("anonymous_ready", "response", "error_response")]
    decoder = FrameDecoder()
    for data in frames:
        decoder.feed(data)
    client.open(decoder.next_body() or b"")
    client.open(decoder.next_body() or b"")
    parsed = parse_response(client.open(decoder.next_body() or b""))
    assert isinstance(parsed.error, RateLimited) and parsed.error.details["retry_after_ms"] == 250
    decoder.feed(h("close_notice_frame"))
    closed = parse_close_notice(client.open(decoder.next_body() or b""))
    assert isinstance(closed, Unavailable) and closed.reason == "idle_timeout"
    plain = FrameDecoder(max_frame=1024)
    plain.feed(h("plain_close_notice_frame"))
    refused = parse_close_notice(cbor.decode(plain.next_body() or b""))
    assert refused is not None and refused.code == "too_large"


@pytest.mark.parametrize("name", ["ipv4", "ipv6", "local"])
def test_vectors_proxy_v2_headers(name: str) -> None:
    vector = V["proxy_v2"][name]
    header, rest = parse_v2(bytes.fromhex(vector["header"])) or (None, b"")
    assert header == ProxyHeader(source=vector["source"], source_port=vector["source_port"])
    assert rest == b""
    if vector["source"] is None:
        assert encode_v2(None) == bytes.fromhex(vector["header"])
