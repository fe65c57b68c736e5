"""Frames over a trio stream, and the sealed-message stream built on it.

The protocol logic lives in the pure :mod:`novakms.wire` modules; this is the I/O around them.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import trio

from novakms.errors import ChannelError, NetworkError, ProtocolError
from novakms.wire import cbor
from novakms.wire.channel import SecureChannel
from novakms.wire.framing import FrameDecoder, encode_frame

__all__ = ["END_OF_STREAM", "FramedStream", "SealedStream"]


class _EndOfStream:
    """Sentinel for an orderly close (a sealed message may itself decode to None)."""

    def __repr__(self) -> str:
        return "END_OF_STREAM"


END_OF_STREAM: Any = _EndOfStream()

_RECEIVE_CHUNK = 65536


class FramedStream:
    """Length-prefixed frames over a byte stream.

    Receiving is cancellation-safe: partial input stays in the decoder, so a cancelled
    ``receive_body`` can be retried without losing bytes. ``max_frame`` bounds both directions
    until :meth:`set_receive_limit` changes what is accepted; the attribute stays the bound
    for sending (a client lowers it to the server's announced limit).
    """

    def __init__(self, stream: trio.abc.Stream, *, max_frame: int) -> None:
        self.stream = stream
        self.max_frame = max_frame
        # send_now writes to a socket directly; trio's streams offer no write that never waits
        self._socket = stream.socket if isinstance(stream, trio.SocketStream) else None
        self._decoder = FrameDecoder(max_frame=max_frame)

    def set_receive_limit(self, max_frame: int) -> None:
        """Accept frames up to ``max_frame`` from now on (``max_frame`` bounds what is sent).

        The server moves from the handshake limit to the session's limit with this.
        """
        self._decoder.set_max_frame(max_frame)

    def feed(self, data: bytes) -> None:
        """Frame bytes that were read ahead of this stream (after a PROXY header).

        Raises:
            ProtocolError: the bytes start a frame above the limit.
        """
        self._decoder.feed(data)

    def next_buffered(self) -> bytes | None:
        """The next frame body if it is already buffered, else None (never waits).

        Raises:
            ProtocolError: framing violation.
        """
        return self._decoder.next_body()

    async def receive_body(self) -> bytes | None:
        """The next frame body, or None on an orderly end of stream.

        Raises:
            ProtocolError: framing violation, or end of stream inside a frame.
            TransportError: the connection broke.
        """
        while True:
            body = self._decoder.next_body()
            if body is not None:
                return body
            try:
                data = await self.stream.receive_some(_RECEIVE_CHUNK)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise NetworkError(f"connection lost: {exc}") from None
            if not data:
                self._decoder.eof()
                return None
            self._decoder.feed(data)

    async def receive_item(self) -> Any:
        """The next frame decoded as one CBOR item (plaintext phase).

        Raises:
            ProtocolError: also when the stream ends before a frame arrives.
        """
        body = await self.receive_body()
        if body is None:
            raise ProtocolError("connection closed during the handshake")
        return cbor.decode(body)

    async def send_body(self, body: bytes) -> None:
        """Send one frame body.

        Raises:
            TransportError: the connection broke.
        """
        await self.send_data(encode_frame(body, max_frame=self.max_frame))

    async def send_data(self, data: bytes) -> None:
        """Send already-framed bytes.

        Raises:
            TransportError: the connection broke.
        """
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise NetworkError(f"connection lost: {exc}") from None

    def send_now(self, data: bytes) -> int:
        """Write what the kernel takes of already-framed ``data`` at once, never waiting.

        Only on a socket stream (0 on others, and when its send buffer is full). Must not be
        called while a :meth:`send_data` is under way: bytes would interleave.

        Returns:
            How many bytes were written.

        Raises:
            TransportError: the connection broke.
        """
        if self._socket is None:
            return 0
        fd = self._socket.fileno()
        if fd < 0:
            return 0
        try:
            return os.write(fd, data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise NetworkError(f"connection lost: {exc}") from None

    async def aclose(self) -> None:
        """Close the underlying stream (never raises for an already-broken one)."""
        with trio.CancelScope(shield=True), contextlib.suppress(trio.BrokenResourceError, OSError):
            await self.stream.aclose()


class SealedStream:
    """Sealed messages over a :class:`FramedStream`.

    Sealing and sending happen under one lock, so frames reach the wire in counter order even
    when many tasks send at once.
    """

    def __init__(
        self, framed: FramedStream, channel: SecureChannel, *, max_items: int | None = None
    ) -> None:
        self.framed = framed
        self.channel = channel
        #: Decode budget of each received message (CBOR items); None: bounded by the frame.
        self.max_items = max_items
        self._send_lock = trio.StrictFIFOLock()
        self._interrupted = False

    async def send(self, message: Any) -> None:
        """Seal and send one message.

        Raises:
            TooLarge: the message does not fit in a frame (nothing was sent; the channel is
                still usable).
            TransportError: the connection broke.
            ChannelError: the channel is closed.
        """
        await self.send_plaintext(cbor.encode(message))

    async def send_plaintext(self, plaintext: bytes) -> None:
        """Seal and send one already-encoded message (raises as :meth:`send`).

        A send interrupted part-way (cancelled, or the connection broke) may have left half a
        frame on the wire: every later send raises :class:`ChannelError` instead of writing
        after it.
        """
        async with self._send_lock:
            if self._interrupted:
                raise ChannelError("an earlier send was interrupted: the stream is unusable")
            body = self.channel.seal_plaintext(plaintext, max_body=self.framed.max_frame)
            try:
                await self.framed.send_body(body)
            except BaseException:
                self._interrupted = True
                raise

    async def receive(self) -> Any:
        """The next opened message, or ``END_OF_STREAM`` on an orderly end of stream.

        Raises:
            ChannelError: a frame failed to open (close the connection).
            ProtocolError: framing violation or invalid plaintext.
            TransportError: the connection broke.
        """
        body = await self.framed.receive_body()
        if body is None:
            return END_OF_STREAM
        return self.channel.open(body, max_items=self.max_items)
