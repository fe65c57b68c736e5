"""A blocking client for programs that do not run trio.

It drives the same pure protocol core (:mod:`novakms.wire`) over a plain socket: no event loop,
no threads. Calls are serialised by a lock, so one instance may be shared between threads.

Example::

    with BlockingClient.connect("127.0.0.1:7400", signer=LocalSigner.from_file("app.key")) as kms:
        key = kms.derive("disk/encryption").key
"""

from __future__ import annotations

import itertools
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

from novakms.client.results import (
    DEFAULT_TIMEOUT,
    CertIssued,
    Ciphertext,
    DeleteResult,
    DeriveResult,
    GuardianShare,
    Health,
    KeyAttestation,
    KVItem,
    KVPage,
    Nodes,
    Plaintext,
    PublicKey,
    PutResult,
    RestoreResult,
    Signature,
    Status,
    optional_args,
    parse_cert_ca,
    parse_cert_issued,
    parse_ciphertext,
    parse_delete_result,
    parse_derive_result,
    parse_guardian_share,
    parse_health,
    parse_key_attestation,
    parse_kv_item,
    parse_kv_page,
    parse_nodes,
    parse_plaintext,
    parse_public_key,
    parse_put_result,
    parse_restore_result,
    parse_signature,
    parse_status,
    sign_args,
)
from novakms.crypto.signer import SyncSigner
from novakms.errors import NetworkError, NovaKMSError, TransportError, TransportTimeout
from novakms.net.addresses import Address, parse_address
from novakms.wire.channel import SecureChannel
from novakms.wire.framing import DEFAULT_MAX_FRAME, FrameDecoder, encode_frame
from novakms.wire.handshake import ClientHandshake, Role
from novakms.wire.http_connect import connect_request, split_reply
from novakms.wire.messages import parse_close_notice, parse_response, request_message

__all__ = ["BlockingClient"]


def _connect_socket(address: Address, timeout: float) -> socket.socket:
    try:
        if address.scheme == "tcp":
            return socket.create_connection((address.host, address.port), timeout=timeout)
        if address.scheme == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            target: Any = address.path
        else:
            family = getattr(socket, "AF_VSOCK", None)
            if family is None:
                raise TransportError("AF_VSOCK is not available on this platform")
            sock = socket.socket(family, socket.SOCK_STREAM)
            target = (address.cid, address.port)
        sock.settimeout(timeout)
        try:
            sock.connect(target)
        except BaseException:
            sock.close()
            raise
    except OSError as exc:
        raise NetworkError(f"cannot connect to {address}: {exc.strerror or exc}") from None
    return sock


def _open_tunnel(sock: socket.socket, target: Address) -> bytes:
    """Ask the HTTP CONNECT proxy at the other end of ``sock`` for a tunnel to ``target``.

    Returns the bytes received after the proxy's reply head: they already belong to the tunnel.
    """
    request = connect_request(target)
    received = b""
    try:
        sock.sendall(request)
        while (tunnelled := split_reply(received, target)) is None:
            chunk = sock.recv(65536)
            if not chunk:
                raise NetworkError(f"the proxy closed the connection during CONNECT {target}")
            received += chunk
    except TimeoutError:
        raise TransportTimeout(f"timed out waiting for the proxy to CONNECT {target}") from None
    except OSError as exc:
        raise NetworkError(f"connection to the proxy lost: {exc}") from None
    return tunnelled


class BlockingClient:
    """A blocking connection to one KMS node. Create with :meth:`connect`.

    Attributes:
        server_wallet: the wallet the server proved in the handshake.
        wallet: this client's authenticated wallet, or None when anonymous.
    """

    def __init__(
        self, sock: socket.socket, decoder: FrameDecoder, channel: SecureChannel, max_frame: int
    ) -> None:
        self._sock = sock
        self._decoder = decoder
        self._channel = channel
        self._max_frame = max_frame
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._broken: NovaKMSError | None = None
        self.server_wallet = ""
        self.wallet: str | None = None

    @classmethod
    def connect(
        cls,
        address: str,
        *,
        signer: SyncSigner | None = None,
        role: Role = "app",
        expect_wallet: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_frame: int = DEFAULT_MAX_FRAME,
        random_bytes: Callable[[int], bytes] = os.urandom,
        clock: Callable[[], float] = time.time,
        proxy: str | None = None,
    ) -> BlockingClient:
        """Connect and run the handshake (same arguments and errors as ``Client.connect``)."""
        target = parse_address(address)
        via = None if proxy is None else parse_address(proxy)
        if target.scheme != "tcp":
            via = None  # as in open_stream: unix and vsock targets are local, dialed directly
        sock = _connect_socket(via or target, timeout)
        try:
            decoder = FrameDecoder(max_frame=max_frame)
            if via is not None:
                decoder.feed(_open_tunnel(sock, target))
            hs = ClientHandshake(
                role=role, eph_private=random_bytes(32), expect_wallet=expect_wallet
            )
            cls._send(sock, hs.hello(), max_frame)
            channel = hs.receive_challenge(cls._receive(sock, decoder))
            if signer is None:
                auth = hs.auth_message(wallet=None)
            else:
                ts = int(clock())
                auth = hs.auth_message(
                    wallet=signer.wallet, ts=ts, sig=signer.sign_text_sync(hs.auth_text(ts))
                )
            cls._send(sock, channel.seal(auth), max_frame)
            ready = hs.receive_ready(channel.open(cls._receive(sock, decoder)))
        except BaseException:
            sock.close()
            raise
        # Frames sent are bounded by what the server accepts too (Ready.limits.max_frame).
        client = cls(sock, decoder, channel, min(max_frame, ready.max_frame))
        assert hs.server_wallet is not None
        client.server_wallet = hs.server_wallet
        client.wallet = ready.wallet
        return client

    @staticmethod
    def _send(sock: socket.socket, body: bytes, max_frame: int) -> None:
        try:
            sock.sendall(encode_frame(body, max_frame=max_frame))
        except OSError as exc:
            raise NetworkError(f"connection lost: {exc}") from None

    @staticmethod
    def _receive(sock: socket.socket, decoder: FrameDecoder) -> bytes:
        while True:
            body = decoder.next_body()
            if body is not None:
                return body
            try:
                data = sock.recv(65536)
            except TimeoutError:
                raise TransportTimeout("timed out waiting for the server") from None
            except OSError as exc:
                raise NetworkError(f"connection lost: {exc}") from None
            if not data:
                decoder.eof()
                raise NetworkError("the server closed the connection")
            decoder.feed(data)

    def __enter__(self) -> BlockingClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def usable(self) -> bool:
        """Whether calls can still be sent (as ``Client.usable``)."""
        return self._broken is None

    def close(self) -> None:
        """Close the connection."""
        self._broken = self._broken or TransportError("the client was closed")
        self._sock.close()

    def call(self, op: str, args: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
        """Send one request and wait for its response (errors as in ``Client.call``)."""
        with self._lock:
            if self._broken is not None:
                raise self._broken.fresh()
            request_id = next(self._ids)
            # Too large for a frame: TooLarge here, before anything is sent or sealed.
            message = request_message(request_id, op, args or {})
            body = self._channel.seal(message, max_body=self._max_frame)
            try:
                self._send(self._sock, body, self._max_frame)
                while True:
                    item = self._channel.open(self._receive(self._sock, self._decoder))
                    notice = parse_close_notice(item)
                    if notice is not None:
                        raise notice
                    response = parse_response(item)
                    if response.id == request_id:
                        break
            except NovaKMSError as exc:
                # Any failure mid-exchange leaves the stream at an unknown point: stop using it.
                self._broken = exc
                self._sock.close()
                raise
        if response.error is not None:
            raise response.error
        assert response.ok is not None
        return response.ok

    # The operations, each with its typed result (as in ``Client``) ------------------------

    def health(self) -> Health:
        """``health``: liveness."""
        return parse_health(self.call("health"))

    def status(self) -> Status:
        """``status``: node, readiness and counters (``Status.document`` has all of it)."""
        return parse_status(self.call("status"))

    def nodes(self) -> Nodes:
        """``nodes``: the KMS operators, each with a dialable ``address``."""
        return parse_nodes(self.call("nodes"))

    def derive(
        self, path: str, *, context: str | None = None, length: int | None = None
    ) -> DeriveResult:
        """``derive``: an app key."""
        args = optional_args(path=path, context=context, length=length)
        return parse_derive_result(self.call("derive", args))

    def keys_public(self, name: str, alg: str) -> PublicKey:
        """``keys.public``: the public key of the app's signing key ``name``."""
        return parse_public_key(self.call("keys.public", {"name": name, "alg": alg}))

    def keys_attest(self, name: str, alg: str) -> KeyAttestation:
        """``keys.attest``: the node's signed statement that the key is the app's."""
        return parse_key_attestation(self.call("keys.attest", {"name": name, "alg": alg}))

    def sign(
        self,
        name: str,
        alg: str,
        *,
        digest: bytes | None = None,
        eip191: bytes | str | None = None,
        eip712: tuple[bytes, bytes] | None = None,
        message: bytes | None = None,
        der: bool = False,
    ) -> Signature:
        """``sign``: secp256k1 takes one of ``digest``, ``eip191``, ``eip712`` (domain
        separator, struct hash); ed25519 and p256 a ``message`` (p256: ``der`` for DER)."""
        args = sign_args(
            name, alg, digest=digest, eip191=eip191, eip712=eip712, message=message, der=der
        )
        return parse_signature(self.call("sign", args))

    def encrypt(self, name: str, plaintext: bytes, *, aad: bytes | None = None) -> Ciphertext:
        """``encrypt``: seal ``plaintext`` under the app's symmetric key ``name``."""
        args = optional_args(name=name, plaintext=plaintext, aad=aad)
        return parse_ciphertext(self.call("encrypt", args))

    def decrypt(self, ciphertext: bytes, *, aad: bytes | None = None) -> Plaintext:
        """``decrypt``: open a ciphertext of :meth:`encrypt` (the key it names, this app's)."""
        args = optional_args(ciphertext=ciphertext, aad=aad)
        return parse_plaintext(self.call("decrypt", args))

    def kv_get(self, key: str) -> KVItem:
        """``kv.get``."""
        return parse_kv_item(self.call("kv.get", {"key": key}))

    def kv_put(
        self,
        key: str,
        value: bytes,
        *,
        ttl_ms: int | None = None,
        if_version: str | None = None,
        acks: int | None = None,
    ) -> PutResult:
        """``kv.put`` (``acks`` as in ``Client.kv_put``)."""
        args = optional_args(key=key, value=value, ttl_ms=ttl_ms, if_version=if_version, acks=acks)
        return parse_put_result(self.call("kv.put", args))

    def kv_delete(self, key: str, *, if_version: str | None = None) -> DeleteResult:
        """``kv.delete``."""
        args = optional_args(key=key, if_version=if_version)
        return parse_delete_result(self.call("kv.delete", args))

    def kv_list(
        self, *, prefix: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> KVPage:
        """``kv.list``."""
        args = optional_args(prefix=prefix, limit=limit, cursor=cursor)
        return parse_kv_page(self.call("kv.list", args))

    def guardian_share(self) -> GuardianShare:
        """``guardian.share``."""
        return parse_guardian_share(self.call("guardian.share"))

    def guardian_restore(self, share: bytes) -> RestoreResult:
        """``guardian.restore``."""
        return parse_restore_result(self.call("guardian.restore", {"share": share}))

    def cert_ca(self, app_id: int) -> str:
        """``cert.ca``."""
        return parse_cert_ca(self.call("cert.ca", {"app_id": app_id}))

    def cert_sign(self, csr: str | bytes, *, days: int | None = None) -> CertIssued:
        """``cert.sign``."""
        return parse_cert_issued(self.call("cert.sign", optional_args(csr=csr, days=days)))
