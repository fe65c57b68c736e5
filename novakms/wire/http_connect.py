"""The HTTP CONNECT exchange (RFC 9110 §9.3.6), sans-I/O: the request and the reply's head.

An enclave has no network of its own: its egress proxy, reached over vsock or a local socket,
opens TCP connections to other hosts on its behalf. The client asks for a tunnel with
``CONNECT host:port``; after a ``2xx`` answer the same byte stream carries the tunnelled
connection, so the secure channel runs end to end and the proxy sees only ciphertext.

Pure: the trio dialer (:mod:`novakms.net.proxy`) and the blocking client
(:mod:`novakms.client.blocking`) both drive it.
"""

from __future__ import annotations

from novakms.errors import TransportError
from novakms.net.addresses import Address

__all__ = ["MAX_HEAD", "connect_request", "split_reply"]

MAX_HEAD = 8192
"""The largest reply head (status line and headers, with the blank line) accepted from a proxy."""

_END_OF_HEAD = b"\r\n\r\n"
_SHOWN = 100  # characters of a refusal's status line quoted in the error


def connect_request(target: Address) -> bytes:
    """The ``CONNECT`` request asking a proxy for a tunnel to ``target``.

    Raises:
        TransportError: ``target`` is not a tcp address, or its host cannot be written into an
            HTTP request line (spaces, control or non-ASCII characters).
    """
    if target.scheme != "tcp":
        raise TransportError(f"cannot dial {target} through a proxy: only tcp targets tunnel")
    authority = str(target)  # brackets an IPv6 host
    # The host is written into the request verbatim: refuse anything that could end the line
    # or smuggle a header (parse_address keeps inner whitespace and control characters).
    if not all("!" <= char <= "~" for char in authority):
        raise TransportError(f"cannot dial {authority!r} through a proxy: not a valid host name")
    return f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode("ascii")


def _printable(raw: bytes) -> str:
    """Peer-chosen bytes made safe to put into an error message (and so into a log line)."""
    text = raw.decode("ascii", errors="replace")
    return "".join(char if char.isprintable() else "?" for char in text)[:_SHOWN]


def split_reply(received: bytes, target: Address, *, max_head: int = MAX_HEAD) -> bytes | None:
    """Check a proxy's reply to ``CONNECT`` once its head is complete.

    Args:
        received: every byte received from the proxy so far.
        target: the address asked for (named in errors).
        max_head: the largest head accepted, blank line included.

    Returns:
        None while the head is incomplete; once it is complete and the status is ``2xx``, the
        bytes after it, which already belong to the tunnel (often ``b""``).

    Raises:
        TransportError: the head exceeds ``max_head``, the reply is not HTTP/1.x, or the proxy
            refused (the message names the status code and reason phrase).
    """
    end = received.find(_END_OF_HEAD, 0, max_head)
    if end < 0:
        if len(received) >= max_head:
            raise TransportError(f"the proxy's reply to CONNECT {target} exceeds {max_head} bytes")
        return None
    status_line = received[: received.find(b"\r\n")]
    version, _, rest = status_line.partition(b" ")
    code, _, _reason = rest.partition(b" ")
    if version not in (b"HTTP/1.0", b"HTTP/1.1") or len(code) != 3 or not code.isdigit():
        raise TransportError(
            f"the proxy answered CONNECT {target} with something that is not HTTP/1.x: "
            f"{_printable(status_line)!r}"
        )
    if not code.startswith(b"2"):
        raise TransportError(f"the proxy refused CONNECT {target}: {_printable(rest)}")
    return received[end + len(_END_OF_HEAD) :]
