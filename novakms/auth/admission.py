"""Connection admission: who may hold one of a node's connection slots (PROTOCOL.md §10).

Pure bookkeeping, no I/O and no clock; the server asks it on every accepted connection and
tells it how each connection changes. Theory of operation:

* Every connection counts against ``max_connections`` (the node) and
  ``max_connections_per_source`` (its source: IP, vsock CID or "unix"; the real client behind a
  PROXY-protocol listener).
* A connection is **unproven** from accept until its wallet has passed authorization (the
  handshake only proves a key pair, and anyone can make one): while it handshakes, and for its
  whole life if it stays anonymous or its wallet is not registered. Unproven connections
  together may hold at most ``max_unproven`` slots, so anonymous sessions can never take the
  capacity that authenticated apps and peers need, and those of one source at most
  ``max_unproven_per_source``, so one source cannot fill that pool with handshakes it never
  finishes (which cannot be evicted). A source at that cap makes room by evicting its own
  least recently active idle anonymous session.
* When a new connection finds the node or the unproven pool full, the idle anonymous session
  that was active least recently is evicted to make room (a handshaking connection is never
  evicted: it is bounded by the handshake timeout and rate instead). With nothing to evict the
  connection is refused.

Activity order is a counter, not a time: the table needs no clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Admission", "ConnectionTable"]

State = Literal["handshaking", "anonymous", "proven"]


@dataclass(frozen=True, slots=True)
class Admission:
    """The decision for a new connection.

    ``admitted`` false means refuse with ``reason``; ``evict`` names a connection to close first
    (its slot is already given to the new one).
    """

    admitted: bool
    reason: str = ""
    evict: int | None = None


_ADMITTED = Admission(True)  # (immutable: one for every plain admission)


@dataclass(slots=True)
class _Entry:
    source: str
    state: State
    busy: int = 0
    touched: int = 0


class ConnectionTable:
    """Slots of one node.

    Args:
        max_connections: connections of every kind.
        max_per_source: connections of one source.
        max_unproven: handshaking plus anonymous connections.
        max_unproven_per_source: handshaking plus anonymous connections of one source.
    """

    def __init__(
        self,
        *,
        max_connections: int,
        max_per_source: int,
        max_unproven: int,
        max_unproven_per_source: int,
    ) -> None:
        if min(max_connections, max_per_source, max_unproven, max_unproven_per_source) < 1:
            raise ValueError("connection limits must be at least 1")
        self._max = max_connections
        self._per_source = max_per_source
        self._max_unproven = max_unproven
        self._unproven_per_source = max_unproven_per_source
        self._entries: dict[int, _Entry] = {}
        self._sources: dict[str, int] = {}
        self._source_unproven: dict[str, int] = {}
        self._unproven = 0
        self._tick = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def unproven(self) -> int:
        """Connections that are handshaking or anonymous."""
        return self._unproven

    def count(self, source: str) -> int:
        """Connections of one source."""
        return self._sources.get(source, 0)

    def _victim(self, source: str | None = None) -> int | None:
        """The idle anonymous session active least recently (of ``source``, when given)."""
        best: tuple[int, int] | None = None
        for conn_id, entry in self._entries.items():
            idle = entry.state == "anonymous" and not entry.busy
            if source is not None and entry.source != source:
                continue
            if idle and (best is None or entry.touched < best[0]):
                best = (entry.touched, conn_id)
        return None if best is None else best[1]

    def admit(self, conn_id: int, source: str) -> Admission:
        """Decide on a new connection and, when admitted, take its slot (as handshaking)."""
        if conn_id in self._entries:
            raise ValueError(f"connection {conn_id} is already admitted")
        evict: int | None = None
        if self._source_unproven.get(source, 0) >= self._unproven_per_source:
            # The source's own idle anonymous sessions make way for its new connection.
            evict = self._victim(source)
            if evict is None:  # (evicting one of its own keeps every count as it is)
                return Admission(False, "too_many_connections_from_source")
        elif self.count(source) >= self._per_source:
            return Admission(False, "too_many_connections_from_source")
        elif len(self._entries) >= self._max or self._unproven >= self._max_unproven:
            evict = self._victim()
            if evict is None:
                full = len(self._entries) >= self._max
                return Admission(False, "too_many_connections" if full else "too_many_unproven")
        if evict is not None:
            self.release(evict)
        self._tick += 1
        self._entries[conn_id] = _Entry(source=source, state="handshaking", touched=self._tick)
        self._sources[source] = self.count(source) + 1
        self._count_unproven(source, +1)
        return _ADMITTED if evict is None else Admission(True, evict=evict)

    def _count_unproven(self, source: str, delta: int) -> None:
        """Count an unproven connection of ``source`` in (+1) or out (-1)."""
        self._unproven += delta
        left = self._source_unproven.get(source, 0) + delta
        if left:
            self._source_unproven[source] = left
        else:
            self._source_unproven.pop(source, None)

    def established(self, conn_id: int, *, proven: bool) -> None:
        """The handshake finished: with a wallet (proven) or anonymously."""
        entry = self._entries.get(conn_id)
        if entry is None or entry.state != "handshaking":
            return
        if proven:
            entry.state = "proven"
            self._count_unproven(entry.source, -1)
        else:
            entry.state = "anonymous"
        self.touch(conn_id)

    def prove(self, conn_id: int) -> None:
        """An anonymous-state session's wallet passed authorization: it leaves the pool."""
        entry = self._entries.get(conn_id)
        if entry is not None and entry.state == "anonymous":
            entry.state = "proven"
            self._count_unproven(entry.source, -1)

    def touch(self, conn_id: int) -> None:
        """The connection did something (received a request): it is the last to be evicted."""
        entry = self._entries.get(conn_id)
        if entry is not None:
            self._tick += 1
            entry.touched = self._tick

    def busy(self, conn_id: int, delta: int) -> None:
        """A request started (+1) or finished (-1); busy connections are never evicted."""
        entry = self._entries.get(conn_id)
        if entry is not None:
            entry.busy += delta

    def release(self, conn_id: int) -> None:
        """The connection is gone (idempotent)."""
        entry = self._entries.pop(conn_id, None)
        if entry is None:
            return
        if entry.state != "proven":
            self._count_unproven(entry.source, -1)
        left = self._sources[entry.source] - 1
        if left:
            self._sources[entry.source] = left
        else:
            del self._sources[entry.source]
