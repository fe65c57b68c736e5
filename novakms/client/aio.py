"""The trio client: one secure connection, many concurrent calls, no hidden tasks.

Concurrency without a background reader task (the trio-websocket lesson): whichever caller is
waiting takes the *reader role*, reads frames and hands each response to its caller; when its
own response arrives it passes the role to another waiting caller. Every exception therefore
surfaces in the task that made the call — never as an ExceptionGroup from a task you did not
start.

Example::

    async with await Client.connect("127.0.0.1:7400", signer=LocalSigner.from_file("app.key"),
                                    expect_wallet="0x…") as kms:
        key = (await kms.derive("disk/encryption")).key
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

import trio

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
from novakms.crypto.signer import Signer
from novakms.errors import (
    ChannelError,
    NetworkError,
    NovaKMSError,
    TransportError,
    TransportTimeout,
)
from novakms.net.addresses import parse_address
from novakms.net.dial import Dialer, open_stream
from novakms.net.framed import END_OF_STREAM, FramedStream, SealedStream
from novakms.wire.framing import DEFAULT_MAX_FRAME
from novakms.wire.handshake import ClientHandshake, Ready, Role
from novakms.wire.messages import parse_close_notice, parse_response, request_message

__all__ = ["Client"]


class _Slot:
    __slots__ = ("done", "error", "result", "wake")

    def __init__(self) -> None:
        self.wake = trio.Event()
        self.done = False
        self.result: Mapping[str, Any] | None = None
        self.error: NovaKMSError | None = None


class Client:
    """A connection to one KMS node. Create with :meth:`connect`; use as an async context manager.

    Attributes:
        server_wallet: the wallet the server proved in the handshake.
        wallet: this client's authenticated wallet, or None when anonymous.
    """

    def __init__(
        self, sealed: SealedStream, server_wallet: str, ready: Ready, timeout: float
    ) -> None:
        self._sealed = sealed
        self.server_wallet = server_wallet
        self.transcript_hash = b""  # TH of the handshake: binds proofs to this channel
        self.wallet = ready.wallet
        self.server_max_frame = ready.max_frame
        self.server_max_inflight = ready.max_inflight
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._slots: dict[int, _Slot] = {}
        self._reading = False
        self._failure: NovaKMSError | None = None
        self._closed = False

    @classmethod
    async def connect(
        cls,
        address: str,
        *,
        signer: Signer | None = None,
        role: Role = "app",
        expect_wallet: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_frame: int = DEFAULT_MAX_FRAME,
        random_bytes: Callable[[int], bytes] = os.urandom,
        clock: Callable[[], float] = time.time,
        proxy: str | None = None,
        dial: Dialer | None = None,
    ) -> Client:
        """Connect and run the handshake.

        Args:
            address: ``HOST:PORT``, ``tcp://…``, ``unix:///path`` or ``vsock://CID:PORT``.
            signer: the app's (or peer's) wallet signer; None connects anonymously.
            role: ``"app"`` or ``"peer"``.
            expect_wallet: the server must prove exactly this wallet (recommended).
            timeout: seconds for connecting + handshake, and the default per-call timeout.
            max_frame: largest frame this client accepts.
            proxy: an HTTP CONNECT proxy to dial through (tcp targets only), in the same
                address forms as ``address``.
            dial: opens the stream instead of the network (then ``proxy`` is not used); tests
                run clusters over in-memory streams with it.

        Raises:
            TransportError: cannot connect, or timed out.
            HandshakeError: the server's proof failed or is not the expected wallet.
            NovaKMSError: the server refused the connection (its close notice).
        """
        target = parse_address(address)
        via = None if proxy is None else parse_address(proxy)
        with trio.move_on_after(timeout) as scope:
            stream = await (open_stream(target, proxy=via) if dial is None else dial(target))
            framed = FramedStream(stream, max_frame=max_frame)
            try:
                return await cls._handshake(
                    framed, signer, role, expect_wallet, timeout, random_bytes, clock
                )
            except BaseException:
                await framed.aclose()
                raise
        assert scope.cancelled_caught
        raise TransportTimeout(f"connecting to {address} timed out after {timeout} s")

    @classmethod
    async def _handshake(
        cls,
        framed: FramedStream,
        signer: Signer | None,
        role: Role,
        expect_wallet: str | None,
        timeout: float,
        random_bytes: Callable[[int], bytes],
        clock: Callable[[], float],
    ) -> Client:
        hs = ClientHandshake(role=role, eph_private=random_bytes(32), expect_wallet=expect_wallet)
        await framed.send_body(hs.hello())
        body = await framed.receive_body()
        if body is None:
            raise NetworkError("the server closed the connection during the handshake")
        channel = hs.receive_challenge(body)
        sealed = SealedStream(framed, channel)
        if signer is None:
            auth = hs.auth_message(wallet=None)
        else:
            ts = int(clock())
            auth = hs.auth_message(
                wallet=signer.wallet, ts=ts, sig=await signer.sign_text(hs.auth_text(ts))
            )
        # Nothing else sends on the connection yet: no need for the send lock of SealedStream
        # (the same frame, sealed with counter 0).
        await framed.send_body(channel.seal(auth, max_body=framed.max_frame))
        item = await sealed.receive()
        if item is END_OF_STREAM:
            raise NetworkError("the server closed the connection during the handshake")
        ready = hs.receive_ready(item)
        # Send no frame the server would refuse (it may accept less than this client does).
        framed.max_frame = min(framed.max_frame, ready.max_frame)
        assert hs.server_wallet is not None
        client = cls(sealed, hs.server_wallet, ready, timeout)
        client.transcript_hash = hs.th or b""
        return client

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def usable(self) -> bool:
        """Whether calls can still be sent: False once the connection failed or was closed.

        After a call raised, True tells an answered error (the connection lives) from a lost
        or closed connection (then nothing can be known of a request already sent).
        """
        return self._failure is None

    async def aclose(self) -> None:
        """Close the connection; pending calls fail with TransportError."""
        if not self._closed:
            self._closed = True
            self._fail(TransportError("the client was closed"))
            await self._sealed.framed.aclose()

    def _fail(self, error: NovaKMSError) -> None:
        if self._failure is None:
            self._failure = error
        for slot in self._slots.values():
            slot.wake.set()

    async def call(
        self, op: str, args: Mapping[str, Any] | None = None, *, timeout: float | None = None
    ) -> Mapping[str, Any]:
        """Send one request and wait for its response.

        Raises:
            RequestError: the server answered with an error (typed by its code).
            TransportError: the connection is gone or the call timed out (the connection is
                then closed, since a late answer could not be matched any more).
            NovaKMSError: the server closed the connection with a notice.
        """
        if self._failure is not None:
            raise self._failure.fresh()
        request_id = next(self._ids)
        slot = _Slot()
        self._slots[request_id] = slot
        limit = self.timeout if timeout is None else timeout
        sent = False
        try:
            with trio.move_on_after(limit) as scope:
                try:
                    await self._sealed.send(request_message(request_id, op, args or {}))
                except (TransportError, ChannelError) as exc:
                    lost = NetworkError(f"connection lost: {exc.message}")
                    self._fail(lost)
                    raise lost from None
                sent = True
                await self._await(slot)
            if scope.cancelled_caught:
                if not sent:
                    # The request frame may be half-written: the stream cannot be used any more.
                    self._fail(TransportError("connection abandoned after a cancelled send"))
                    await self._sealed.framed.aclose()
                raise TransportTimeout(f"{op} timed out after {limit} s")
        finally:
            del self._slots[request_id]
            if not self._reading:
                self._hand_over()
        if slot.error is not None:
            raise slot.error
        assert slot.result is not None
        return slot.result

    async def _await(self, slot: _Slot) -> None:
        while not slot.done:
            if self._failure is not None:
                raise self._failure.fresh()
            if self._reading:
                await slot.wake.wait()
                slot.wake = trio.Event()
                continue
            self._reading = True
            try:
                while not slot.done:
                    self._dispatch(await self._sealed.receive())
            except NovaKMSError as exc:
                self._fail(
                    exc if not isinstance(exc, ChannelError) else TransportError("channel broken")
                )
            finally:
                self._reading = False
                self._hand_over()

    def _hand_over(self) -> None:
        """Wake one waiting caller to take the reader role."""
        for other in self._slots.values():
            if not other.done:
                other.wake.set()
                return

    def _dispatch(self, item: Any) -> None:
        if item is END_OF_STREAM:
            raise NetworkError("the server closed the connection")
        notice = parse_close_notice(item)
        if notice is not None:
            raise notice
        response = parse_response(item)
        slot = self._slots.get(response.id)
        if slot is None:
            # An answer to a call that timed out or was cancelled: nobody is waiting for it.
            return
        slot.done, slot.result, slot.error = True, response.ok, response.error
        slot.wake.set()

    # The operations, each with its typed result ------------------------------------------

    async def health(self) -> Health:
        """``health``: liveness."""
        return parse_health(await self.call("health"))

    async def status(self) -> Status:
        """``status``: node, readiness and counters (``Status.document`` has all of it)."""
        return parse_status(await self.call("status"))

    async def nodes(self) -> Nodes:
        """``nodes``: the KMS operators, each with a dialable ``address`` and the node's view."""
        return parse_nodes(await self.call("nodes"))

    async def derive(
        self, path: str, *, context: str | None = None, length: int | None = None
    ) -> DeriveResult:
        """``derive``: an app key (HKDF of the master secret, partitioned by the caller's app)."""
        args = optional_args(path=path, context=context, length=length)
        return parse_derive_result(await self.call("derive", args))

    async def keys_public(self, name: str, alg: str) -> PublicKey:
        """``keys.public``: the public key of the app's signing key ``name``."""
        return parse_public_key(await self.call("keys.public", {"name": name, "alg": alg}))

    async def keys_attest(self, name: str, alg: str) -> KeyAttestation:
        """``keys.attest``: the node's signed statement that the key is the app's."""
        return parse_key_attestation(await self.call("keys.attest", {"name": name, "alg": alg}))

    async def sign(
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
        return parse_signature(await self.call("sign", args))

    async def encrypt(self, name: str, plaintext: bytes, *, aad: bytes | None = None) -> Ciphertext:
        """``encrypt``: seal ``plaintext`` under the app's symmetric key ``name``."""
        args = optional_args(name=name, plaintext=plaintext, aad=aad)
        return parse_ciphertext(await self.call("encrypt", args))

    async def decrypt(self, ciphertext: bytes, *, aad: bytes | None = None) -> Plaintext:
        """``decrypt``: open a ciphertext of :meth:`encrypt` (the key it names, this app's)."""
        args = optional_args(ciphertext=ciphertext, aad=aad)
        return parse_plaintext(await self.call("decrypt", args))

    async def kv_get(self, key: str) -> KVItem:
        """``kv.get``: a value of the caller's app (NotFound when absent, deleted or expired)."""
        return parse_kv_item(await self.call("kv.get", {"key": key}))

    async def kv_put(
        self,
        key: str,
        value: bytes,
        *,
        ttl_ms: int | None = None,
        if_version: str | None = None,
        acks: int | None = None,
    ) -> PutResult:
        """``kv.put``: write a value; ``if_version="absent"`` writes only a new key.

        With ``acks=N`` the answer waits until N peers have stored the write (``acks_timeout``
        if they do not within the node's ``ack_timeout``; the write is kept either way).
        """
        args = optional_args(key=key, value=value, ttl_ms=ttl_ms, if_version=if_version, acks=acks)
        return parse_put_result(await self.call("kv.put", args))

    async def kv_delete(self, key: str, *, if_version: str | None = None) -> DeleteResult:
        """``kv.delete``: delete a key (compare-and-set with ``if_version``)."""
        args = optional_args(key=key, if_version=if_version)
        return parse_delete_result(await self.call("kv.delete", args))

    async def kv_list(
        self, *, prefix: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> KVPage:
        """``kv.list``: one page of keys; pass the returned ``cursor`` for the next page."""
        args = optional_args(prefix=prefix, limit=limit, cursor=cursor)
        return parse_kv_page(await self.call("kv.list", args))

    async def guardian_share(self) -> GuardianShare:
        """``guardian.share``: this guardian's share, sealed to its encryption key."""
        return parse_guardian_share(await self.call("guardian.share"))

    async def guardian_restore(self, share: bytes) -> RestoreResult:
        """``guardian.restore``: hand an opened share to a node that lost the secret."""
        return parse_restore_result(await self.call("guardian.restore", {"share": share}))

    async def cert_ca(self, app_id: int) -> str:
        """``cert.ca``: an app's CA certificate (PEM)."""
        return parse_cert_ca(await self.call("cert.ca", {"app_id": app_id}))

    async def cert_sign(self, csr: str | bytes, *, days: int | None = None) -> CertIssued:
        """``cert.sign``: a leaf certificate for the caller's app from a CSR (PEM or DER)."""
        return parse_cert_issued(await self.call("cert.sign", optional_args(csr=csr, days=days)))
