"""Dialing a node: directly, or through the enclave's HTTP CONNECT egress proxy.

The one place that chooses the route; :mod:`novakms.net.sockets` (direct) and
:mod:`novakms.net.proxy` (tunnelled) never import each other through it, so the import graph
has no cycle.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from novakms.net.addresses import Address
from novakms.net.proxy import open_via_proxy
from novakms.net.sockets import connect_direct

__all__ = ["Dialer", "open_stream"]

#: Opens a byte stream to an address: the network by default (:func:`open_stream`); an in-memory
#: network in tests that run a cluster without sockets.
Dialer = Callable[[Address], Awaitable[trio.abc.Stream]]


async def open_stream(address: Address, *, proxy: Address | None = None) -> trio.abc.Stream:
    """Connect to ``address``, through the HTTP CONNECT ``proxy`` if one is given.

    Only tcp targets go through the proxy: unix and vsock targets are local to the host or
    enclave, so they are always dialed directly and ``proxy`` is ignored for them.

    Raises:
        TransportError: the connection could not be made (or the proxy refused the tunnel).
    """
    if proxy is not None and address.scheme == "tcp":
        return await open_via_proxy(proxy, address)
    return await connect_direct(address)
