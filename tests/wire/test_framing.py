"""Tests of the length-prefixed framing (PROTOCOL.md §2)."""

from __future__ import annotations

import contextlib
import itertools
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from novakms.errors import FrameTooLarge, ProtocolError
from novakms.wire.cbor import MAX_DEPTH, encode
from novakms.wire.framing import (
    DEFAULT_MAX_FRAME,
    HEADER_SIZE,
    FrameDecoder,
    decode_body,
    encode_frame,
)


def u32(n: int) -> bytes:
    return n.to_bytes(4, "big")


def drain(dec: FrameDecoder) -> list[bytes]:
    out: list[bytes] = []
    while (body := dec.next_body()) is not None:
        out.append(body)
    return out


def feed_and_poll(dec: FrameDecoder, data: bytes) -> bytes | None:
    """Feed then ask for a body (errors may come from either call)."""
    dec.feed(data)
    return dec.next_body()


def feed_chunks(chunks: list[bytes], *, max_frame: int = DEFAULT_MAX_FRAME) -> list[bytes]:
    """Feed chunks one by one, draining after each, then signal eof."""
    dec = FrameDecoder(max_frame=max_frame)
    bodies: list[bytes] = []
    for chunk in chunks:
        dec.feed(chunk)
        bodies += drain(dec)
    dec.eof()
    bodies += drain(dec)
    assert dec.buffered == 0
    return bodies


def test_constants() -> None:
    assert HEADER_SIZE == 4
    assert DEFAULT_MAX_FRAME == 2 * 1024 * 1024


# --------------------------------------------------------------------------------------------
# encode_frame
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "hex_out"),
    [
        (b"\xa0", "00000001a0"),
        (b"\x01\x02", "000000020102"),
        (b"x" * 300, "0000012c" + "78" * 300),
    ],
)
def test_encode_frame_vectors(body: bytes, hex_out: str) -> None:
    assert encode_frame(body).hex() == hex_out


def test_encode_frame_limits() -> None:
    assert encode_frame(b"abcd", max_frame=4) == u32(4) + b"abcd"
    with pytest.raises(ValueError, match="exceeds"):
        encode_frame(b"abcde", max_frame=4)
    with pytest.raises(ValueError, match="empty"):
        encode_frame(b"")
    with pytest.raises(ValueError, match="exceeds"):
        encode_frame(b"x" * (DEFAULT_MAX_FRAME + 1))
    assert len(encode_frame(b"x" * DEFAULT_MAX_FRAME)) == DEFAULT_MAX_FRAME + 4


def test_encode_frame_accepts_buffers() -> None:
    assert encode_frame(bytearray(b"\x01")) == b"\x00\x00\x00\x01\x01"
    assert encode_frame(memoryview(b"\x00\x01")[1:]) == b"\x00\x00\x00\x01\x01"


@pytest.mark.parametrize("max_frame", [0, -1, 2**32])
def test_max_frame_must_fit_a_u32(max_frame: int) -> None:
    with pytest.raises(ValueError, match="max_frame"):
        FrameDecoder(max_frame=max_frame)
    with pytest.raises(ValueError, match="max_frame"):
        encode_frame(b"x", max_frame=max_frame)


# --------------------------------------------------------------------------------------------
# FrameDecoder: hand-written cases
# --------------------------------------------------------------------------------------------

VALID_STREAMS = {
    "empty-stream": ("", []),
    "one": ("00000001a0", ["a0"]),
    "two": ("00000001a0" + "000000028101", ["a0", "8101"]),
    "body-looks-like-header": ("0000000400000001", ["00000001"]),
    "max-frame-exact": ("00000008" + "11" * 8, ["11" * 8]),
}


@pytest.mark.parametrize(("hex_in", "expected"), VALID_STREAMS.values(), ids=VALID_STREAMS.keys())
def test_valid_streams(hex_in: str, expected: list[str]) -> None:
    data = bytes.fromhex(hex_in)
    want = [bytes.fromhex(b) for b in expected]
    assert feed_chunks([data], max_frame=8) == want
    assert feed_chunks([data[i : i + 1] for i in range(len(data))], max_frame=8) == want


INVALID_STREAMS = {
    "zero-length": ("00000000", ProtocolError),
    "zero-length-after-frame": ("00000001a0" + "00000000", ProtocolError),
    "oversize": ("00000009" + "11" * 9, FrameTooLarge),
    "oversize-header-only": ("00000009", FrameTooLarge),
    "huge-header": ("ffffffff", FrameTooLarge),
    "eof-mid-header-1": ("00", ProtocolError),
    "eof-mid-header-3": ("000000", ProtocolError),
    "eof-after-header": ("00000002", ProtocolError),
    "eof-mid-body": ("0000000211", ProtocolError),
    "eof-mid-second-header": ("00000001a0" + "0000", ProtocolError),
}


@pytest.mark.parametrize(("hex_in", "error"), INVALID_STREAMS.values(), ids=INVALID_STREAMS.keys())
def test_invalid_streams(hex_in: str, error: type[ProtocolError]) -> None:
    data = bytes.fromhex(hex_in)
    for chunks in ([data], [data[i : i + 1] for i in range(len(data))]):
        with pytest.raises(error):
            feed_chunks(chunks, max_frame=8)


@pytest.mark.parametrize("size", [1, 2, 3])
def test_eof_mid_header(size: int) -> None:
    dec = FrameDecoder()
    dec.feed(encode_frame(b"\x01") + b"\x00" * size)
    with pytest.raises(ProtocolError, match="header"):
        dec.eof()


def test_next_body_needs_more_data() -> None:
    dec = FrameDecoder()
    assert dec.next_body() is None
    dec.feed(b"\x00\x00")
    assert dec.next_body() is None
    assert dec.buffered == 2
    dec.feed(b"\x00\x03\x01")
    assert dec.next_body() is None
    assert dec.buffered == 5
    dec.feed(b"\x02\x03\x00")
    assert dec.next_body() == b"\x01\x02\x03"
    assert dec.buffered == 1
    assert dec.next_body() is None


def test_body_is_raw_bytes_not_decoded() -> None:
    dec = FrameDecoder()
    dec.feed(encode_frame(b"\xff\xff"))  # not CBOR at all: framing does not care
    body = dec.next_body()
    assert type(body) is bytes
    assert body == b"\xff\xff"


def test_empty_feed_is_a_noop() -> None:
    dec = FrameDecoder()
    dec.feed(b"")
    assert dec.next_body() is None
    dec.feed(encode_frame(b"\x01"))
    dec.feed(b"")
    assert dec.next_body() == b"\x01"


@pytest.mark.parametrize("length", [1025, 2**32 - 1])
def test_oversize_detected_from_the_header_alone(length: int) -> None:
    dec = FrameDecoder(max_frame=1024)
    header = u32(length)
    for byte in header[:3]:
        dec.feed(bytes([byte]))
        assert dec.next_body() is None
    # The 4th header byte completes the header: rejected before any body byte arrives.
    with pytest.raises(FrameTooLarge):
        feed_and_poll(dec, header[3:])


def test_feed_itself_checks_the_front_header() -> None:
    dec = FrameDecoder(max_frame=1024)
    with pytest.raises(FrameTooLarge):
        dec.feed(u32(1025))


def test_max_frame_header_is_accepted_then_waits_for_body() -> None:
    dec = FrameDecoder(max_frame=1024)
    dec.feed(u32(1024))
    assert dec.next_body() is None
    dec.feed(b"x" * 1023)
    assert dec.next_body() is None
    dec.feed(b"x")
    assert dec.next_body() == b"x" * 1024


def test_zero_length_rejected_from_the_header_alone() -> None:
    dec = FrameDecoder()
    with pytest.raises(ProtocolError) as info:
        feed_and_poll(dec, u32(0))
    assert not isinstance(info.value, FrameTooLarge)


def test_valid_frames_before_a_bad_header_are_delivered() -> None:
    dec = FrameDecoder(max_frame=16)
    dec.feed(encode_frame(b"\x01") + encode_frame(b"\x02") + u32(17))
    assert dec.next_body() == b"\x01"
    assert dec.next_body() == b"\x02"
    with pytest.raises(FrameTooLarge):
        dec.next_body()


def test_decoder_stays_failed() -> None:
    dec = FrameDecoder(max_frame=16)
    with pytest.raises(FrameTooLarge):
        dec.feed(u32(17))
    with pytest.raises(FrameTooLarge):
        dec.next_body()
    with pytest.raises(FrameTooLarge):
        dec.feed(b"x" * 17)
    with pytest.raises(FrameTooLarge):
        dec.eof()

    dec = FrameDecoder()
    dec.feed(b"\x00\x00")
    with pytest.raises(ProtocolError):
        dec.eof()
    with pytest.raises(ProtocolError):
        dec.next_body()
    with pytest.raises(ProtocolError):
        dec.eof()


def test_eof_keeps_complete_frames_available() -> None:
    dec = FrameDecoder()
    dec.feed(encode_frame(b"\x01") + encode_frame(b"\x02"))
    dec.eof()
    dec.eof()  # idempotent
    assert drain(dec) == [b"\x01", b"\x02"]
    assert dec.buffered == 0


def test_eof_with_complete_frames_then_partial_one() -> None:
    dec = FrameDecoder()
    dec.feed(encode_frame(b"\x01") + encode_frame(b"\x02\x03")[:-1])
    with pytest.raises(ProtocolError, match="body"):
        dec.eof()


def test_eof_checks_buffered_headers() -> None:
    dec = FrameDecoder(max_frame=4)
    dec.feed(encode_frame(b"\x01") + u32(5) + b"12345")
    with pytest.raises(FrameTooLarge):
        dec.eof()


def test_feed_after_eof_is_a_caller_bug() -> None:
    dec = FrameDecoder()
    dec.eof()
    with pytest.raises(RuntimeError):
        dec.feed(b"\x00")


def test_large_frame_in_64k_chunks() -> None:
    body = bytes(range(256)) * (DEFAULT_MAX_FRAME // 256)
    stream = encode_frame(body) + encode_frame(b"\xa0")
    dec = FrameDecoder()
    chunk = 64 * 1024
    got: list[bytes] = []
    for start in range(0, len(stream), chunk):
        dec.feed(stream[start : start + chunk])
        got += drain(dec)
    dec.eof()
    assert got == [body, b"\xa0"]


# --------------------------------------------------------------------------------------------
# FrameDecoder: properties
# --------------------------------------------------------------------------------------------

bodies_st = st.lists(st.binary(min_size=1, max_size=300), max_size=8)


@st.composite
def split_stream(draw: st.DrawFn) -> tuple[list[bytes], list[bytes]]:
    """A list of bodies and their framed concatenation cut at random points."""
    bodies = draw(bodies_st)
    stream = b"".join(encode_frame(b) for b in bodies)
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    bounds = [0, *cuts, len(stream)]
    chunks = [stream[a:b] for a, b in itertools.pairwise(bounds)]
    return bodies, chunks


@given(split_stream())
def test_chunking_does_not_matter(case: tuple[list[bytes], list[bytes]]) -> None:
    bodies, chunks = case
    stream = b"".join(chunks)
    assert feed_chunks([stream]) == bodies
    assert feed_chunks(chunks) == bodies
    assert feed_chunks([stream[i : i + 1] for i in range(len(stream))]) == bodies


@given(split_stream())
def test_feeding_everything_before_draining(case: tuple[list[bytes], list[bytes]]) -> None:
    bodies, chunks = case
    dec = FrameDecoder()
    for chunk in chunks:
        dec.feed(chunk)
    assert dec.buffered == sum(len(c) for c in chunks)
    dec.eof()
    assert drain(dec) == bodies


@given(st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=8), st.data())
def test_truncated_stream_fails_at_eof(bodies: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(encode_frame(b) for b in bodies)
    boundaries = set(itertools.accumulate(HEADER_SIZE + len(b) for b in bodies))
    cut = data.draw(st.sampled_from([c for c in range(1, len(stream)) if c not in boundaries]))
    with pytest.raises(ProtocolError):
        feed_chunks([stream[:cut]])


# --------------------------------------------------------------------------------------------
# decode_body and fuzzing
# --------------------------------------------------------------------------------------------


def test_decode_body() -> None:
    msg = {"id": 7, "op": "derive", "args": {"path": "app/key", "length": 32}}
    dec = FrameDecoder()
    dec.feed(encode_frame(encode(msg)))
    body = dec.next_body()
    assert body is not None
    assert decode_body(body) == msg
    with pytest.raises(ProtocolError):
        decode_body(body + b"\x00")


def test_decode_body_max_depth() -> None:
    deep = b"\x81" * MAX_DEPTH + b"\x80"
    with pytest.raises(ProtocolError):
        decode_body(deep)
    assert decode_body(deep, max_depth=MAX_DEPTH + 1) is not None


def _feed_and_decode(chunks: list[bytes]) -> list[Any]:
    """Run chunks through a small decoder and decode every body; only ProtocolError may
    escape (the caller catches it)."""
    dec = FrameDecoder(max_frame=1024)
    out: list[Any] = []
    for chunk in chunks:
        dec.feed(chunk)
        while (body := dec.next_body()) is not None:
            try:
                out.append(decode_body(body))
            except ProtocolError:
                out.append(None)
    dec.eof()
    return out


@given(st.lists(st.binary(max_size=64), max_size=8))
def test_random_bytes_raise_only_protocol_error(chunks: list[bytes]) -> None:
    with contextlib.suppress(ProtocolError):
        _feed_and_decode(chunks)


@given(st.lists(st.binary(min_size=1, max_size=64), max_size=8), st.binary(max_size=8))
def test_random_bodies_raise_only_protocol_error(bodies: list[bytes], tail: bytes) -> None:
    # Well-framed random bodies reach the CBOR decoder instead of failing on the header.
    stream = b"".join(encode_frame(b) for b in bodies) + tail
    try:
        decoded = _feed_and_decode([stream])
    except ProtocolError:
        assert tail  # only a partial trailing frame can fail the framing layer here
    else:
        assert len(decoded) == len(bodies) + (1 if tail else 0)


def test_the_receive_limit_can_change_between_frames() -> None:
    decoder = FrameDecoder(max_frame=16)
    decoder.feed(encode_frame(b"\x00", max_frame=16))
    decoder.set_max_frame(2048)
    decoder.feed((1000).to_bytes(4, "big"))  # accepted now
    assert decoder.next_body() == b"\x00"
    assert decoder.next_body() is None  # its header is checked: 1000 <= 2048
    with pytest.raises(FrameTooLarge):
        decoder.set_max_frame(999)  # the frame already announced no longer fits
