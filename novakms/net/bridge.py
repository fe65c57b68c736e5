"""The parent-side bridge: TCP in, vsock (or TCP) out, optionally announcing the client.

An enclave has no network interface: the EC2 parent instance accepts the apps' TCP connections
and forwards each one to the node's vsock listener. The bridge is that forwarder. It copies
bytes both ways and understands none of them (the secure channel runs end to end between the
app and the node, so the bridge only ever sees ciphertext). With ``proxy_protocol`` it first
writes a PROXY protocol v2 header (:func:`novakms.wire.proxy_header.encode_v2`) carrying the
client's real address, so a node listening with ``--listen-proxy`` applies its per-source
limits to the client, not to the parent.

Topology: one nursery for the listener and one task per connection, which runs one pump per
direction. A direction that reaches the end of its stream half-closes the other side
(``send_eof``) so that a client's close travels through; when both directions are done, or
either side breaks, both streams are closed. Connections beyond ``max_connections`` are closed
at once, before the upstream is dialed.
"""

from __future__ import annotations

import socket

import trio

from novakms.errors import TransportError
from novakms.log import get_logger
from novakms.net.addresses import Address
from novakms.net.sockets import connect_direct, listener_address, open_listener
from novakms.wire.proxy_header import encode_v2

__all__ = ["DEFAULT_MAX_CONNECTIONS", "Bridge"]

#: Connections forwarded at once; more are closed as they arrive.
DEFAULT_MAX_CONNECTIONS = 4096
_CHUNK = 65536


class Bridge:
    """Forwards every connection accepted on ``listen`` to ``to``.

    Args:
        listen: where to accept (tcp, unix or vsock; the parent uses tcp).
        to: where to forward (the node's vsock listener; tcp in tests).
        proxy_protocol: announce each client's address with a PROXY v2 header first.
        max_connections: connections forwarded at once.
        connect_timeout: seconds to reach ``to`` before the client's connection is closed.
    """

    def __init__(
        self,
        *,
        listen: Address,
        to: Address,
        proxy_protocol: bool = False,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        connect_timeout: float = 5.0,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.listen = listen
        self.to = to
        self.proxy_protocol = proxy_protocol
        self.connect_timeout = connect_timeout
        self.active = 0
        self.forwarded = 0
        self.refused = 0
        self._max = max_connections
        self._log = get_logger("novakms.bridge", to=str(to))

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Accept and forward until cancelled; ``task_status.started`` gets the bound address.

        Raises:
            OSError: ``listen`` cannot be bound.
        """
        listener = await open_listener(self.listen)
        address = listener_address(listener)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, self._forward, [listener])
            self._log.info("bridge_listening", address=address, proxy_protocol=self.proxy_protocol)
            task_status.started(address)

    async def _forward(self, client: trio.SocketStream) -> None:
        if self.active >= self._max:
            self.refused += 1
            await trio.aclose_forcefully(client)
            return
        self.active += 1
        try:
            upstream = await self._dial(client)
            if upstream is None:
                return
            async with upstream:
                self.forwarded += 1
                async with trio.open_nursery() as pumps:
                    pumps.start_soon(_pump, client, upstream, pumps.cancel_scope)
                    pumps.start_soon(_pump, upstream, client, pumps.cancel_scope)
        finally:
            self.active -= 1
            await trio.aclose_forcefully(client)

    async def _dial(self, client: trio.SocketStream) -> trio.abc.Stream | None:
        """The upstream stream with the PROXY header written, or None (logged) on failure."""
        header = _header_for(client.socket) if self.proxy_protocol else b""
        with trio.move_on_after(self.connect_timeout):
            try:
                upstream = await connect_direct(self.to)
            except TransportError as exc:
                self._log.warning("bridge_upstream_unreachable", error=exc.message)
                return None
            if header:
                try:
                    await upstream.send_all(header)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    await trio.aclose_forcefully(upstream)
                    return None
            return upstream
        self._log.warning("bridge_upstream_timeout", timeout=self.connect_timeout)
        return None


def _header_for(sock: trio.socket.SocketType) -> bytes:
    """The PROXY v2 header announcing ``sock``'s peer (LOCAL when it has no IP address)."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return encode_v2(None)
    peer, local = sock.getpeername(), sock.getsockname()
    source, port, dest = str(peer[0]), int(peer[1]), str(local[0])
    if sock.family == socket.AF_INET6 and source.startswith("::ffff:") and "." in source:
        source, dest = source.removeprefix("::ffff:"), dest.removeprefix("::ffff:")
        if ":" in dest:
            dest = "0.0.0.0"
    return encode_v2(source, port, dest=dest)


async def _pump(source: trio.abc.Stream, sink: trio.abc.Stream, scope: trio.CancelScope) -> None:
    """Copy ``source`` into ``sink`` until it ends; then half-close ``sink``.

    A broken stream on either side ends the whole connection (``scope``); otherwise the
    connection ends when both directions have.
    """
    try:
        while chunk := await source.receive_some(_CHUNK):
            await sink.send_all(chunk)
        if isinstance(sink, trio.abc.HalfCloseableStream):
            await sink.send_eof()
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        scope.cancel()
