"""An in-memory network: listeners registered at address strings, dialers per node, cuts.

``dial(address)`` makes a :func:`trio.testing.memory_stream_pair`, hands one end to the
listener registered at ``address`` (its ``accept`` returns it) and returns the other. Each node
dials through its own :meth:`MemoryNetwork.dialer`, so a test can cut the links between two
nodes in one or both directions (new dials are refused, open connections are severed) and heal
them, or cut a node off after a number of bytes came back to it.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio
import trio.testing

from novakms.errors import TransportError
from novakms.net.addresses import Address, parse_address

__all__ = ["MemoryListener", "MemoryNetwork"]


def _key(address: str | Address) -> str:
    return str(address if isinstance(address, Address) else parse_address(address))


class _End(trio.abc.Stream):
    """One end of a memory connection; counts the bytes it received and can be severed."""

    def __init__(
        self,
        inner: trio.StapledStream[trio.testing.MemorySendStream, trio.testing.MemoryReceiveStream],
        on_receive: Callable[[int], None],
    ) -> None:
        self._inner = inner
        self._on_receive = on_receive

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._inner.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self._inner.receive_some(max_bytes)
        self._on_receive(len(data))
        return data

    async def aclose(self) -> None:
        await self._inner.aclose()

    def sever(self) -> None:
        """Close both directions at once (the peer sees the stream end or break)."""
        self._inner.send_stream.close()
        self._inner.receive_stream.close()


@dataclass(eq=False)
class _Connection:
    source: str
    target: str
    ends: tuple[_End, _End] | None = None

    def sever(self) -> None:
        assert self.ends is not None
        for end in self.ends:
            end.sever()


class MemoryListener(trio.abc.Listener[trio.abc.Stream]):
    """Accepts the streams dialed to its address (``Server(listeners=[(listener, address)])``)."""

    def __init__(self, network: MemoryNetwork, address: str) -> None:
        self.address = address
        self._network = network
        self._send, self._receive = trio.open_memory_channel[trio.abc.Stream](math.inf)

    def deliver(self, stream: trio.abc.Stream) -> None:
        self._send.send_nowait(stream)

    async def accept(self) -> trio.abc.Stream:
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise trio.ClosedResourceError("listener closed") from None

    async def aclose(self) -> None:
        self._network.unregister(self)
        self._receive.close()
        await trio.lowlevel.checkpoint()


@dataclass(eq=False)
class MemoryNetwork:
    """Listeners by address; who may reach whom; the connections open now."""

    listeners: dict[str, MemoryListener] = field(default_factory=dict)
    blocked: set[tuple[str, str]] = field(default_factory=set)  # (source, target address)
    isolated: set[str] = field(default_factory=set)  # sources that reach nobody
    connections: list[_Connection] = field(default_factory=list)
    received: dict[str, int] = field(default_factory=dict)  # bytes that came back, per source
    names: dict[str, str] = field(default_factory=dict)  # address -> the node listening there
    _isolate_after: dict[str, int] = field(default_factory=dict)

    def listen(self, address: str) -> MemoryListener:
        """A listener at ``address`` (``host:port``); replaces one left there."""
        listener = MemoryListener(self, _key(address))
        self.listeners[listener.address] = listener
        return listener

    def unregister(self, listener: MemoryListener) -> None:
        if self.listeners.get(listener.address) is listener:
            del self.listeners[listener.address]

    def dialer(self, source: str) -> Callable[[Address], Awaitable[trio.abc.Stream]]:
        """The ``Dialer`` of the node (or client) named ``source``."""

        async def dial(address: Address) -> trio.abc.Stream:
            return await self.dial(address, source=source)

        return dial

    async def dial(self, address: str | Address, *, source: str = "test") -> trio.abc.Stream:
        """Connect ``source`` to the listener at ``address``.

        Raises:
            TransportError: nothing listens there, or the link is cut.
        """
        await trio.lowlevel.checkpoint()
        target = _key(address)
        listener = self.listeners.get(target)
        if listener is None or not self._reachable(source, target):
            raise TransportError(f"cannot connect to {target}: connection refused")
        client, server = trio.testing.memory_stream_pair()
        connection = _Connection(source, target)

        def counted(size: int) -> None:
            self.received[source] = self.received.get(source, 0) + size
            limit = self._isolate_after.get(source)
            if limit is not None and self.received[source] >= limit:
                del self._isolate_after[source]
                self.isolate(source)

        connection.ends = (_End(client, counted), _End(server, lambda _: None))
        self.connections.append(connection)
        listener.deliver(connection.ends[1])
        return connection.ends[0]

    def _reachable(self, source: str, target: str) -> bool:
        if source in self.isolated:
            return False
        if self._owner(target) in self.isolated and source in self.names.values():
            return False
        return (source, target) not in self.blocked

    def _owner(self, target: str) -> str | None:
        return self.names.get(target)

    def name(self, address: str, owner: str) -> None:
        """Say which node listens at ``address`` (so isolating it refuses dials to it)."""
        self.names[_key(address)] = owner

    def _sever(self, doomed: Callable[[_Connection], bool]) -> None:
        for connection in [c for c in self.connections if doomed(c)]:
            connection.sever()
            self.connections.remove(connection)

    def block(self, source: str, target: str) -> None:
        """``source`` can no longer reach ``target`` (an address); its open connections end."""
        key = _key(target)
        self.blocked.add((source, key))
        self._sever(lambda c: c.source == source and c.target == key)

    def isolate(self, node: str) -> None:
        """``node`` reaches nobody and no node reaches it (test clients still do)."""
        self.isolated.add(node)
        nodes = set(self.names.values())
        self._sever(
            lambda c: c.source == node or (self._owner(c.target) == node and c.source in nodes)
        )

    def isolate_after(self, node: str, received: int) -> None:
        """Isolate ``node`` once ``received`` more bytes came back on the streams it dialed."""
        self._isolate_after[node] = self.received.get(node, 0) + received

    def heal(self) -> None:
        """Every cut is gone (severed connections stay closed; nodes dial again)."""
        self.blocked.clear()
        self.isolated.clear()
        self._isolate_after.clear()
