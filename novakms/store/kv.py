"""The per-app KV store of one node: sealed values, versions, TTL, quotas, LRU, tombstones.

Pure: ``now_ms`` is an argument of every operation and randomness (value nonces) is injected.
Every operation validates and plans completely before it changes anything, so a failed
operation (``conflict``, ``quota_exceeded``, ``too_large``…) leaves the store untouched.

Accounting: a record costs ``record_overhead_bytes`` + UTF-8 key size + plaintext value size;
a tombstone costs overhead + key. Both the app's namespace and the node total are checked.
Tombstones are never evicted (forgetting a delete early could resurrect the value from another
replica); they are forgotten ``tombstone_retention`` seconds after the delete or expiry.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from novakms.config import Limits
from novakms.crypto.aead import NONCE_SIZE, SEAL_OVERHEAD, open_value, seal_value
from novakms.errors import (
    BadRequest,
    Conflict,
    InternalError,
    NotFound,
    QuotaExceeded,
    SealError,
    TooLarge,
)
from novakms.store.records import (
    ABSENT,
    HybridClock,
    Record,
    clock_advance,
    clock_increment,
    merge,
)

CLOCK_ENTRY_BYTES = 64
"""Quota charge of each vector-clock entry beyond a record's first (wallet, counter, headers)."""

__all__ = ["AppUsage", "KVStore", "ListPage", "StoreStats"]

Listener = Callable[[Record], None]


@dataclass(eq=False)
class _Namespace:
    records: dict[str, Record] = field(default_factory=dict)
    lru: dict[str, None] = field(default_factory=dict)  # live keys, least recently used first
    keys: list[str] = field(default_factory=list)  # every stored key, sorted
    used: int = 0


@dataclass(frozen=True, slots=True)
class ListPage:
    """One page of ``kv.list``: keys in order, and the key to continue after (or None)."""

    keys: list[str]
    next_after: str | None


@dataclass(frozen=True, slots=True)
class AppUsage:
    """One app's share of the store (metrics of the largest apps)."""

    app_id: int
    live: int
    records: int
    used_bytes: int


@dataclass(frozen=True, slots=True)
class StoreStats:
    """Counters for ``status``."""

    apps: int
    live: int
    tombstones: int
    used_bytes: int


class KVStore:
    """One node's store.

    Args:
        node: this node's wallet (the vector-clock entry of local writes).
        limits: sizes, quotas, retention.
        data_key: the app id → 32-byte data key function (internal derivation, cached by caller).
        random_bytes: RNG for value nonces.
        listener: called with every record this store creates locally (writes, deletes,
            evictions), for replication.
    """

    def __init__(
        self,
        *,
        node: str,
        limits: Limits,
        data_key: Callable[[int], bytes],
        random_bytes: Callable[[int], bytes],
        listener: Listener | None = None,
    ) -> None:
        self.node = node
        self.limits = limits
        self._data_key = data_key
        self._random = random_bytes
        self.listener = listener
        self.hlc = HybridClock()
        self._spaces: dict[int, _Namespace] = {}
        self._total = 0
        self._count = 0  # records stored, all apps
        self._expiries: list[tuple[int, int, str]] = []  # (expires_at, app, key), lazily pruned
        self._graves: list[tuple[int, int, str]] = []  # (forget_at, app, key), lazily pruned

    # -- accounting -------------------------------------------------------------------------

    def _cost(self, record: Record) -> int:
        value = 0 if record.sealed is None else len(record.sealed) - SEAL_OVERHEAD
        # record_overhead_bytes covers a record with one clock entry (its writer's); every
        # further entry (another node that wrote the key) is charged CLOCK_ENTRY_BYTES.
        clock = CLOCK_ENTRY_BYTES * max(0, len(record.clock) - 1)
        return self.limits.record_overhead_bytes + len(record.key.encode("utf-8")) + value + clock

    def _space(self, app_id: int) -> _Namespace:
        space = self._spaces.get(app_id)
        if space is None:
            space = self._spaces[app_id] = _Namespace()
        return space

    def _store(self, space: _Namespace, record: Record) -> None:
        """Replace whatever is stored under the record's key (accounting, indexes, heaps)."""
        old = space.records.get(record.key)
        if old is None:
            bisect.insort(space.keys, record.key)
        else:
            delta = self._cost(old)
            space.used -= delta
            self._total -= delta
        space.records[record.key] = record
        space.lru.pop(record.key, None)
        if record.sealed is not None:
            space.lru[record.key] = None
            if record.expires_at_ms is not None:
                heapq.heappush(self._expiries, (record.expires_at_ms, record.app_id, record.key))
        else:
            heapq.heappush(self._graves, (self._forget_at(record), record.app_id, record.key))
        cost = self._cost(record)
        space.used += cost
        self._total += cost
        if old is None:
            self._count += 1
        self._compact_heaps()

    def _forget_at(self, tombstone: Record) -> int:
        return tombstone.deleted_at_ms() + int(self.limits.tombstone_retention * 1000)

    def _compact_heaps(self) -> None:
        """Drop stale heap entries once they outnumber the records (amortised O(1) per write).

        Overwriting a key pushes a new entry and leaves the old one to be skipped lazily; without
        this, rewriting one key with a long TTL would grow the heaps without bound.
        """
        limit = 2 * self._count + 1024
        if len(self._expiries) > limit:
            self._expiries = [
                (r.expires_at_ms, r.app_id, r.key)
                for r in self.records()
                if r.sealed is not None and r.expires_at_ms is not None
            ]
            heapq.heapify(self._expiries)
        if len(self._graves) > limit:
            self._graves = [
                (self._forget_at(r), r.app_id, r.key) for r in self.records() if r.sealed is None
            ]
            heapq.heapify(self._graves)

    def _forget(self, space: _Namespace, key: str) -> None:
        record = space.records.pop(key)
        space.lru.pop(key, None)
        del space.keys[bisect.bisect_left(space.keys, key)]
        cost = self._cost(record)
        space.used -= cost
        self._total -= cost
        self._count -= 1
        if not space.records:
            del self._spaces[record.app_id]

    # -- validation -------------------------------------------------------------------------

    def _check_key(self, key: str) -> None:
        size = len(key.encode("utf-8"))
        if size == 0 or "\x00" in key:
            raise BadRequest("key must be 1..512 bytes of UTF-8 without NUL")
        if size > self.limits.max_key_bytes:
            raise TooLarge(f"key is {size} bytes; the limit is {self.limits.max_key_bytes}")

    def _live(self, app_id: int, key: str, now_ms: int) -> Record | None:
        space = self._spaces.get(app_id)
        record = None if space is None else space.records.get(key)
        if record is None or record.sealed is None:
            return None
        if record.expired(now_ms):
            assert space is not None
            self._store(space, record.as_expired())
            return None
        return record

    def _check_version(self, live: Record | None, if_version: str | None) -> None:
        if if_version is None:
            return
        if if_version == ABSENT:
            if live is not None:
                raise Conflict("the key exists", version=live.version)
        elif live is None or live.version != if_version:
            raise Conflict(
                "the key's version does not match if_version",
                version=None if live is None else live.version,
            )

    # -- operations -------------------------------------------------------------------------

    def get(self, app_id: int, key: str, now_ms: int) -> tuple[Record, bytes]:
        """The live record and its opened value.

        Raises:
            NotFound: absent, deleted or expired.
        """
        self._check_key(key)
        record = self._live(app_id, key, now_ms)
        if record is None or record.sealed is None:
            raise NotFound("no such key")
        space = self._spaces[app_id]
        space.lru.pop(key)
        space.lru[key] = None
        try:
            value = open_value(
                key=self._data_key(app_id), app_id=app_id, name=key, sealed=record.sealed
            )
        except SealError:
            raise InternalError("a stored value failed to open") from None
        return record, value

    def put(
        self,
        app_id: int,
        key: str,
        value: bytes,
        now_ms: int,
        *,
        ttl_ms: int | None = None,
        if_version: str | None = None,
    ) -> Record:
        """Write a value (optionally with a TTL, optionally compare-and-set).

        Raises:
            BadRequest / TooLarge: key or value out of bounds.
            Conflict: ``if_version`` does not match.
            QuotaExceeded: no room (reject mode, or evict mode with nothing evictable left).
        """
        self._check_key(key)
        if len(value) > self.limits.max_value_bytes:
            raise TooLarge(
                f"value is {len(value)} bytes; the limit is {self.limits.max_value_bytes}"
            )
        if ttl_ms is not None and ttl_ms < 1:
            raise BadRequest("ttl_ms must be at least 1")
        live = self._live(app_id, key, now_ms)
        self._check_version(live, if_version)
        # A namespace is registered only once something is written to it (below).
        space = self._spaces.get(app_id) or _Namespace()
        current = space.records.get(key)
        entries = len(clock_increment(() if current is None else current.clock, self.node))
        cost = (
            self.limits.record_overhead_bytes
            + len(key.encode("utf-8"))
            + len(value)
            + CLOCK_ENTRY_BYTES * (entries - 1)
        )
        victims = self._plan_room(
            space, key, cost - (0 if current is None else self._cost(current))
        )
        sealed = self._seal(app_id, key, value)
        # Nothing has changed so far; from here on nothing can fail.
        self._spaces[app_id] = space
        for victim in victims:
            self._write(space, self._tombstone(space.records[victim], now_ms))
        hlc = self.hlc.tick(now_ms, after=0 if current is None else current.hlc)
        record = Record(
            app_id=app_id,
            key=key,
            sealed=sealed,
            clock=clock_increment(() if current is None else current.clock, self.node),
            hlc=hlc,
            node=self.node,
            expires_at_ms=None if ttl_ms is None else now_ms + ttl_ms,
            gen=0 if current is None else current.gen,
        )
        self._write(space, record)
        return record

    def delete(
        self, app_id: int, key: str, now_ms: int, *, if_version: str | None = None
    ) -> Record:
        """Delete a key, leaving a tombstone (optionally compare-and-set).

        Raises:
            NotFound: absent, deleted or expired.
            Conflict: ``if_version`` does not match.
        """
        self._check_key(key)
        if if_version == ABSENT:
            raise BadRequest(f"if_version {ABSENT!r} makes no sense for a delete")
        live = self._live(app_id, key, now_ms)
        self._check_version(live, if_version)
        if live is None:
            raise NotFound("no such key")
        tombstone = self._tombstone(live, now_ms)
        self._write(self._spaces[app_id], tombstone)
        return tombstone

    def propose(
        self,
        base: Record | None,
        app_id: int,
        key: str,
        value: bytes | None,
        now_ms: int,
        *,
        ttl_ms: int | None = None,
        if_version: str,
        counter: int = 0,
    ) -> Record:
        """The record a conditional write would commit on top of ``base`` (consensus).

        Nothing is stored: the write reaches the store through :meth:`commit` once a majority
        accepted it. ``value`` None is a delete. The new record's generation is
        ``base.gen + 1``, its clock ``base``'s with this node's counter incremented (to at
        least ``counter``: each proposal's clock is unique), its hlc after ``base``'s.
        Conditional writes never evict: over the quota they are refused.

        Raises:
            BadRequest / TooLarge: key, value or TTL out of bounds.
            Conflict: ``if_version`` does not match ``base`` (``version``: the current one,
                null when absent).
            QuotaExceeded: the app's or the node's quota has no room for it here.
        """
        self._check_key(key)
        if value is not None and len(value) > self.limits.max_value_bytes:
            raise TooLarge(
                f"value is {len(value)} bytes; the limit is {self.limits.max_value_bytes}"
            )
        if ttl_ms is not None and ttl_ms < 1:
            raise BadRequest("ttl_ms must be at least 1")
        live = base if base is not None and base.live(now_ms) else None
        if value is None and if_version == ABSENT:
            raise BadRequest(f"if_version {ABSENT!r} makes no sense for a delete")
        self._check_version(live, if_version)
        clock = clock_advance(() if base is None else base.clock, self.node, counter)
        sealed = None
        if value is not None:
            cost = (
                self.limits.record_overhead_bytes
                + len(key.encode("utf-8"))
                + len(value)
                + CLOCK_ENTRY_BYTES * (len(clock) - 1)
            )
            space = self._spaces.get(app_id)
            current = None if space is None else space.records.get(key)
            growth = cost - (0 if current is None else self._cost(current))
            if (0 if space is None else space.used) + growth > self.limits.app_quota_bytes:
                raise QuotaExceeded("the app storage quota is full", scope="app")
            if self._total + growth > self.limits.global_quota_bytes:
                raise QuotaExceeded("the node storage quota is full", scope="node")
            sealed = self._seal(app_id, key, value)
        return Record(
            app_id=app_id,
            key=key,
            sealed=sealed,
            clock=clock,
            hlc=self.hlc.tick(now_ms, after=0 if base is None else base.hlc),
            node=self.node,
            expires_at_ms=None if ttl_ms is None or value is None else now_ms + ttl_ms,
            gen=(0 if base is None else base.gen) + 1,
        )

    def _seal(self, app_id: int, key: str, value: bytes) -> bytes:
        return seal_value(
            key=self._data_key(app_id),
            app_id=app_id,
            name=key,
            value=value,
            nonce=self._random(NONCE_SIZE),
        )

    def commit(self, record: Record) -> bool:
        """Store a record consensus committed, and replicate it; True when it changed the store.

        Merged like a replica (a newer record of the key stays), but never refused for the
        quota: it was checked when the write was proposed, and the write is decided.
        """
        space = self._space(record.app_id)
        current = space.records.get(record.key)
        merged = record if current is None else merge(current, record)
        self.hlc.observe(record.hlc)
        if merged == current:
            return False
        self._store(space, merged)
        if self.listener is not None:
            self.listener(merged)
        return True

    def list_keys(
        self, app_id: int, now_ms: int, *, prefix: str = "", limit: int, after: str | None = None
    ) -> ListPage:
        """Live keys with ``prefix`` in UTF-8 code point order, starting after ``after``.

        Raises:
            ValueError: ``limit`` below 1 (a caller bug; the handler validates client input).
        """
        if limit < 1:
            raise ValueError("limit must be at least 1")
        space = self._spaces.get(app_id)
        if space is None:
            return ListPage([], None)
        keys = space.keys
        start = (
            bisect.bisect_right(keys, after)
            if after is not None and after >= prefix
            else bisect.bisect_left(keys, prefix)
        )
        found: list[str] = []
        for index in range(start, len(keys)):
            key = keys[index]
            if not key.startswith(prefix):
                break
            record = space.records[key]
            if not record.live(now_ms):
                continue
            if len(found) == limit:
                return ListPage(found, found[-1])
            found.append(key)
        return ListPage(found, None)

    def merge(self, record: Record) -> bool:
        """Apply a replicated record; True when the stored state changed.

        Merges obey the app quota and the node's global cap like local writes (without
        evicting): a merge that would grow the app or the node beyond them is refused and
        leaves the store untouched, so that no node holds more than ``app_quota_bytes`` of an
        app however many nodes the app writes to. The sender keeps the record queued and
        retries; merges that do not grow the usage (a newer value of the same size or smaller,
        a tombstone) always apply.

        Raises:
            QuotaExceeded: the merge would exceed the app quota (``scope: app``) or the global
                cap (``scope: node``).
        """
        space = self._spaces.get(record.app_id)
        current = None if space is None else space.records.get(record.key)
        merged = record if current is None else merge(current, record)
        if merged == current:
            self.hlc.observe(record.hlc)
            return False
        growth = self._cost(merged) - (0 if current is None else self._cost(current))
        if growth > 0:
            used = 0 if space is None else space.used
            if used + growth > self.limits.app_quota_bytes:
                raise QuotaExceeded("the app storage quota is full", scope="app")
            if self._total + growth > self.limits.global_quota_bytes:
                raise QuotaExceeded("the node storage quota is full", scope="node")
        self.hlc.observe(record.hlc)
        self._store(self._space(record.app_id), merged)
        return True

    def sweep(self, now_ms: int) -> tuple[int, int]:
        """Purge expired values (into tombstones) and forget old tombstones.

        Returns:
            (values purged, tombstones forgotten).
        """
        purged = forgotten = 0
        while self._expiries and self._expiries[0][0] <= now_ms:
            _, app_id, key = heapq.heappop(self._expiries)
            space = self._spaces.get(app_id)
            record = None if space is None else space.records.get(key)
            if (
                space is not None
                and record is not None
                and record.sealed is not None
                and record.expired(now_ms)
            ):
                self._store(space, record.as_expired())
                purged += 1
        while self._graves and self._graves[0][0] <= now_ms:
            _, app_id, key = heapq.heappop(self._graves)
            space = self._spaces.get(app_id)
            record = None if space is None else space.records.get(key)
            if (
                space is not None
                and record is not None
                and record.sealed is None
                and self._forget_at(record) <= now_ms
            ):
                self._forget(space, key)
                forgotten += 1
        return purged, forgotten

    def record(self, app_id: int, key: str) -> Record | None:
        """Whatever is stored under a key (live, expired or tombstone): replication, tests."""
        space = self._spaces.get(app_id)
        return None if space is None else space.records.get(key)

    def records_from(self, after: tuple[int, str] | None) -> Iterator[Record]:
        """Stored records ordered by ``(app_id, key)``, starting after ``after`` (snapshots).

        Lazy: a snapshot chunk costs what it takes, not a pass over the store. The store must
        not change while the iterator is in use (the caller consumes it without awaiting).
        """
        for app_id in sorted(self._spaces):
            if after is not None and app_id < after[0]:
                continue
            space = self._spaces[app_id]
            keys = space.keys
            start = 0
            if after is not None and app_id == after[0]:
                start = bisect.bisect_right(keys, after[1])
            for index in range(start, len(keys)):
                yield space.records[keys[index]]

    def tombstones(self) -> list[Record]:
        """Every stored tombstone (tombstone GC)."""
        return [
            r for space in self._spaces.values() for r in space.records.values() if r.sealed is None
        ]

    def forget_tombstone(self, app_id: int, key: str, hlc: int, node: str) -> bool:
        """Forget a tombstone before its retention bound; True when it was forgotten.

        Only exactly that tombstone (same writer and timestamp) is forgotten: a newer record of
        the key, or another tombstone, stays. The caller decides it is safe (every current peer
        holds the tombstone or something newer).
        """
        space = self._spaces.get(app_id)
        record = None if space is None else space.records.get(key)
        if record is None or record.sealed is not None or (record.hlc, record.node) != (hlc, node):
            return False
        assert space is not None
        self._forget(space, key)
        return True

    def records(self) -> list[Record]:
        """Every stored record, for snapshots and tests."""
        return [r for space in self._spaces.values() for r in space.records.values()]

    def usage(self, app_id: int) -> int:
        """Bytes charged to an app."""
        space = self._spaces.get(app_id)
        return 0 if space is None else space.used

    def stats(self) -> StoreStats:
        """Counts for ``status`` (no keys, no values)."""
        live = sum(len(s.lru) for s in self._spaces.values())
        total = sum(len(s.records) for s in self._spaces.values())
        return StoreStats(
            apps=len(self._spaces), live=live, tombstones=total - live, used_bytes=self._total
        )

    def largest_apps(self, count: int) -> list[AppUsage]:
        """The ``count`` apps using the most bytes, largest first (no keys, no values)."""
        spaces = heapq.nlargest(count, self._spaces.items(), key=lambda item: item[1].used)
        return [
            AppUsage(app_id=app, live=len(s.lru), records=len(s.records), used_bytes=s.used)
            for app, s in spaces
        ]

    # -- internals ---------------------------------------------------------------------------

    def _tombstone(self, record: Record, now_ms: int) -> Record:
        return Record(
            app_id=record.app_id,
            key=record.key,
            sealed=None,
            clock=clock_increment(record.clock, self.node),
            hlc=self.hlc.tick(now_ms, after=record.hlc),
            node=self.node,
            gen=record.gen,
        )

    def _write(self, space: _Namespace, record: Record) -> None:
        self._store(space, record)
        if self.listener is not None:
            self.listener(record)

    def _plan_room(self, space: _Namespace, key: str, growth: int) -> list[str]:
        """Keys to evict so that ``growth`` more bytes fit (empty when they already fit).

        Raises:
            QuotaExceeded: no room, and evicting is not allowed or cannot make enough.
        """
        limits = self.limits
        app_over = space.used + growth - limits.app_quota_bytes
        node_over = self._total + growth - limits.global_quota_bytes
        if app_over <= 0 and node_over <= 0:
            return []
        which = "app" if app_over > 0 else "node"
        if limits.quota_mode != "evict":
            raise QuotaExceeded(f"the {which} storage quota is full", scope=which)
        need = max(app_over, node_over)
        victims: list[str] = []
        for candidate in space.lru:
            if need <= 0:
                break
            if candidate == key:
                continue
            record = space.records[candidate]
            # Evicting frees the value; the tombstone left behind still costs overhead + key.
            need -= self._cost(record) - (
                limits.record_overhead_bytes + len(candidate.encode("utf-8"))
            )
            victims.append(candidate)
        if need > 0:
            raise QuotaExceeded(
                f"the {which} storage quota is full even after eviction", scope=which
            )
        return victims
