"""The replication core: record wire form, push batching, anti-entropy digests, snapshots.

Pure (sans-I/O): no trio, sockets, clock or RNG. ``now_ms`` is an argument; the network layer
drives everything here and owns every decision about peers, timing and retries.

Theory of operation (DESIGN.md §6 "Replication"):

* **Push.** The store's ``listener`` appends every locally created record (write, delete,
  eviction tombstone) to an :class:`Outbox`. The outbox keeps one record per key, merged with
  :func:`~novakms.store.records.merge`, so a key rewritten ten times within one batching window
  travels once. :meth:`Outbox.drain` hands out batches that fit a frame. Pushes may be lost,
  duplicated or reordered: the receiver applies them with ``KVStore.merge``, a semilattice join
  (commutative, associative, idempotent), so none of that can make replicas diverge — it can
  only delay convergence, which anti-entropy then completes.
* **Receive.** Every record from a peer goes through :func:`record_from_wire` (shape, sizes,
  clock sanity, the skew bound) and :func:`check_decryptable` (the value opens under *our* data
  key for exactly this app and key) before it reaches the store, whose ``merge`` trusts its
  input.
* **Anti-entropy.** Two replicas compare :func:`app_digests` (one 32-byte digest per app). For an
  app that differs they compare :func:`bucket_digests` (the app's keys hashed into a fixed number
  of buckets), for the buckets that differ they exchange :func:`keys_in_buckets` (key → record
  hash), and each side pulls what :func:`plan_pull` lists. The traffic is proportional to the
  difference, not to the data set, and the pulled records are merged like pushes.
* **Snapshots.** A joining node streams the whole store with :func:`snapshot_after`, one chunk
  per frame, in ``(app_id, key)`` order, resuming after the last key it received if the
  connection drops. Tombstones are part of the snapshot: without them the joiner could
  resurrect a deleted value from a replica that missed the delete.
* **Tombstone GC.** :class:`TombstoneAcks` tracks which peers acknowledged which tombstones
  (push answers, and equal app digests in anti-entropy); one acknowledged by every current peer
  can be forgotten early. The retention bound is the store's own ``sweep``.

Batch sizes: :data:`ENVELOPE_BYTES` of every frame is left for the message around the records
(op name, request id, app id, a resume key of up to ``max_key_bytes``, the channel's framing),
so a batch's encoded array stays within ``max_bytes - ENVELOPE_BYTES``. A single record larger
than that is still sent alone: ``Limits`` guarantees that ``max_frame`` leaves 4 KiB beyond a
full-size key and value, which covers the envelope and a clock of dozens of nodes.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Final, Literal, TypeGuard

from novakms.cluster.sync_messages import ENVELOPE_BYTES, SYNC_BUCKETS, frame_budget
from novakms.config import Limits
from novakms.crypto.aead import NONCE_SIZE, SEAL_OVERHEAD, open_value
from novakms.crypto.eth import is_canonical_wallet
from novakms.errors import InvalidRecord, SealError
from novakms.store.records import HybridClock, Record, merge
from novakms.wire import cbor

__all__ = [
    "DEFAULT_BUCKETS",
    "ENVELOPE_BYTES",
    "Outbox",
    "Reason",
    "TombstoneAcks",
    "TombstoneId",
    "app_digests",
    "bucket_digests",
    "bucket_of",
    "check_decryptable",
    "differing_apps",
    "differing_buckets",
    "keys_in_buckets",
    "plan_pull",
    "record_from_wire",
    "record_hash",
    "record_to_wire",
    "snapshot_after",
    "snapshot_chunk",
    "snapshot_chunks",
    "tombstone_id",
    "wire_size",
]

DEFAULT_BUCKETS: Final = SYNC_BUCKETS
"""Buckets per app in the second level of anti-entropy (``sync_messages.SYNC_BUCKETS``)."""

_UINT64_MAX: Final = (1 << 64) - 1
_TAG_SIZE: Final = SEAL_OVERHEAD - NONCE_SIZE
_FIELDS: Final = frozenset({"a", "k", "v", "c", "h", "n", "x"})
_OPTIONAL: Final = frozenset({"g"})

_RECORD_LABEL: Final = b"novakms/1 replication record\x00"
_SET_LABEL: Final = b"novakms/1 replication set\x00"
_BUCKET_LABEL: Final = b"novakms/1 replication bucket\x00"


# --------------------------------------------------------------------------------------------
# Wire form
# --------------------------------------------------------------------------------------------

Reason = Literal[
    "not_a_map",
    "bad_fields",
    "bad_app",
    "bad_key",
    "key_too_large",
    "bad_value",
    "value_too_large",
    "bad_clock",
    "clock_too_large",
    "bad_node",
    "writer_not_in_clock",
    "bad_hlc",
    "future_hlc",
    "bad_expiry",
    "bad_gen",
    "undecryptable",
]


def record_to_wire(record: Record) -> dict[str, Any]:
    """The CBOR-subset map of a record.

    Keys: ``a`` app id, ``k`` key, ``v`` sealed value (null for a tombstone), ``c`` vector clock
    as ``[[wallet, counter], ...]`` sorted by wallet, ``h`` hybrid logical timestamp, ``n`` the
    writer's wallet, ``x`` expiry in unix ms (null for none): always present. ``g``, the key's
    generation (``Record.gen``), only when it is not 0, so a record that never saw a
    conditional write has the same wire form (and hash) as before generations existed.
    """
    wire: dict[str, Any] = {
        "a": record.app_id,
        "k": record.key,
        "v": record.sealed,
        "c": [[node, counter] for node, counter in record.clock],
        "h": record.hlc,
        "n": record.node,
        "x": record.expires_at_ms,
    }
    if record.gen:
        wire["g"] = record.gen
    return wire


def wire_size(record: Record) -> int:
    """Encoded size in bytes of :func:`record_to_wire` of ``record``."""
    return len(cbor.encode(record_to_wire(record)))


def _uint(value: object) -> TypeGuard[int]:
    # ``type is int`` also refuses bool, which is an int subclass.
    return type(value) is int and 0 <= value <= _UINT64_MAX


def _wallet(value: object) -> TypeGuard[str]:
    return type(value) is str and is_canonical_wallet(value)


def record_from_wire(item: object, *, limits: Limits, now_ms: int, max_skew_ms: int) -> Record:
    """Validate a record received from a peer.

    Args:
        item: the decoded CBOR map (see :func:`record_to_wire`).
        limits: key and value size limits (the same ones local writes obey).
        now_ms: the local wall clock, unix ms.
        max_skew_ms: how far the physical part of the record's HLC may be ahead of ``now_ms``;
            exactly ``max_skew_ms`` ahead is accepted. A record further in the future would drag
            every replica's HLC forward with it (``HybridClock.observe``) and win every
            concurrent write until wall clocks catch up, so it is refused.

    Returns:
        The record, ready for :func:`check_decryptable` and then ``KVStore.merge``.

    Raises:
        InvalidRecord: with the first reason found.
    """
    if type(item) is not dict:
        raise InvalidRecord("not_a_map", f"a record is a map, not {type(item).__name__}")
    fields = item.keys() - _OPTIONAL
    if fields != _FIELDS:
        extra = sorted(str(k) for k in fields - _FIELDS)
        missing = sorted(_FIELDS - fields)
        raise InvalidRecord("bad_fields", f"extra fields {extra}, missing fields {missing}")
    gen = item.get("g", 0)
    if "g" in item and (not _uint(gen) or gen == 0):
        # 0 is written by leaving the field out: one wire form per record.
        raise InvalidRecord("bad_gen", "generation must be an integer 1 .. 2**64-1 when present")

    app_id = item["a"]
    if not _uint(app_id) or app_id == 0:
        raise InvalidRecord("bad_app", "app id must be an integer 1 .. 2**64-1")

    key = item["k"]
    if type(key) is not str:
        raise InvalidRecord("bad_key", "key must be a text string")
    try:
        key_size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidRecord("bad_key", "key is not valid UTF-8") from None
    if key_size == 0 or "\x00" in key:
        raise InvalidRecord("bad_key", "key must be non-empty and contain no NUL")
    if key_size > limits.max_key_bytes:
        raise InvalidRecord(
            "key_too_large", f"key is {key_size} bytes; the limit is {limits.max_key_bytes}"
        )

    sealed = item["v"]
    if sealed is not None:
        if type(sealed) is not bytes:
            raise InvalidRecord("bad_value", "value must be a byte string or null")
        if len(sealed) < SEAL_OVERHEAD:
            raise InvalidRecord("bad_value", "sealed value is shorter than nonce and tag")
        if len(sealed) > limits.max_value_bytes + SEAL_OVERHEAD:
            raise InvalidRecord(
                "value_too_large",
                f"sealed value is {len(sealed)} bytes; the limit is "
                f"{limits.max_value_bytes + SEAL_OVERHEAD}",
            )

    clock = _clock_from_wire(item["c"], limits.max_clock_entries)

    node = item["n"]
    if not _wallet(node):
        raise InvalidRecord("bad_node", "writer must be a lowercase 0x-prefixed 40-hex wallet")
    if all(entry_node != node for entry_node, _ in clock):
        # Every write increments the writer's own counter, and merging only joins clocks.
        raise InvalidRecord("writer_not_in_clock", "the writer's counter is not in the clock")

    hlc = item["h"]
    if not _uint(hlc):
        raise InvalidRecord("bad_hlc", "hlc must be an integer 0 .. 2**64-1")
    ahead = HybridClock.physical_ms(hlc) - now_ms
    if ahead > max_skew_ms:
        raise InvalidRecord(
            "future_hlc", f"hlc is {ahead} ms in the future; the bound is {max_skew_ms} ms"
        )

    expires = item["x"]
    if expires is not None and not _uint(expires):
        raise InvalidRecord("bad_expiry", "expiry must be null or an integer 0 .. 2**64-1")

    return Record(
        app_id=app_id,
        key=key,
        sealed=sealed,
        clock=clock,
        hlc=hlc,
        node=node,
        expires_at_ms=expires,
        gen=gen,
    )


def _clock_from_wire(raw: object, max_entries: int) -> tuple[tuple[str, int], ...]:
    if type(raw) is not list or not raw:
        raise InvalidRecord("bad_clock", "clock must be a non-empty array")
    if len(raw) > max_entries:  # before looking at any entry: bounded work
        raise InvalidRecord(
            "clock_too_large", f"clock has {len(raw)} entries; the limit is {max_entries}"
        )
    entries: list[tuple[str, int]] = []
    for entry in raw:
        if type(entry) is not list or len(entry) != 2:
            raise InvalidRecord("bad_clock", "clock entries are [wallet, counter] pairs")
        node, counter = entry
        if not _wallet(node):
            raise InvalidRecord("bad_clock", "clock entry is not a lowercase 40-hex wallet")
        if not _uint(counter) or counter == 0:
            raise InvalidRecord("bad_clock", "clock counters are integers 1 .. 2**64-1")
        if entries and node <= entries[-1][0]:
            raise InvalidRecord("bad_clock", "clock entries must be sorted by unique wallet")
        entries.append((node, counter))
    return tuple(entries)


def check_decryptable(record: Record, data_key: Callable[[int], bytes]) -> None:
    """Refuse a value that does not open under our data key for its app and key name.

    A replica holding the same master secret derives the same data keys, so a genuine value
    always opens; one that does not was sealed for another key, another app or another secret
    (a split-brain peer), and storing it would only produce ``internal`` errors on ``kv.get``.
    Tombstones carry no value and always pass.

    Raises:
        InvalidRecord: ``undecryptable``.
    """
    if record.sealed is None:
        return
    try:
        open_value(
            key=data_key(record.app_id), app_id=record.app_id, name=record.key, sealed=record.sealed
        )
    except SealError:
        raise InvalidRecord(
            "undecryptable", "the value does not open under this app's data key and key name"
        ) from None


# --------------------------------------------------------------------------------------------
# Batching
# --------------------------------------------------------------------------------------------


class Outbox:
    """Local changes waiting to be pushed to peers, one record per key.

    Use :meth:`add` as the ``KVStore`` listener. A record added again before the next drain is
    merged into the pending one (``records.merge``: the later write, the joined clock), so only
    the latest state of a key travels. :meth:`add` is also how the network layer re-queues a
    batch whose push failed: merging is idempotent, and a newer local change wins.

    Each pending key remembers when its oldest unsent change was queued (``queued_ms``), so the
    network layer can report replication lag: the age of the oldest change a peer lacks.
    """

    __slots__ = ("_pending", "_queued")

    def __init__(self) -> None:
        self._pending: dict[tuple[int, str], Record] = {}
        self._queued: dict[tuple[int, str], int] = {}

    def add(self, record: Record, queued_ms: int = 0) -> None:
        """Queue a record (keeps its key's place and its earliest queue time when pending)."""
        slot = (record.app_id, record.key)
        current = self._pending.get(slot)
        self._pending[slot] = record if current is None else merge(current, record)
        self._queued[slot] = min(self._queued.get(slot, queued_ms), queued_ms)

    def pending(self) -> int:
        """Keys waiting to be pushed."""
        return len(self._pending)

    def has(self, app_id: int, key: str) -> bool:
        """Whether a change of this key is waiting to be pushed."""
        return (app_id, key) in self._pending

    def oldest_ms(self) -> int | None:
        """When the oldest pending change was queued (None when nothing is pending)."""
        return min(self._queued.values(), default=None)

    def drain(self, max_bytes: int) -> list[Record]:
        """Take the next batch, oldest pending key first.

        Args:
            max_bytes: the frame budget. The batch's encoded array of wire records stays within
                ``max_bytes - ENVELOPE_BYTES``, except that a record too large for that on its
                own is returned alone.

        Returns:
            The batch (empty when nothing is pending). Call again while :meth:`pending`. Take
            :meth:`oldest_ms` first if the batch may have to be re-queued with its age.

        Raises:
            ValueError: ``max_bytes`` leaves no room beyond the envelope allowance.
        """
        budget = frame_budget(max_bytes)
        batch: list[Record] = []
        used = 0
        for record in self._pending.values():
            size = wire_size(record)
            if batch and cbor.head_size(len(batch) + 1) + used + size > budget:
                break
            batch.append(record)
            used += size
        for record in batch:
            slot = (record.app_id, record.key)
            del self._pending[slot], self._queued[slot]
        return batch


# --------------------------------------------------------------------------------------------
# Anti-entropy digests
# --------------------------------------------------------------------------------------------


def _value_fingerprint(sealed: bytes | None) -> bytes | None:
    """What of a sealed value goes into its record hash: length, nonce and GCM tag.

    The tag authenticates the ciphertext under the data key, so two different sealed values
    with the same nonce and tag would be a GCM forgery; and a value is fixed by its write's
    ``(hlc, node)`` anyway. Hashing 28 bytes instead of up to 1 MiB keeps an anti-entropy round
    proportional to the number of records, not to the bytes stored.
    """
    if sealed is None:
        return None
    if len(sealed) <= 2 * SEAL_OVERHEAD:  # not a real sealed value (never from the wire)
        return sealed
    return struct.pack(">Q", len(sealed)) + sealed[:NONCE_SIZE] + sealed[-_TAG_SIZE:]


def record_hash(record: Record) -> bytes:
    """SHA-256 over everything that distinguishes one stored state of a key from another.

    Covers the app, key, clock, hlc, writer, tombstone flag, expiry, the value fingerprint
    (see ``_value_fingerprint``) and the generation when it is not 0. Two replicas agree on a
    key exactly when the hashes agree (including the merged clock, so a clock-only difference
    is repaired too).
    """
    fields = [
        record.app_id,
        record.key,
        [[node, counter] for node, counter in record.clock],
        record.hlc,
        record.node,
        record.sealed is None,
        record.expires_at_ms,
        _value_fingerprint(record.sealed),
    ]
    if record.gen:  # appended only when set: records without one hash as they always did
        fields.append(record.gen)
    return hashlib.sha256(_RECORD_LABEL + cbor.encode(fields)).digest()


class _SetDigest:
    """An order-independent digest of a set of record hashes: count and sum mod 2**256.

    Order-independence is the point: replicas hold the same records in different orders (the
    store keeps arrival order), so a digest over a sequence would differ between identical
    replicas. A sum (not XOR) also means equal hashes never cancel out, and it can be
    maintained incrementally (subtract the old hash of a key, add the new one).
    """

    __slots__ = ("count", "total")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0

    def add(self, digest: bytes) -> None:
        self.count += 1
        self.total = (self.total + int.from_bytes(digest, "big")) % (1 << 256)

    def digest(self) -> bytes:
        return hashlib.sha256(
            _SET_LABEL + struct.pack(">Q", self.count) + self.total.to_bytes(32, "big")
        ).digest()


def app_digests(records: Iterable[Record]) -> dict[int, bytes]:
    """One digest per app over all of its records (live, expired and tombstones).

    Order-independent (see ``_SetDigest``); an app without records has no entry.
    """
    sets: dict[int, _SetDigest] = {}
    for record in records:
        acc = sets.get(record.app_id)
        if acc is None:
            acc = sets[record.app_id] = _SetDigest()
        acc.add(record_hash(record))
    return {app_id: acc.digest() for app_id, acc in sets.items()}


def differing_apps(local: Mapping[int, bytes], remote: Mapping[int, bytes]) -> list[int]:
    """Apps whose digests differ, including apps only one side has, in ascending order."""
    return sorted(a for a in local.keys() | remote.keys() if local.get(a) != remote.get(a))


def bucket_of(key: str, buckets: int) -> int:
    """The anti-entropy bucket of a key (stable across processes, unlike ``hash``)."""
    digest = hashlib.sha256(_BUCKET_LABEL + key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % buckets


def _check_buckets(buckets: int) -> None:
    if buckets < 1:
        raise ValueError("buckets must be at least 1")


def bucket_digests(
    records: Iterable[Record], app_id: int, buckets: int = DEFAULT_BUCKETS
) -> list[bytes]:
    """The digests of one app's records partitioned into ``buckets`` by :func:`bucket_of`.

    Returns:
        ``buckets`` digests; an empty bucket has the digest of the empty set.
    """
    _check_buckets(buckets)
    sets = [_SetDigest() for _ in range(buckets)]
    for record in records:
        if record.app_id == app_id:
            sets[bucket_of(record.key, buckets)].add(record_hash(record))
    return [acc.digest() for acc in sets]


def differing_buckets(local: Sequence[bytes], remote: Sequence[bytes]) -> list[int]:
    """Indexes of buckets whose digests differ.

    Raises:
        ValueError: the two sides used different bucket counts.
    """
    if len(local) != len(remote):
        raise ValueError("bucket digests of different bucket counts")
    return [i for i, (a, b) in enumerate(zip(local, remote, strict=True)) if a != b]


def keys_in_buckets(
    records: Iterable[Record],
    app_id: int,
    bucket_ids: Iterable[int],
    buckets: int = DEFAULT_BUCKETS,
) -> dict[str, bytes]:
    """Key → :func:`record_hash` for one app's records in the given buckets."""
    _check_buckets(buckets)
    wanted = set(bucket_ids)
    return {
        record.key: record_hash(record)
        for record in records
        if record.app_id == app_id and bucket_of(record.key, buckets) in wanted
    }


def plan_pull(local: Mapping[str, bytes], remote: Mapping[str, bytes]) -> list[str]:
    """Keys to pull: the remote has them and we lack them or hold a different state.

    A different hash does not say who is newer; pulling and merging is right either way (merge
    keeps the greater record and joins the clocks), and the peer runs the same plan the other
    way round. Keys only we have are the peer's to pull. Sorted, for deterministic requests.
    """
    return sorted(key for key, digest in remote.items() if local.get(key) != digest)


# --------------------------------------------------------------------------------------------
# Snapshots
# --------------------------------------------------------------------------------------------


def _sort_key(record: Record) -> tuple[int, str]:
    # Python orders str by code point, which is also the order of their UTF-8 bytes.
    return (record.app_id, record.key)


def snapshot_chunk(
    ordered: Iterable[Record], *, max_bytes: int
) -> tuple[list[dict[str, Any]], tuple[int, str] | None]:
    """One snapshot chunk taken from records already in ``(app_id, key)`` order.

    Args:
        ordered: the records after the joiner's resume point, in ``(app_id, key)`` order (the
            store's ``records_from``); only as many are consumed as fit, plus one look-ahead.
        max_bytes: the frame budget (``ENVELOPE_BYTES`` of it is left for the envelope). A
            record too large for the rest of the budget on its own is a chunk of its own.

    Returns:
        (chunk, resume point): the resume point is the ``(app_id, key)`` of the chunk's last
        record, or None when the chunk reaches the end. The joiner asks for the next chunk
        after the resume point — from the same peer or, after a lost connection, any other:
        the order is the same on every replica.

    Raises:
        ValueError: ``max_bytes`` leaves no room beyond the envelope allowance.
    """
    budget = frame_budget(max_bytes)
    chunk: list[dict[str, Any]] = []
    used = 0
    last: tuple[int, str] | None = None
    for record in ordered:
        wire = record_to_wire(record)
        size = len(cbor.encode(wire))
        if chunk and cbor.head_size(len(chunk) + 1) + used + size > budget:
            return chunk, last
        chunk.append(wire)
        used += size
        last = _sort_key(record)
    return chunk, None


def snapshot_after(
    records: Iterable[Record], after: tuple[int, str] | None, *, max_bytes: int
) -> tuple[list[dict[str, Any]], tuple[int, str] | None]:
    """:func:`snapshot_chunk` of unordered records: those ordered after ``after`` (None: all).

    Records written while a snapshot is streaming may be missed if they sort before the resume
    point; pushes and anti-entropy deliver them.

    Raises:
        ValueError: ``max_bytes`` leaves no room beyond the envelope allowance.
    """
    rest = sorted((r for r in records if after is None or _sort_key(r) > after), key=_sort_key)
    return snapshot_chunk(rest, max_bytes=max_bytes)


def snapshot_chunks(records: Iterable[Record], *, max_bytes: int) -> Iterator[list[dict[str, Any]]]:
    """The whole store as the chunks successive :func:`snapshot_after` calls return.

    Raises:
        ValueError: ``max_bytes`` leaves no room beyond the envelope allowance.
    """
    ordered = sorted(records, key=_sort_key)
    start = 0
    while start < len(ordered):
        chunk, _ = snapshot_chunk(ordered[start:], max_bytes=max_bytes)
        start += len(chunk)
        yield chunk


# --------------------------------------------------------------------------------------------
# Tombstone GC bookkeeping
# --------------------------------------------------------------------------------------------

TombstoneId = tuple[int, str, int, str]
"""A tombstone as peers acknowledge it: (app_id, key, hlc, writer node)."""


def tombstone_id(record: Record) -> TombstoneId:
    """The acknowledgement identity of a record (meaningful for tombstones)."""
    return (record.app_id, record.key, record.hlc, record.node)


class TombstoneAcks:
    """Which peers have acknowledged which tombstones.

    A peer acknowledges a tombstone once it stores that tombstone or a newer record of the key
    (so it can no longer hand the deleted value back). A tombstone every current peer has
    acknowledged can be forgotten before the store's retention bound; a newer tombstone of the
    same key has another identity and needs fresh acknowledgements.
    """

    __slots__ = ("_acks",)

    def __init__(self) -> None:
        self._acks: dict[TombstoneId, set[str]] = {}

    def ack(self, peer: str, tombstones: Iterable[TombstoneId]) -> None:
        """Record that ``peer`` has these tombstones."""
        for tid in tombstones:
            self._acks.setdefault(tid, set()).add(peer)

    def ack_apps(self, peer: str, app_ids: Iterable[int]) -> None:
        """Record that ``peer`` has every tracked tombstone of these apps.

        For apps whose anti-entropy digests were equal: the peer then held every record we
        held, including tombstones it received another way (a snapshot, a pull) than a push.
        """
        apps = set(app_ids)
        for tid, peers in self._acks.items():
            if tid[0] in apps:
                peers.add(peer)

    def acked_by(self, tid: TombstoneId) -> frozenset[str]:
        """The peers that acknowledged a tombstone."""
        return frozenset(self._acks.get(tid, ()))

    def collectable(
        self, tombstones: Iterable[Record], current_peers: Iterable[str]
    ) -> set[TombstoneId]:
        """The given tombstones that every current peer has acknowledged.

        Live records among ``tombstones`` are ignored. With no current peer nothing is
        collectable: an empty peer set cannot be told apart from a membership view that has not
        loaded yet, and the retention bound still applies.
        """
        peers = set(current_peers)
        if not peers:
            return set()
        found: set[TombstoneId] = set()
        for record in tombstones:
            if record.sealed is not None:
                continue
            tid = tombstone_id(record)
            if peers <= self._acks.get(tid, set()):
                found.add(tid)
        return found

    def forget(self, tombstones: Iterable[TombstoneId]) -> None:
        """Drop the bookkeeping of tombstones that were forgotten or superseded."""
        for tid in tombstones:
            self._acks.pop(tid, None)

    def retain(self, tombstones: Iterable[Record]) -> None:
        """Keep bookkeeping only for these (the store's current tombstones)."""
        keep = {tombstone_id(r) for r in tombstones if r.sealed is None}
        for tid in [t for t in self._acks if t not in keep]:
            del self._acks[tid]

    def __len__(self) -> int:
        return len(self._acks)
