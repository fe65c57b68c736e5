"""A small, real HTTP CONNECT proxy on 127.0.0.1 with switchable faults (tests only).

It plays an enclave's egress proxy: ``CONNECT host:port HTTP/1.1`` opens a TCP connection to
``host:port`` and, after ``200``, pumps bytes both ways until either side closes. Replies:

* ``403 Forbidden`` — the target is blocked (:meth:`ConnectProxy.block`, :meth:`isolate`);
* ``502 Bad Gateway`` — the target cannot be reached;
* ``400 Bad Request`` — the request line is not ``CONNECT host:port HTTP/1.x``.

Blocking a target also *cuts* its open tunnels: both the client and the target side see the
connection closed, as when a network path fails. :meth:`ConnectProxy.isolate_after` arms a
deterministic cut in the middle of a transfer: isolation once so many bytes came back through.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Callable

import trio

__all__ = ["ConnectProxy", "connect_proxy"]

_MAX_HEAD = 8192


class _BadRequest(Exception):
    """The client's request head is not a CONNECT this proxy understands."""


async def _read_head(stream: trio.abc.Stream) -> tuple[bytes, bytes]:
    """The request head (up to the blank line) and any bytes the client sent after it."""
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        if len(buffer) > _MAX_HEAD:
            raise _BadRequest
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise _BadRequest
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    return head, rest


def _parse_target(head: bytes) -> tuple[str, str, int]:
    """``(target, host, port)`` from ``CONNECT target HTTP/1.x``; target as the client wrote it."""
    parts = head.split(b"\r\n", 1)[0].split(b" ")
    if len(parts) != 3 or parts[0] != b"CONNECT" or not parts[2].startswith(b"HTTP/1."):
        raise _BadRequest
    target = parts[1].decode("ascii", errors="replace")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise _BadRequest
    return target, host.removeprefix("[").removesuffix("]"), int(port)


async def _reply(stream: trio.abc.Stream, status: str) -> None:
    """Send a reply head (no body: errors are followed by close); a client gone is no error."""
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await stream.send_all(f"HTTP/1.1 {status}\r\n\r\n".encode())


async def _pump(
    source: trio.abc.Stream,
    sink: trio.abc.Stream,
    done: trio.CancelScope,
    relayed: Callable[[int], None] = lambda _n: None,
) -> None:
    """Copy ``source`` to ``sink`` until either side ends; then end the whole tunnel."""
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        while data := await source.receive_some(65536):
            await sink.send_all(data)
            relayed(len(data))
    done.cancel()


class ConnectProxy:
    """The proxy's control surface (see the module docstring).

    Attributes:
        address: ``127.0.0.1:PORT``, where it listens.
        tunnels: tunnels ever opened (answered ``200``).
        open_tunnels: tunnels open now.
        targets: every target asked for (parsed requests, blocked ones too), in order.
    """

    def __init__(self) -> None:
        self.address = ""
        self.tunnels = 0
        self.open_tunnels = 0
        self.targets: list[str] = []
        self.relayed = 0  # bytes passed from targets back to clients
        self._trip_at: int | None = None
        self._blocked: set[str] = set()
        self._isolated = False
        # Every connection past its request line, by cancel scope: cancelling one cuts it.
        self._live: dict[trio.CancelScope, str] = {}

    def block(self, target: str) -> None:
        """Refuse new tunnels to ``target`` (``host:port``) and cut the open ones."""
        self._blocked.add(target)
        self._cut(lambda live: live == target)

    def unblock(self, target: str) -> None:
        """Allow ``target`` again (has no effect while isolated)."""
        self._blocked.discard(target)

    def isolate(self) -> None:
        """Refuse every target and cut every tunnel."""
        self._isolated = True
        self._cut(lambda _live: True)

    def isolate_after(self, nbytes: int) -> None:
        """:meth:`isolate` as soon as ``nbytes`` more bytes have come back from targets."""
        self._trip_at = self.relayed + nbytes

    def _count(self, nbytes: int) -> None:
        self.relayed += nbytes
        if self._trip_at is not None and self.relayed >= self._trip_at:
            self._trip_at = None
            self.isolate()

    def heal(self) -> None:
        """Clear every block, :meth:`isolate` included."""
        self._isolated = False
        self._blocked.clear()

    def _is_blocked(self, target: str) -> bool:
        return self._isolated or target in self._blocked

    def _cut(self, matches: Callable[[str], bool]) -> None:
        for scope, target in self._live.items():
            if matches(target):
                scope.cancel()  # the handler then closes both streams

    async def _handle(self, client: trio.SocketStream) -> None:
        async with client:  # closes the client side on every path, cancellation included
            try:
                head, early = await _read_head(client)
                target, host, port = _parse_target(head)
            except _BadRequest:
                await _reply(client, "400 Bad Request")
                return
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            self.targets.append(target)
            if self._is_blocked(target):
                await _reply(client, "403 Forbidden")
                return
            # Registered before dialing, so a block() while connecting cuts this one too.
            with trio.CancelScope() as scope:
                self._live[scope] = target
                try:
                    await self._tunnel(client, target, host, port, early)
                finally:
                    del self._live[scope]

    async def _tunnel(
        self, client: trio.SocketStream, target: str, host: str, port: int, early: bytes
    ) -> None:
        try:
            upstream = await trio.open_tcp_stream(host, port)
        except OSError:
            await _reply(client, "502 Bad Gateway")
            return
        async with upstream:  # closes the target side on every path
            await _reply(client, "200 Connection established")
            self.tunnels += 1
            self.open_tunnels += 1
            try:
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    # Sent by the client before our reply: already tunnel data.
                    await upstream.send_all(early)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_pump, client, upstream, nursery.cancel_scope)
                    nursery.start_soon(_pump, upstream, client, nursery.cancel_scope, self._count)
            finally:
                self.open_tunnels -= 1


@contextlib.asynccontextmanager
async def connect_proxy() -> AsyncIterator[ConnectProxy]:
    """Run a :class:`ConnectProxy` for the ``async with`` body; every socket is closed on exit."""
    proxy = ConnectProxy()
    async with trio.open_nursery() as nursery:
        serve = functools.partial(trio.serve_tcp, proxy._handle, 0, host="127.0.0.1")
        listeners = await nursery.start(serve)
        proxy.address = f"127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        try:
            yield proxy
        finally:
            nursery.cancel_scope.cancel()
