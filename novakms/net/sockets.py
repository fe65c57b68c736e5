"""Listening on and connecting directly to TCP, Unix sockets and AF_VSOCK with one code path.

``trio.SocketListener`` accepts any stream socket, so the server needs no per-family code beyond
creating the socket here.

``open_listener(..., reuse_port=True)`` sets ``SO_REUSEPORT`` on a TCP listener, so that several
processes (each a stateless worker, docs/scaling.md) listen on one port and the kernel spreads
new connections over them. TCP only: Linux refuses the option on Unix and vsock sockets
(``EOPNOTSUPP`` on recent kernels), and vsock's bind ignores it on older ones.
"""

from __future__ import annotations

import os
import socket
import stat

import trio

from novakms.errors import ListenError, NetworkError, TransportError
from novakms.net.addresses import Address

__all__ = ["connect_direct", "connection_source", "listener_address", "open_listener"]

_AF_VSOCK = getattr(socket, "AF_VSOCK", object())  # never equal to a family without vsock


def _remove_stale_socket(path: str) -> None:
    """A socket file left by a crashed run blocks bind; remove sockets only, never other files."""
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass


async def open_listener(
    address: Address, *, backlog: int = 128, reuse_port: bool = False
) -> trio.SocketListener:
    """Bind and listen on ``address``.

    Args:
        address: where to listen.
        backlog: the accept queue's length.
        reuse_port: TCP only: set ``SO_REUSEPORT`` before binding, so that other sockets
            with the option (of the same user) may listen on the same address and port.

    Raises:
        ListenError: the address cannot be bound (in use, permission, no vsock support), or
            ``reuse_port`` was asked for a Unix or vsock address or where the platform lacks it.
    """
    try:
        if reuse_port:
            return await _open_tcp_reuse_port(address, backlog)
        return await _open_listener(address, backlog)
    except OSError as exc:
        raise ListenError(f"cannot listen on {address}: {exc.strerror or exc}") from exc


async def _open_tcp_reuse_port(address: Address, backlog: int) -> trio.SocketListener:
    """One TCP listener with ``SO_REUSEPORT``, on the first address ``address.host`` names.

    The options are those ``trio.open_tcp_listeners`` sets (``SO_REUSEADDR``, IPv6 only on an
    IPv6 socket), plus ``SO_REUSEPORT``.
    """
    if address.scheme != "tcp":
        raise OSError(f"SO_REUSEPORT is for TCP listeners only, not {address.scheme}")
    option = getattr(socket, "SO_REUSEPORT", None)
    if option is None:
        raise OSError("SO_REUSEPORT is not available on this platform")
    found = await trio.socket.getaddrinfo(
        address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    family, kind, proto, _, sockaddr = found[0]
    sock = trio.socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, option, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        await sock.bind(sockaddr)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return trio.SocketListener(sock)


async def _open_listener(address: Address, backlog: int) -> trio.SocketListener:
    if address.scheme == "tcp":
        listeners = await trio.open_tcp_listeners(address.port, host=address.host, backlog=backlog)
        # A hostname may resolve to several addresses; one listener per node address is enough
        # and keeps the reported address unambiguous.
        for extra in listeners[1:]:
            await extra.aclose()
        return listeners[0]
    if address.scheme == "unix":
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            _remove_stale_socket(address.path)
            await sock.bind(address.path)
            os.chmod(address.path, 0o660)
            sock.listen(backlog)
        except BaseException:
            sock.close()
            raise
        return trio.SocketListener(sock)
    vsock_family = getattr(socket, "AF_VSOCK", None)
    if vsock_family is None:
        raise OSError("AF_VSOCK is not available on this platform")
    sock = trio.socket.socket(vsock_family, socket.SOCK_STREAM)
    try:
        await sock.bind((address.cid, address.port))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return trio.SocketListener(sock)


def listener_address(listener: trio.SocketListener) -> str:
    """The address a listener is bound to, in the form :func:`parse_address` accepts."""
    sock = listener.socket
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return f"unix://{name}"
    if sock.family == getattr(socket, "AF_VSOCK", object()):
        return f"vsock://{name[0]}:{name[1]}"
    host = name[0]
    return f"[{host}]:{name[1]}" if ":" in host else f"{host}:{name[1]}"


def connection_source(stream: trio.abc.Stream) -> str:
    """A rate-limiting key for where a connection comes from: IP, ``vsock:CID`` or ``unix``."""
    sock = getattr(stream, "socket", None)
    if sock is None:
        return "unknown"
    try:
        family = sock.family
        if family == socket.AF_UNIX:
            return "unix"
        peer = sock.getpeername()
    except OSError:
        return "unknown"
    if family == _AF_VSOCK:
        return f"vsock:{peer[0]}"
    return str(peer[0])


async def connect_direct(address: Address) -> trio.abc.Stream:
    """Connect to ``address`` directly (tcp, unix or vsock).

    Raises:
        TransportError: the connection could not be made.
    """
    try:
        if address.scheme == "tcp":
            return await trio.open_tcp_stream(address.host, address.port)
        if address.scheme == "unix":
            return await trio.open_unix_socket(address.path)
        vsock_family = getattr(socket, "AF_VSOCK", None)
        if vsock_family is None:
            raise TransportError("AF_VSOCK is not available on this platform")
        sock = trio.socket.socket(vsock_family, socket.SOCK_STREAM)
        try:
            await sock.connect((address.cid, address.port))
        except BaseException:
            sock.close()
            raise
        return trio.SocketStream(sock)
    except OSError as exc:
        raise NetworkError(f"cannot connect to {address}: {exc.strerror or exc}") from None
