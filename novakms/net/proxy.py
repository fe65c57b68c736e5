"""Dialing a TCP host through an HTTP CONNECT proxy (RFC 9110 §9.3.6).

An enclave has no network of its own: its egress proxy, reached over vsock or a local socket,
opens TCP connections to other hosts on its behalf. The client asks for a tunnel with
``CONNECT host:port``; after a ``2xx`` answer the same byte stream carries the tunnelled
connection, so the secure channel runs end to end and the proxy sees only ciphertext.

:func:`connect_request` and :func:`split_reply` are the sans-I/O half, shared with the
blocking client; :func:`open_via_proxy` is the trio dialer.
"""

from __future__ import annotations

import trio

from novakms.errors import TransportError
from novakms.net.addresses import Address
from novakms.net.sockets import open_stream

__all__ = ["MAX_HEAD", "connect_request", "open_via_proxy", "split_reply"]

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


class _PrefixedStream(trio.abc.Stream):
    """A stream whose first received bytes are ``prefix``, then those of ``stream``.

    The proxy may send the first tunnelled bytes in the same segment as its reply head.
    """

    def __init__(self, stream: trio.abc.Stream, prefix: bytes) -> None:
        self._stream = stream
        self._prefix = prefix

    @property
    def socket(self) -> trio.socket.SocketType | None:
        """The inner stream's socket, if it has one (read by ``connection_source``)."""
        sock: trio.socket.SocketType | None = getattr(self._stream, "socket", None)
        return sock

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if not self._prefix:
            return await self._stream.receive_some(max_bytes)
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        await trio.lowlevel.checkpoint()
        cut = len(self._prefix) if max_bytes is None else max_bytes
        data, self._prefix = self._prefix[:cut], self._prefix[cut:]
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        self._prefix = b""  # a closed stream must not go on yielding buffered bytes
        await self._stream.aclose()


async def _read_reply(stream: trio.abc.Stream, target: Address, max_head: int) -> bytes:
    """Read the proxy's reply head; returns the tunnelled bytes that came after it."""
    received = b""
    while (tunnelled := split_reply(received, target, max_head=max_head)) is None:
        chunk = await stream.receive_some(max_head)
        if not chunk:
            raise TransportError(f"the proxy closed the connection during CONNECT {target}")
        received += chunk
    return tunnelled


async def open_via_proxy(
    proxy: Address, target: Address, *, max_head: int = MAX_HEAD
) -> trio.abc.Stream:
    """Open a tunnel to the tcp ``target`` through the HTTP CONNECT proxy at ``proxy``.

    Args:
        proxy: where the proxy listens (tcp, unix or vsock).
        target: the tcp address to reach.
        max_head: the largest reply head accepted from the proxy.

    Returns:
        A stream carrying the tunnelled connection.

    Raises:
        TransportError: ``target`` is not tcp, the proxy cannot be reached, closed the
            connection or answered badly, or refused the tunnel (status code and reason named).
    """
    request = connect_request(target)
    stream = await open_stream(proxy)
    try:
        await stream.send_all(request)
        tunnelled = await _read_reply(stream, target, max_head)
    except trio.BrokenResourceError:
        await trio.aclose_forcefully(stream)
        raise TransportError(f"connection to the proxy lost during CONNECT {target}") from None
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return _PrefixedStream(stream, tunnelled) if tunnelled else stream
