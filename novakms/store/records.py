"""KV records, their clocks, and the merge that makes replicas converge.

Theory of operation:

* Every write carries a **vector clock** (node wallet → counter) and a **hybrid logical clock**
  timestamp ``hlc`` = physical milliseconds << 16 | logical counter. A local write starts from
  the stored record: its clock is the stored clock with this node's counter incremented, and its
  ``hlc`` is strictly greater than the stored one. So whenever a write causally follows
  another, both its clock dominates and its ``hlc`` is larger.
* Records are **totally ordered** by ``(gen, hlc, node, tombstone, expires_at, sealed)``.
  ``gen`` is the key's **generation**: the number of conditional writes (compare-and-set,
  decided by consensus: :mod:`novakms.cluster.paxos`) in the record's history. A conditional
  write makes ``base.gen + 1``; every other write keeps the generation of the record it
  overwrites. So a committed conditional write is only ever replaced by a write made on a
  node that had already seen it, never by a concurrent unconditional one, however far ahead
  that node's clock is. Under the
  invariant above (and since a write never lowers the generation) this order agrees with
  causality; for concurrent writes it is
  last-writer-wins on the HLC, then the node wallet — deterministic, and never a comparison of
  ciphertexts in practice (two different writes never share ``(hlc, node)``; the remaining
  fields only make the order total, so merge stays commutative even on malformed input).
* ``merge(a, b)`` keeps the greater record's content and the **join** (element-wise max) of both
  clocks. Max and join are each commutative, associative and idempotent, so replicas that see
  the same records in any order, any number of times, end identical.
* An expired record becomes a tombstone with the same ``hlc`` and node; a tombstone orders after
  a live record with the same ``(hlc, node)``, so every replica derives the same tombstone
  independently and an older live copy elsewhere can never resurrect the key.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import struct
from dataclasses import dataclass, replace
from typing import Literal

__all__ = [
    "ABSENT",
    "HLC_LOGICAL_BITS",
    "Clock",
    "HybridClock",
    "Record",
    "clock_advance",
    "clock_compare",
    "clock_increment",
    "clock_join",
    "merge",
]

Clock = tuple[tuple[str, int], ...]
"""A vector clock: (node wallet, counter) pairs sorted by wallet, counters > 0."""

ABSENT = "absent"
"""The ``if_version`` value meaning "only if the key does not exist" (never a real token)."""

HLC_LOGICAL_BITS = 16
_LOGICAL_MASK = (1 << HLC_LOGICAL_BITS) - 1


def clock_increment(clock: Clock, node: str) -> Clock:
    """``clock`` with ``node``'s counter increased by one."""
    counters = dict(clock)
    counters[node] = counters.get(node, 0) + 1
    return tuple(sorted(counters.items()))


def clock_advance(clock: Clock, node: str, at_least: int) -> Clock:
    """``clock`` with ``node``'s counter increased by one, and to at least ``at_least``.

    Counters may skip: a conditional write's proposals take unique counters this way, so one
    proposal's clock never equals another's (``novakms.cluster.consensus``).
    """
    counters = dict(clock)
    counters[node] = max(counters.get(node, 0) + 1, at_least)
    return tuple(sorted(counters.items()))


def clock_join(a: Clock, b: Clock) -> Clock:
    """Element-wise maximum of two clocks."""
    counters: dict[str, int] = {}
    for node, counter in (*a, *b):
        # Counters are positive by definition; a malformed non-positive entry is dropped from
        # either side alike, so the join stays commutative even on bad input.
        if counter > counters.get(node, 0):
            counters[node] = counter
    return tuple(sorted(counters.items()))


def clock_compare(a: Clock, b: Clock) -> Literal["equal", "before", "after", "concurrent"]:
    """How ``a`` relates to ``b`` causally."""
    da, db = dict(a), dict(b)
    a_ahead = any(c > db.get(n, 0) for n, c in da.items())
    b_ahead = any(c > da.get(n, 0) for n, c in db.items())
    if a_ahead and b_ahead:
        return "concurrent"
    if a_ahead:
        return "after"
    if b_ahead:
        return "before"
    return "equal"


class HybridClock:
    """A hybrid logical clock: physical milliseconds with a logical counter for ties.

    Args:
        last: the greatest timestamp issued or observed so far.
    """

    __slots__ = ("last",)

    def __init__(self, last: int = 0) -> None:
        self.last = last

    def tick(self, wall_ms: int, *, after: int = 0) -> int:
        """A new timestamp greater than everything seen, than ``after``, and not behind the wall."""
        stamp = max(wall_ms << HLC_LOGICAL_BITS, self.last + 1, after + 1)
        self.last = stamp
        return stamp

    def observe(self, stamp: int) -> None:
        """Account for a timestamp seen on a replicated record."""
        self.last = max(self.last, stamp)

    @staticmethod
    def physical_ms(stamp: int) -> int:
        """The physical (wall) part of a timestamp, in unix milliseconds."""
        return stamp >> HLC_LOGICAL_BITS


@functools.lru_cache(maxsize=4096)  # a pure function: read-mostly keys are asked again and again
def _version_token(hlc: int, node: str) -> str:
    digest = hashlib.sha256(b"novakms/1 version" + struct.pack(">Q", hlc) + node.encode()).digest()
    # Lowercase base32: shell- and CLI-safe (never starts with "-"), 24 characters.
    return base64.b32encode(digest[:15]).decode("ascii").lower()


@dataclass(frozen=True, slots=True, kw_only=True)
class Record:
    """One version of one key of one app.

    Attributes:
        app_id: the namespace.
        key: the key name.
        sealed: the sealed value (nonce ‖ ciphertext ‖ tag); None for a tombstone.
        clock: the vector clock.
        hlc: hybrid logical timestamp of the write.
        node: wallet of the node that made the write.
        expires_at_ms: unix ms after which the value is gone; None for no TTL.
        gen: the key's generation (conditional writes in its history; module docstring).
    """

    app_id: int
    key: str
    sealed: bytes | None
    clock: Clock
    hlc: int
    node: str
    expires_at_ms: int | None = None
    gen: int = 0

    @property
    def tombstone(self) -> bool:
        """True for a deletion (or an expired, purged value)."""
        return self.sealed is None

    @property
    def updated_at_ms(self) -> int:
        """Unix ms of the write (the physical part of its HLC)."""
        return self.hlc >> HLC_LOGICAL_BITS

    @property
    def version(self) -> str:
        """The opaque version token clients use for compare-and-set.

        Derived from the write's ``(hlc, node)``, so every replica computes the same token.
        """
        return _version_token(self.hlc, self.node)

    def expired(self, now_ms: int) -> bool:
        """True when the record has a TTL that has run out."""
        return self.expires_at_ms is not None and now_ms >= self.expires_at_ms

    def live(self, now_ms: int) -> bool:
        """True when a client can read this record now."""
        return self.sealed is not None and not self.expired(now_ms)

    def order_key(self) -> tuple[int, int, str, bool, tuple[bool, int], bytes]:
        """The total order merge uses (see the module docstring); injective on record content."""
        expires = (False, 0) if self.expires_at_ms is None else (True, self.expires_at_ms)
        return (self.gen, self.hlc, self.node, self.sealed is None, expires, self.sealed or b"")

    def as_expired(self) -> Record:
        """The deterministic tombstone every replica derives from this record once it expires."""
        return replace(self, sealed=None)

    def deleted_at_ms(self) -> int:
        """For a tombstone: when the value ceased to exist (its expiry, else the delete)."""
        return self.updated_at_ms if self.expires_at_ms is None else self.expires_at_ms


def merge(a: Record, b: Record) -> Record:
    """Merge two versions of the same key: the greater content, the joined clock.

    Raises:
        ValueError: the records are for different keys.
    """
    if a.app_id != b.app_id or a.key != b.key:
        raise ValueError("merge of records for different keys")
    winner = a if a.order_key() >= b.order_key() else b
    clock = clock_join(a.clock, b.clock)
    return winner if winner.clock == clock else replace(winner, clock=clock)
