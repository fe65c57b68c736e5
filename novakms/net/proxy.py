"""Dialing a TCP host through an HTTP CONNECT proxy (the trio half; the exchange itself is the
pure :mod:`novakms.wire.http_connect`).
"""

from __future__ import annotations

import trio

from novakms.errors import NetworkError
from novakms.net.addresses import Address
from novakms.net.sockets import connect_direct
from novakms.wire.http_connect import MAX_HEAD, connect_request, split_reply

__all__ = ["open_via_proxy"]


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
            raise NetworkError(f"the proxy closed the connection during CONNECT {target}")
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
    stream = await connect_direct(proxy)
    try:
        await stream.send_all(request)
        tunnelled = await _read_reply(stream, target, max_head)
    except trio.BrokenResourceError:
        await trio.aclose_forcefully(stream)
        raise NetworkError(f"connection to the proxy lost during CONNECT {target}") from None
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return _PrefixedStream(stream, tunnelled) if tunnelled else stream
