"""PROXY protocol v2 header parsing (PROTOCOL.md §2.1): whole, byte by byte, and hostile."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from novakms.errors import ProtocolError
from novakms.wire.proxy_header import MAX_HEADER, SIGNATURE, ProxyHeader, encode_v2, parse_v2


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8::1", "2001:db8::1"),
        ("::ffff:10.1.2.3", "10.1.2.3"),
    ],
)
def test_round_trip_with_trailing_frames(source: str, expected: str) -> None:
    header = encode_v2(source, 4242)
    parsed = parse_v2(header + b"\x00\x00\x00\x05hello")
    assert parsed == (ProxyHeader(source=expected, source_port=4242), b"\x00\x00\x00\x05hello")


def test_byte_at_a_time_needs_exactly_the_header() -> None:
    header = encode_v2("192.0.2.1", 1)
    for n in range(len(header)):
        assert parse_v2(header[:n]) is None
    assert parse_v2(header) == (ProxyHeader(source="192.0.2.1", source_port=1), b"")


def test_local_and_unspecified_families_keep_the_socket_source() -> None:
    assert parse_v2(encode_v2(None)) == (ProxyHeader(source=None), b"")
    unspec = SIGNATURE + b"\x21\x00\x00\x00"
    assert parse_v2(unspec) == (ProxyHeader(source=None), b"")


def test_tlvs_after_the_addresses_are_skipped() -> None:
    base = encode_v2("192.0.2.1", 7)
    tlv = b"\x04\x00\x03abc"
    header = base[:14] + (12 + len(tlv)).to_bytes(2, "big") + base[16:] + tlv
    assert parse_v2(header + b"rest") == (ProxyHeader(source="192.0.2.1", source_port=7), b"rest")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"GET / HTTP/1.1\r\n", "bad signature"),
        (b"\x00\x00\x00\x3c", "bad signature"),  # a plain frame prefix on a proxied listener
        (SIGNATURE + b"\x11\x11\x00\x0c", "version or command"),  # v1 command byte
        (SIGNATURE + b"\x22\x11\x00\x0c", "version or command"),
        (SIGNATURE + b"\x21\x11" + (MAX_HEADER).to_bytes(2, "big"), "exceeds"),
        (SIGNATURE + b"\x21\x11\x00\x04" + bytes(4), "IPv4 address block too short"),
        (SIGNATURE + b"\x21\x21\x00\x0c" + bytes(12), "IPv6 address block too short"),
    ],
)
def test_malformed_headers_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        parse_v2(data)


def test_a_wrong_signature_fails_on_its_first_byte() -> None:
    with pytest.raises(ProtocolError):
        parse_v2(b"X")


@given(st.binary(max_size=600))
def test_arbitrary_bytes_parse_or_fail_cleanly(data: bytes) -> None:
    try:
        result = parse_v2(data)
    except ProtocolError:
        return
    if result is not None:
        header, rest = result
        assert data.endswith(rest)


@given(st.binary(max_size=64))
def test_any_prefix_of_signature_plus_noise_never_crashes(noise: bytes) -> None:
    for cut in range(len(SIGNATURE) + 1):
        with contextlib.suppress(ProtocolError):
            parse_v2(SIGNATURE[:cut] + noise)
