"""The PROXY protocol version 2 header (HAProxy's spec, as sent by HAProxy, nginx and AWS NLB).

A listener configured with ``proxy=v2`` expects every connection to start with this binary
header, written by the proxy in front of the node (inside a Nitro enclave: the parent's
forwarder). It carries the real client address, which the node then uses for every per-source
limit (handshake rate, connection caps, anonymous request bucket) instead of the proxy's own
address. PROTOCOL.md §2.1 is the normative summary.

Layout (all integers big-endian)::

    signature  12 bytes  \\r\\n\\r\\n\\0\\r\\nQUIT\\n
    ver_cmd     1 byte   0x20 LOCAL (health check by the proxy) | 0x21 PROXY
    family      1 byte   0x11 TCP/IPv4 | 0x21 TCP/IPv6 | 0x00 UNSPEC (+ others, ignored)
    length      2 bytes  bytes that follow (addresses + TLVs)
    addresses            IPv4: src(4) dst(4) sport(2) dport(2); IPv6: src(16) dst(16) sport dport

Pure and sans-I/O, like :mod:`novakms.wire.framing`: feed it the first bytes of a connection,
get back the parsed header and whatever bytes followed it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final

from novakms.errors import ProtocolError

__all__ = ["MAX_HEADER", "SIGNATURE", "ProxyHeader", "encode_v2", "parse_v2"]

SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
_FIXED: Final = 16
#: The longest header accepted (fixed part + addresses + TLVs). Proxies send 28 (IPv4) or 52
#: (IPv6) bytes plus optional TLVs; anything longer is refused before it is buffered.
MAX_HEADER: Final = 512

_LOCAL: Final = 0x20
_PROXY: Final = 0x21
_TCP4: Final = 0x11
_TCP6: Final = 0x21


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A parsed header: ``source`` is the client's IP, or None for LOCAL / unknown families."""

    source: str | None
    source_port: int = 0


def parse_v2(data: bytes | bytearray) -> tuple[ProxyHeader, bytes] | None:
    """Parse a PROXY v2 header at the start of ``data``.

    Args:
        data: the bytes received so far on the connection.

    Returns:
        ``(header, rest)`` once the whole header is present (``rest`` is what followed it), or
        None when more bytes are needed.

    Raises:
        ProtocolError: not a PROXY v2 header (wrong signature, version or command), a length
            above :data:`MAX_HEADER`, or an address block too short for its family. Checked
            on as few bytes as possible: a wrong signature fails on its first differing byte.
    """
    head = bytes(data[:_FIXED])
    if not SIGNATURE.startswith(head[: len(SIGNATURE)]):
        raise ProtocolError("PROXY header: bad signature")
    if len(head) < _FIXED:
        return None
    ver_cmd, family = head[12], head[13]
    if ver_cmd not in (_LOCAL, _PROXY):
        raise ProtocolError("PROXY header: unsupported version or command")
    length = int.from_bytes(head[14:16], "big")
    if _FIXED + length > MAX_HEADER:
        raise ProtocolError(f"PROXY header: length {length} exceeds {MAX_HEADER - _FIXED}")
    if len(data) < _FIXED + length:
        return None
    block = bytes(data[_FIXED : _FIXED + length])
    rest = bytes(data[_FIXED + length :])
    if ver_cmd == _LOCAL:
        return ProxyHeader(source=None), rest
    if family == _TCP4:
        if length < 12:
            raise ProtocolError("PROXY header: IPv4 address block too short")
        ip = str(ipaddress.IPv4Address(block[0:4]))
        return ProxyHeader(source=ip, source_port=int.from_bytes(block[8:10], "big")), rest
    if family == _TCP6:
        if length < 36:
            raise ProtocolError("PROXY header: IPv6 address block too short")
        ip6 = ipaddress.IPv6Address(block[0:16])
        mapped = ip6.ipv4_mapped
        ip = str(mapped) if mapped is not None else str(ip6)
        return ProxyHeader(source=ip, source_port=int.from_bytes(block[32:34], "big")), rest
    # UNSPEC, UDP and unix families carry no usable client IP: the connection's own source stays.
    return ProxyHeader(source=None), rest


def encode_v2(source: str | None, source_port: int = 0, *, dest: str | None = None) -> bytes:
    """Build a PROXY v2 header (for tests, benchmarks and the parent-side bridge).

    Args:
        source: the client's IPv4 or IPv6 address; None builds a LOCAL header.
        source_port: the client's port.
        dest: the address the client connected to (defaults to the unspecified address).
    """
    if source is None:
        return SIGNATURE + bytes((_LOCAL, 0)) + (0).to_bytes(2, "big")
    src = ipaddress.ip_address(source)
    if src.version == 4:
        dst = ipaddress.IPv4Address(dest or "0.0.0.0")
        block = src.packed + dst.packed
        family = _TCP4
    else:
        dst6 = ipaddress.IPv6Address(dest or "::")
        block = src.packed + dst6.packed
        family = _TCP6
    block += source_port.to_bytes(2, "big") + (0).to_bytes(2, "big")
    return SIGNATURE + bytes((_PROXY, family)) + len(block).to_bytes(2, "big") + block
