"""The handshake of PROTOCOL.md §4 as two pure state machines (client and server).

Theory of operation (SIGMA, as in TLS 1.3 and Noise with identity signatures):

* ClientHello carries the role and a fresh X25519 key. The server answers with its own fresh
  key, a fresh 32-byte nonce, its wallet and an EIP-191 signature over the transcript hash
  ``TH`` = SHA-256(label ‖ len(H) ‖ H ‖ E_s ‖ N_s ‖ W_s). ``H`` is the ClientHello body exactly as
  sent, so any re-encoding by an attacker changes ``TH``.
* Both sides derive one key per direction from the X25519 secret with ``TH`` as HKDF salt:
  forward secrecy, and keys bound to this transcript only.
* The client's optional Proof-of-Possession signature names ``TH`` and the server wallet, so it
  is useless in any other session or towards any other server. It travels sealed (first c2s
  frame), which also proves the client holds the session key; the server's sealed Ready proves
  the same the other way.

Neither machine does I/O, reads a clock or draws randomness: ephemeral keys, the nonce and
``now`` are arguments; signing is done by the caller (the text to sign is returned), because
signers may be remote (Odyn).
"""

from __future__ import annotations

import enum
import functools
import hashlib
import hmac
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from novakms.crypto.eth import normalize_wallet, recover_wallet, wallet_to_bytes
from novakms.errors import (
    HandshakeError,
    LocalProtocolError,
    NovaKMSError,
    ProtocolError,
    UnsupportedVersion,
)
from novakms.wire import cbor
from novakms.wire.channel import SecureChannel
from novakms.wire.messages import parse_close_notice

__all__ = [
    "CLIENT_TRANSITIONS",
    "HANDSHAKE_MAX_ITEMS",
    "PROTOCOL_VERSION",
    "SERVER_TRANSITIONS",
    "ClientHandshake",
    "ClientState",
    "Ready",
    "Role",
    "ServerHandshake",
    "ServerState",
    "client_auth_text",
    "server_text",
    "session_keys",
    "transcript_hash",
]

PROTOCOL_VERSION = 1
SUPPORTED_VERSIONS = (1,)
#: Decode budget of a handshake message (ClientHello, ClientAuth: a map of at most 3 pairs).
HANDSHAKE_MAX_ITEMS = 8
Role = Literal["app", "peer", "guardian"]
ROLES: tuple[Role, ...] = ("app", "peer", "guardian")
#: The PoP text prefix of each role (PROTOCOL.md §4.4).
_AUTH_PREFIX: dict[Role, str] = {
    "app": "NovaKMS:AppAuth",
    "peer": "NovaKMS:Auth",
    "guardian": "NovaKMS:GuardianAuth",
}

_TRANSCRIPT_LABEL = b"novakms/1 transcript"
_KEY_C2S = b"novakms/1 key c2s"
_KEY_S2C = b"novakms/1 key s2c"
_EPH_SIZE = 32
_NONCE_SIZE = 32
_SIG_SIZE = 65
_ZERO_SECRET = bytes(32)


_cached_canonical = functools.lru_cache(maxsize=64)(normalize_wallet)
_cached_wallet_bytes = functools.lru_cache(maxsize=64)(wallet_to_bytes)


def _canonical_wallet(wallet: str) -> str:
    """:func:`normalize_wallet`, remembered for the few wallets every handshake names again (a
    node's own): parsed once. Errors are never remembered; a non-text value is not looked up."""
    return _cached_canonical(wallet) if type(wallet) is str else normalize_wallet(wallet)


def _wallet_bytes(wallet: str) -> bytes:
    """:func:`wallet_to_bytes`, remembered like :func:`_canonical_wallet`."""
    return _cached_wallet_bytes(wallet) if type(wallet) is str else wallet_to_bytes(wallet)


def transcript_hash(
    *, hello_body: bytes, server_eph: bytes, nonce: bytes, server_wallet: str
) -> bytes:
    """TH of PROTOCOL.md §4.2."""
    return hashlib.sha256(
        b"".join(
            (
                _TRANSCRIPT_LABEL,
                struct.pack(">I", len(hello_body)),
                hello_body,
                server_eph,
                nonce,
                _wallet_bytes(server_wallet),
            )
        )
    ).digest()


def server_text(*, th: bytes, server_wallet: str) -> str:
    """The text the server signs (PROTOCOL.md §4.2)."""
    return f"NovaKMS:Response:{th.hex()}:{server_wallet}"


def client_auth_text(*, role: Role, th: bytes, server_wallet: str, ts: int) -> str:
    """The text a client signs for Proof-of-Possession (PROTOCOL.md §4.4)."""
    return f"{_AUTH_PREFIX[role]}:{th.hex()}:{server_wallet}:{ts}"


def session_keys(
    *, own_eph_private: bytes, other_eph_public: bytes, th: bytes
) -> tuple[bytes, bytes]:
    """(k_c2s, k_s2c) of PROTOCOL.md §4.3.

    Raises:
        HandshakeError: the other key is malformed or of low order (all-zero shared secret).
    """
    try:
        private = X25519PrivateKey.from_private_bytes(own_eph_private)
    except ValueError:
        raise HandshakeError("invalid ephemeral key") from None
    return _session_keys(private, other_eph_public, th)


def _session_keys(
    private: X25519PrivateKey, other_eph_public: bytes, th: bytes
) -> tuple[bytes, bytes]:
    """:func:`session_keys` with the own key already loaded (each load costs a scalar
    multiplication: a handshake loads its ephemeral key once, for its public key and this)."""
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(other_eph_public))
    except ValueError:
        raise HandshakeError("invalid ephemeral key") from None
    if shared == _ZERO_SECRET:
        raise HandshakeError("invalid ephemeral key")
    # HKDF-SHA256 (RFC 5869) with L = 32, one HMAC block per key: PRK = HMAC(TH, shared),
    # k = HMAC(PRK, info || 0x01). The extract step is shared by both directions.
    prk = hmac.digest(th, shared, "sha256")
    return hmac.digest(prk, _KEY_C2S + b"\x01", "sha256"), hmac.digest(
        prk, _KEY_S2C + b"\x01", "sha256"
    )


def _load_ephemeral(eph_private: bytes) -> tuple[X25519PrivateKey, bytes]:
    """The ephemeral key and its public key."""
    if len(eph_private) != _EPH_SIZE:
        raise ValueError("ephemeral private key must be 32 bytes")
    private = X25519PrivateKey.from_private_bytes(eph_private)
    return private, private.public_key().public_bytes_raw()


def _is_uint(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _exact_keys(item: object, keys: set[str], what: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise ProtocolError(f"{what} must be a map")
    if set(item) != keys:
        raise ProtocolError(f"{what} must have exactly the keys {sorted(keys)}")
    return item


def _bytes_of(item: dict[str, Any], key: str, size: int, what: str) -> bytes:
    value = item[key]
    if not isinstance(value, bytes) or len(value) != size:
        raise ProtocolError(f"{what}.{key} must be {size} bytes")
    return value


def _raise_if_close(item: object) -> None:
    error = parse_close_notice(item)
    if error is not None:
        raise error


# --------------------------------------------------------------------------------------------
# The state machines
#
# Theory of operation
# ===================
#
# Each side is one small automaton, written out as a table below: for every state, the methods
# that may be called in it and the state each one leads to. Everything else the old code kept
# in Optionals and flags (is there a hello yet, was the challenge sent) is the state.
#
# Two kinds of failure, never confused:
#
# * a *peer fault* -- a malformed message, a bad signature, a stale timestamp, a close notice
#   from the other side -- raises ProtocolError / HandshakeError / the peer's own error exactly
#   as PROTOCOL.md §4 prescribes, and moves the machine to FAILED: a handshake that failed once
#   never continues (the caller closes the connection);
# * *local misuse* -- a method called in a state whose row does not list it (out of order, a
#   second time, after FAILED or after the end) -- raises LocalProtocolError (a UsageError,
#   never sent) and leaves the state exactly as it was: it is a bug in this process, and the
#   peer has done nothing wrong.
#
# The methods that take no part in the exchange (``auth_message``, ``ready``: static builders
# of maps) are not in the tables. ``hello()`` may be asked for again while the machine waits
# for the challenge: it returns the same bytes (the transcript is bound to them), never a new
# hello.
#
# Client:  IDLE --hello--> HELLO_SENT --receive_challenge--> CHALLENGED --receive_ready--> READY
#          (hello again in HELLO_SENT; auth_text any number of times in CHALLENGED)
# Server:  IDLE --receive_hello--> HELLO_RECEIVED --challenge--> CHALLENGE_SENT
#               --receive_auth--> AUTHENTICATED
# Both:    any peer fault in a step --> FAILED (no method allowed)


class ClientState(enum.Enum):
    """Where a :class:`ClientHandshake` is."""

    IDLE = "idle"
    HELLO_SENT = "hello_sent"
    CHALLENGED = "challenged"
    READY = "ready"
    FAILED = "failed"


class ServerState(enum.Enum):
    """Where a :class:`ServerHandshake` is."""

    IDLE = "idle"
    HELLO_RECEIVED = "hello_received"
    CHALLENGE_SENT = "challenge_sent"
    AUTHENTICATED = "authenticated"
    FAILED = "failed"


#: state -> {method allowed in it: the state it leads to on success}.
CLIENT_TRANSITIONS: Mapping[ClientState, Mapping[str, ClientState]] = {
    ClientState.IDLE: {"hello": ClientState.HELLO_SENT},
    ClientState.HELLO_SENT: {
        "hello": ClientState.HELLO_SENT,
        "receive_challenge": ClientState.CHALLENGED,
    },
    ClientState.CHALLENGED: {
        "auth_text": ClientState.CHALLENGED,
        "receive_ready": ClientState.READY,
    },
    ClientState.READY: {},
    ClientState.FAILED: {},
}

#: state -> {method allowed in it: the state it leads to on success}.
SERVER_TRANSITIONS: Mapping[ServerState, Mapping[str, ServerState]] = {
    ServerState.IDLE: {"receive_hello": ServerState.HELLO_RECEIVED},
    ServerState.HELLO_RECEIVED: {"challenge": ServerState.CHALLENGE_SENT},
    ServerState.CHALLENGE_SENT: {"receive_auth": ServerState.AUTHENTICATED},
    ServerState.AUTHENTICATED: {},
    ServerState.FAILED: {},
}


def _next_state(table: Mapping[Any, Mapping[str, Any]], state: enum.Enum, method: str) -> Any:
    """The state ``method`` leads to from ``state``.

    Raises:
        LocalProtocolError: ``method`` is not allowed in ``state`` (nothing changes).
    """
    target = table[state].get(method)
    if target is None:
        raise LocalProtocolError(f"{method}() is not allowed in state {state.name}")
    return target


@dataclass(frozen=True, slots=True)
class Ready:
    """What the server's Ready message told the client."""

    wallet: str | None
    max_frame: int
    max_inflight: int


class ClientHandshake:
    """Client side: ``hello()`` → ``receive_challenge()`` → ``auth_*()`` → ``receive_ready()``.

    The allowed order is :data:`CLIENT_TRANSITIONS`; :attr:`state` says where the machine is.

    Args:
        role: ``"app"``, ``"peer"`` or ``"guardian"``.
        eph_private: a fresh 32-byte X25519 private key (used once).
        expect_wallet: when given, the server must prove exactly this wallet.

    Attributes:
        th: the transcript hash, once the challenge was accepted (else None).
        server_wallet: the wallet the server proved, once the challenge was accepted.
    """

    def __init__(self, *, role: Role, eph_private: bytes, expect_wallet: str | None = None) -> None:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        self.role: Role = role
        self._eph_key, eph_public = _load_ephemeral(eph_private)
        self._expect = normalize_wallet(expect_wallet) if expect_wallet is not None else None
        self._hello = cbor.encode({"v": PROTOCOL_VERSION, "role": role, "eph": eph_public})
        self._state = ClientState.IDLE
        self.th: bytes | None = None
        self.server_wallet: str | None = None

    @property
    def state(self) -> ClientState:
        """Where the handshake is (see :data:`CLIENT_TRANSITIONS`)."""
        return self._state

    @property
    def hello_body(self) -> bytes:
        """The ClientHello body this machine sends (the ``H`` of the transcript); no step."""
        return self._hello

    def hello(self) -> bytes:
        """The ClientHello frame body (the same bytes when asked again before the challenge).

        Raises:
            LocalProtocolError: called after the challenge was received, or after a failure.
        """
        self._state = _next_state(CLIENT_TRANSITIONS, self._state, "hello")
        return self._hello

    def receive_challenge(self, body: bytes) -> SecureChannel:
        """Check the ServerChallenge and derive the channel.

        Raises:
            NovaKMSError: the server sent a close notice (its error is raised as is).
            ProtocolError: malformed challenge.
            HandshakeError: bad server signature, or not the expected wallet.
            LocalProtocolError: no hello was sent yet, or called twice or after a failure.
        """
        target = _next_state(CLIENT_TRANSITIONS, self._state, "receive_challenge")
        try:
            th, wallet, channel = self._check_challenge(body)
        except Exception:
            self._state = ClientState.FAILED
            raise
        self.th, self.server_wallet = th, wallet
        self._state = target
        return channel

    def _check_challenge(self, body: bytes) -> tuple[bytes, str, SecureChannel]:
        item = cbor.decode(body)
        _raise_if_close(item)
        msg = _exact_keys(item, {"v", "eph", "nonce", "wallet", "sig"}, "ServerChallenge")
        if not _is_uint(msg["v"]) or msg["v"] != PROTOCOL_VERSION:
            raise ProtocolError("server answered with another protocol version")
        server_eph = _bytes_of(msg, "eph", _EPH_SIZE, "ServerChallenge")
        nonce = _bytes_of(msg, "nonce", _NONCE_SIZE, "ServerChallenge")
        sig = _bytes_of(msg, "sig", _SIG_SIZE, "ServerChallenge")
        if not isinstance(msg["wallet"], str):
            raise ProtocolError("ServerChallenge.wallet must be text")
        try:
            wallet = normalize_wallet(msg["wallet"])
        except ValueError:
            raise ProtocolError("ServerChallenge.wallet is not a wallet") from None
        if wallet != msg["wallet"]:
            raise ProtocolError("ServerChallenge.wallet must be lowercase")
        th = transcript_hash(
            hello_body=self._hello, server_eph=server_eph, nonce=nonce, server_wallet=wallet
        )
        if recover_wallet(text=server_text(th=th, server_wallet=wallet), signature=sig) != wallet:
            raise HandshakeError("server signature does not match its wallet")
        if self._expect is not None and wallet != self._expect:
            raise HandshakeError(f"server wallet {wallet} is not the expected {self._expect}")
        k_c2s, k_s2c = _session_keys(self._eph_key, server_eph, th)
        return th, wallet, SecureChannel(send_key=k_c2s, recv_key=k_s2c)

    def auth_text(self, ts: int) -> str:
        """The text to sign for Proof-of-Possession at unix time ``ts``.

        Raises:
            LocalProtocolError: no challenge was accepted yet (or the handshake is over).
        """
        self._state = _next_state(CLIENT_TRANSITIONS, self._state, "auth_text")
        assert self.th is not None  # set with the accepted challenge / hello
        assert self.server_wallet is not None
        return client_auth_text(role=self.role, th=self.th, server_wallet=self.server_wallet, ts=ts)

    @staticmethod
    def auth_message(*, wallet: str | None, ts: int = 0, sig: bytes = b"") -> dict[str, Any]:
        """The ClientAuth map: ``{}`` when anonymous, else wallet, ts and signature."""
        if wallet is None:
            return {}
        return {"wallet": normalize_wallet(wallet), "ts": ts, "sig": sig}

    def receive_ready(self, item: object) -> Ready:
        """Check the server's first sealed message (already opened).

        Raises:
            NovaKMSError: the server refused (close notice), e.g. ``unauthenticated``.
            ProtocolError: malformed Ready.
            LocalProtocolError: no challenge was accepted yet, or called twice.
        """
        target = _next_state(CLIENT_TRANSITIONS, self._state, "receive_ready")
        try:
            ready = self._check_ready(item)
        except Exception:
            self._state = ClientState.FAILED
            raise
        self._state = target
        return ready

    @staticmethod
    def _check_ready(item: object) -> Ready:
        _raise_if_close(item)
        msg = _exact_keys(item, {"wallet", "limits"}, "Ready")
        limits = _exact_keys(msg["limits"], {"max_frame", "max_inflight"}, "Ready.limits")
        if not (msg["wallet"] is None or isinstance(msg["wallet"], str)):
            raise ProtocolError("Ready.wallet must be text or null")
        for key in ("max_frame", "max_inflight"):
            if not isinstance(limits[key], int) or isinstance(limits[key], bool) or limits[key] < 1:
                raise ProtocolError(f"Ready.limits.{key} must be a positive integer")
        return Ready(
            wallet=msg["wallet"], max_frame=limits["max_frame"], max_inflight=limits["max_inflight"]
        )


class ServerHandshake:
    """Server side: ``receive_hello()`` → ``challenge()`` → ``receive_auth()`` → ``ready()``.

    The allowed order is :data:`SERVER_TRANSITIONS`; :attr:`state` says where the machine is.

    Args:
        wallet: the server's wallet (its signer's address).
        eph_private: a fresh 32-byte X25519 private key (used once).
        nonce: a fresh 32-byte random nonce.

    Attributes:
        role: the role the client asked for, once its hello was accepted (else None).
        th: the transcript hash, once the hello was accepted (else None).
    """

    def __init__(self, *, wallet: str, eph_private: bytes, nonce: bytes) -> None:
        if len(nonce) != _NONCE_SIZE:
            raise ValueError("nonce must be 32 bytes")
        self.wallet = _canonical_wallet(wallet)
        self._eph_key, self._eph_public = _load_ephemeral(eph_private)
        self._nonce = nonce
        self._state = ServerState.IDLE
        self._client_eph = b""  # the client's key, from the accepted hello on
        self.role: Role | None = None
        self.th: bytes | None = None

    @property
    def state(self) -> ServerState:
        """Where the handshake is (see :data:`SERVER_TRANSITIONS`)."""
        return self._state

    def receive_hello(self, body: bytes) -> str:
        """Check the ClientHello; return the text the server must sign.

        Raises:
            UnsupportedVersion: a version this server does not speak (send as close notice).
            ProtocolError: anything else wrong with the hello.
            LocalProtocolError: called twice, or after a failure.
        """
        target = _next_state(SERVER_TRANSITIONS, self._state, "receive_hello")
        try:
            role, client_eph = self._check_hello(body)
        except Exception:
            self._state = ServerState.FAILED
            raise
        self.role, self._client_eph = role, client_eph
        self.th = transcript_hash(
            hello_body=body,
            server_eph=self._eph_public,
            nonce=self._nonce,
            server_wallet=self.wallet,
        )
        self._state = target
        return server_text(th=self.th, server_wallet=self.wallet)

    @staticmethod
    def _check_hello(body: bytes) -> tuple[Role, bytes]:
        item = cbor.decode(body, max_items=HANDSHAKE_MAX_ITEMS)
        if isinstance(item, dict) and "v" in item:
            # Types before values: ``True == 1`` in Python, so a bool must not pass as 1.
            if not _is_uint(item["v"]):
                raise ProtocolError("ClientHello.v must be an unsigned integer")
            if item["v"] not in SUPPORTED_VERSIONS:
                raise UnsupportedVersion(
                    f"protocol version {item['v']!r} is not supported",
                    versions=list(SUPPORTED_VERSIONS),
                )
        msg = _exact_keys(item, {"v", "role", "eph"}, "ClientHello")
        if msg["role"] not in ROLES:
            raise ProtocolError("ClientHello.role must be 'app', 'peer' or 'guardian'")
        role: Role = msg["role"]
        return role, _bytes_of(msg, "eph", _EPH_SIZE, "ClientHello")

    def challenge(self, signature: bytes) -> tuple[bytes, SecureChannel]:
        """The ServerChallenge body and the server's channel end.

        Raises:
            HandshakeError: the client's ephemeral key is unusable.
            ValueError: ``signature`` is not 65 bytes (nothing changes).
            LocalProtocolError: no hello was accepted yet, or called twice.
        """
        target = _next_state(SERVER_TRANSITIONS, self._state, "challenge")
        if len(signature) != _SIG_SIZE:
            raise ValueError("signature must be 65 bytes")
        assert self.th is not None  # set with HELLO_RECEIVED
        try:
            k_c2s, k_s2c = _session_keys(self._eph_key, self._client_eph, self.th)
        except Exception:
            self._state = ServerState.FAILED
            raise
        self._state = target
        body = cbor.encode(
            {
                "v": PROTOCOL_VERSION,
                "eph": self._eph_public,
                "nonce": self._nonce,
                "wallet": self.wallet,
                "sig": signature,
            }
        )
        return body, SecureChannel(send_key=k_s2c, recv_key=k_c2s)

    def receive_auth(self, item: object, *, now: int, window: int) -> str | None:
        """Check the (opened) ClientAuth; return the proven wallet, or None when anonymous.

        Raises:
            HandshakeError: bad signature, stale timestamp, anonymous peer.
            ProtocolError: malformed ClientAuth.
            LocalProtocolError: the challenge was not sent yet, or called twice.
        """
        target = _next_state(SERVER_TRANSITIONS, self._state, "receive_auth")
        try:
            wallet = self._check_auth(item, now=now, window=window)
        except Exception:
            self._state = ServerState.FAILED
            raise
        self._state = target
        return wallet

    def _check_auth(self, item: object, *, now: int, window: int) -> str | None:
        assert self.th is not None  # set with the accepted challenge / hello
        assert self.role is not None
        if item == {}:
            if self.role != "app":
                raise HandshakeError(f"the {self.role} role must authenticate")
            return None
        msg = _exact_keys(item, {"wallet", "ts", "sig"}, "ClientAuth")
        ts = msg["ts"]
        if not isinstance(ts, int) or isinstance(ts, bool) or ts < 0:
            raise ProtocolError("ClientAuth.ts must be an unsigned integer")
        if not isinstance(msg["wallet"], str):
            raise ProtocolError("ClientAuth.wallet must be text")
        try:
            wallet = normalize_wallet(msg["wallet"])
        except ValueError:
            raise ProtocolError("ClientAuth.wallet is not a wallet") from None
        sig = _bytes_of(msg, "sig", _SIG_SIZE, "ClientAuth")
        if abs(now - ts) > window:
            raise HandshakeError(f"auth timestamp is outside the allowed window of {window} s")
        text = client_auth_text(role=self.role, th=self.th, server_wallet=self.wallet, ts=ts)
        if recover_wallet(text=text, signature=sig) != wallet:
            raise HandshakeError("auth signature does not match the wallet")
        return wallet

    @staticmethod
    def ready(*, wallet: str | None, max_frame: int, max_inflight: int) -> dict[str, Any]:
        """The Ready map."""
        return {"wallet": wallet, "limits": {"max_frame": max_frame, "max_inflight": max_inflight}}


def describe_error(error: NovaKMSError) -> str:
    """A one-line description for logs (never contains secrets: errors never carry them)."""
    return f"{error.code}: {error.message}"
