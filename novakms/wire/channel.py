"""The sealed channel of PROTOCOL.md §5: per-direction ChaCha20-Poly1305 with counter nonces.

Counters are implicit: both sides count the frames they seal and open, so a dropped, replayed,
reordered or modified frame simply fails to open. After any failure the channel refuses all
further use — the caller must close the connection.

The channel has two states, open and broken (``_broken``); unlike the handshake's misuse, a use
after the break raises :class:`~novakms.errors.ChannelError` and not a local usage error, on
purpose: the glue's sender tasks legitimately race a failed open on the same connection, and
for them the broken channel *is* a lost connection, handled where every ChannelError is.
"""

from __future__ import annotations

import struct
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from novakms.errors import ChannelError, ProtocolError, TooLarge
from novakms.wire import cbor

__all__ = ["KEY_SIZE", "TAG_SIZE", "SecureChannel", "sealed_body_size"]

KEY_SIZE = 32
TAG_SIZE = 16
_MAX_COUNTER = 2**64 - 1
_NONCE = struct.Struct(">IQ")


def sealed_body_size(plaintext_size: int) -> int:
    """Size of the frame body that sealing ``plaintext_size`` bytes produces."""
    n = plaintext_size + TAG_SIZE
    return cbor.head_size(n) + n


class SecureChannel:
    """One end of a sealed channel.

    Args:
        send_key: 32-byte key for frames this end sends.
        recv_key: 32-byte key for frames this end receives.
    """

    __slots__ = ("_broken", "_recv", "_recv_ctr", "_send", "_send_ctr")

    def __init__(self, *, send_key: bytes, recv_key: bytes) -> None:
        if len(send_key) != KEY_SIZE or len(recv_key) != KEY_SIZE:
            raise ValueError("channel keys must be 32 bytes")
        self._send = ChaCha20Poly1305(send_key)
        self._recv = ChaCha20Poly1305(recv_key)
        self._send_ctr = 0
        self._recv_ctr = 0
        self._broken = False

    def __repr__(self) -> str:
        return f"<SecureChannel sent={self._send_ctr} received={self._recv_ctr}>"

    @property
    def counters(self) -> tuple[int, int]:
        """(frames sealed, frames opened) so far."""
        return self._send_ctr, self._recv_ctr

    def seal(self, message: Any, *, max_body: int | None = None) -> bytes:
        """Encode ``message`` and seal it into a frame body (a CBOR byte string).

        Raises:
            TooLarge: the sealed body would exceed ``max_body`` (nothing was sealed).
            ChannelError: the send counter is exhausted or the channel is broken.
        """
        return self.seal_plaintext(cbor.encode(message), max_body=max_body)

    def seal_plaintext(self, plaintext: bytes, *, max_body: int | None = None) -> bytes:
        """Seal already-encoded CBOR bytes into a frame body.

        The size is checked *before* sealing: a body that could not be sent must not consume a
        counter value, or every later frame would fail to open on the other side.
        """
        if self._broken:
            raise ChannelError("channel is closed")
        if max_body is not None and sealed_body_size(len(plaintext)) > max_body:
            raise TooLarge(
                f"message of {len(plaintext)} bytes exceeds the frame limit of {max_body}"
            )
        if self._send_ctr >= _MAX_COUNTER:
            self._broken = True
            raise ChannelError("send counter exhausted")
        sealed = self._send.encrypt(_NONCE.pack(0, self._send_ctr), plaintext, None)
        self._send_ctr += 1
        return cbor.encode(sealed)

    def open(self, body: bytes, *, max_items: int | None = None) -> Any:
        """Open a sealed frame body and decode the message inside (at most ``max_items``).

        Raises:
            ChannelError: not a byte string, tag failure (tampering, replay, reorder, gap),
                counter exhausted; the channel is unusable afterwards.
            ProtocolError: the plaintext is not one valid CBOR item (the channel stays in step,
                but the caller should treat it as a protocol violation).
        """
        return cbor.decode(self.open_plaintext(body), max_items=max_items)

    def open_plaintext(self, body: bytes) -> bytes:
        """Open a sealed frame body and return the plaintext bytes."""
        if self._broken:
            raise ChannelError("channel is closed")
        try:  # one item: a byte string (its head is all there is to parse)
            sealed = cbor.decode_byte_string(body)
        except ProtocolError:
            self._broken = True
            raise ChannelError("sealed frame is not a CBOR byte string") from None
        if len(sealed) < TAG_SIZE:
            self._broken = True
            raise ChannelError("sealed frame is not a CBOR byte string")
        if self._recv_ctr >= _MAX_COUNTER:
            self._broken = True
            raise ChannelError("receive counter exhausted")
        try:
            plaintext = self._recv.decrypt(_NONCE.pack(0, self._recv_ctr), sealed, None)
        except InvalidTag:
            self._broken = True
            raise ChannelError("sealed frame failed to open") from None
        self._recv_ctr += 1
        return plaintext
