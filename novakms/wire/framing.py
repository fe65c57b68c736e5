"""Length-prefixed framing of the novakms wire protocol (``protocol/PROTOCOL.md`` §2).

``frame = u32be(L) || body`` with ``1 <= L <= max_frame``. This module is sans-I/O: the
network layer feeds received bytes into a :class:`FrameDecoder` and pulls complete bodies
out; nothing here reads a socket or sleeps.
"""

from __future__ import annotations

import struct
from typing import Any, Final

from novakms.errors import FrameTooLarge, ProtocolError
from novakms.wire import cbor

__all__ = ["DEFAULT_MAX_FRAME", "HEADER_SIZE", "FrameDecoder", "decode_body", "encode_frame"]

#: Size of the big-endian length prefix.
HEADER_SIZE: Final = 4
_HEADER: Final = struct.Struct(">I")
#: Default (and announced) maximum body length: 2 MiB (§2, §10).
DEFAULT_MAX_FRAME: Final = 2_097_152

# The largest length a u32 prefix can express.
_U32_MAX: Final = 0xFFFFFFFF


def _check_max_frame(max_frame: int) -> None:
    if not 1 <= max_frame <= _U32_MAX:
        raise ValueError(f"max_frame must be in 1..{_U32_MAX}, got {max_frame}")


def encode_frame(
    body: bytes | bytearray | memoryview, *, max_frame: int = DEFAULT_MAX_FRAME
) -> bytes:
    """Prefix a body with its length.

    Args:
        body: the encoded CBOR item to send (1..``max_frame`` bytes).
        max_frame: the largest body the receiver accepts.

    Returns:
        ``u32be(len(body)) || body``.

    Raises:
        ValueError: the body is empty or longer than ``max_frame``, or ``max_frame`` is not
            in 1..2**32-1. These are bugs on the sending side, not peer errors.
    """
    _check_max_frame(max_frame)
    raw = bytes(body)
    if not raw:
        raise ValueError("a frame body cannot be empty")
    if len(raw) > max_frame:
        raise ValueError(f"frame body of {len(raw)} bytes exceeds max_frame {max_frame}")
    return len(raw).to_bytes(HEADER_SIZE, "big") + raw


class FrameDecoder:
    """Incremental, sans-I/O frame decoder.

    Feed it bytes as they arrive with :meth:`feed`, then call :meth:`next_body` until it
    returns ``None``; call :meth:`eof` when the stream ends. A frame's length is checked as
    soon as its 4 header bytes are buffered, before any of its body is waited for: a
    declared length above ``max_frame`` raises :class:`~novakms.errors.FrameTooLarge`, a
    zero length :class:`~novakms.errors.ProtocolError`. After any such error the decoder is
    failed for good and every later call raises again (the connection must be closed).

    Args:
        max_frame: the largest body length accepted (1..2**32-1).

    Raises:
        ValueError: ``max_frame`` out of range.
    """

    def __init__(self, *, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        _check_max_frame(max_frame)
        self._max_frame = max_frame
        # Unconsumed bytes, starting at a frame boundary. Consumed prefixes are deleted with
        # ``del buf[:n]``, which CPython's bytearray does in O(1) (it moves its start
        # pointer), and appends are amortised O(1): no quadratic copying for big frames.
        self._buf = bytearray()
        # Body length of the frame at the front of the buffer once its header was checked.
        self._body_len: int | None = None
        self._error: ProtocolError | None = None
        self._eof = False

    @property
    def max_frame(self) -> int:
        """The largest body length this decoder accepts."""
        return self._max_frame

    def set_max_frame(self, max_frame: int) -> None:
        """Change the accepted body length from the next unchecked header on.

        The server uses this to move from the small handshake limit to the session's limit
        once ``Ready`` is sent (PROTOCOL.md §10). A header already checked is checked again
        against the new limit.

        Raises:
            ValueError: ``max_frame`` out of range.
            FrameTooLarge: the frame at the front of the buffer exceeds the new limit.
        """
        _check_max_frame(max_frame)
        self._raise_if_failed()
        self._max_frame = max_frame
        if self._body_len is not None:
            self._check_length(self._body_len)

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as part of a body (headers included)."""
        return len(self._buf)

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            # A fresh exception of the same class each time, chained to the original.
            err = self._error
            raise type(err)(f"frame decoder already failed: {err.message}") from err

    def _fail(self, err: ProtocolError) -> ProtocolError:
        self._error = err
        return err

    def _check_length(self, length: int) -> None:
        if length == 0:
            raise self._fail(ProtocolError("frame: zero body length"))
        if length > self._max_frame:
            raise self._fail(
                FrameTooLarge(f"frame: body length {length} exceeds max_frame {self._max_frame}")
            )

    def _parse_header(self) -> int | None:
        """Body length of the front frame, checking its header once it is complete."""
        if self._body_len is None:
            if len(self._buf) < HEADER_SIZE:
                return None
            length = int.from_bytes(self._buf[:HEADER_SIZE], "big")
            self._check_length(length)
            self._body_len = length
        return self._body_len

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes.

        The header of the frame at the front of the buffer is checked here already, so an
        oversize or zero length is reported without buffering its body. An empty ``data``
        is a no-op (end of stream is signalled with :meth:`eof`, not with ``b""``).

        Args:
            data: bytes read from the stream.

        Raises:
            FrameTooLarge: the front frame declares a length above ``max_frame``.
            ProtocolError: the front frame declares a zero length, or the decoder already
                failed.
            RuntimeError: called after :meth:`eof` (caller bug).
        """
        self._raise_if_failed()
        if self._eof:
            raise RuntimeError("feed() after eof()")
        self._buf += data
        self._parse_header()

    def next_body(self) -> bytes | None:
        """Take the next complete frame body.

        Returns:
            The raw body bytes (not CBOR-decoded: callers may need to hash or decrypt them
            first), or ``None`` if more data is needed.

        Raises:
            FrameTooLarge: the next frame declares a length above ``max_frame``.
            ProtocolError: the next frame declares a zero length, or the decoder already
                failed.
        """
        if self._error is not None:
            self._raise_if_failed()
        buf = self._buf
        length = self._body_len
        if length is None:  # the header, checked here unless feed() did already
            if len(buf) < HEADER_SIZE:
                return None
            (length,) = _HEADER.unpack_from(buf)
            if not 0 < length <= self._max_frame:
                self._check_length(length)  # raises
            self._body_len = length
        stop = HEADER_SIZE + length
        if len(buf) < stop:
            return None
        body = buf[HEADER_SIZE:stop]
        del buf[:stop]
        self._body_len = None
        return bytes(body)

    def eof(self) -> None:
        """Signal the end of the stream.

        Frames that are complete but not yet taken stay available from :meth:`next_body`;
        ending between frames is an orderly close. Idempotent.

        Raises:
            FrameTooLarge: a buffered frame header declares a length above ``max_frame``.
            ProtocolError: the stream ended inside a frame (after 1..3 header bytes or
                before the whole body), a buffered header declares a zero length, or the
                decoder already failed.
        """
        self._raise_if_failed()
        self._eof = True
        # Walk the complete frames still buffered; whatever is left must be nothing.
        buf = self._buf
        size = len(buf)
        pos = 0
        length = self._parse_header()
        while pos < size:
            if length is None:
                if size - pos < HEADER_SIZE:
                    raise self._fail(ProtocolError("frame: end of stream inside a frame header"))
                length = int.from_bytes(buf[pos : pos + HEADER_SIZE], "big")
                self._check_length(length)
            pos += HEADER_SIZE + length
            if pos > size:
                raise self._fail(ProtocolError("frame: end of stream inside a frame body"))
            length = None


def decode_body(body: bytes | bytearray | memoryview, *, max_depth: int = cbor.MAX_DEPTH) -> Any:
    """Decode a frame body as exactly one item of the CBOR subset.

    Args:
        body: a body returned by :meth:`FrameDecoder.next_body`.
        max_depth: maximum container nesting depth.

    Returns:
        The decoded item.

    Raises:
        ProtocolError: the body is not exactly one well-formed item of the subset.
    """
    return cbor.decode(body, max_depth=max_depth)
