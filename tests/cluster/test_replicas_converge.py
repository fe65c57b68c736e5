"""Three replicas converge (DESIGN §6): random writes, lossy pushes, then anti-entropy.

Three ``KVStore`` instances with different node wallets and the same data keys exchange records
the way the network layer will: local changes go through an :class:`Outbox`, batches are encoded
as CBOR, and every received record passes ``record_from_wire`` and ``check_decryptable`` before
``KVStore.merge``. Pushes are delivered in any order, duplicated or dropped; replicas' wall
clocks are skewed. A final anti-entropy phase uses only the digest, bucket and ``plan_pull``
functions, and then every replica must hold exactly the same records — those the writes imply:
for every key, the greatest write by ``(hlc, node)`` (so a delete is never undone by an older
write arriving late, and concurrent writes resolve last-writer-wins), with the join of every
write's clock.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from hypothesis import currently_in_test_context, given, settings
from hypothesis import event as hypothesis_event
from hypothesis import strategies as st

from novakms.cluster.replication import (
    ENVELOPE_BYTES,
    Outbox,
    app_digests,
    bucket_digests,
    check_decryptable,
    differing_apps,
    differing_buckets,
    keys_in_buckets,
    plan_pull,
    record_from_wire,
    record_to_wire,
)
from novakms.config import Limits
from novakms.crypto.aead import data_key
from novakms.errors import NotFound, QuotaExceeded
from novakms.store.kv import KVStore
from novakms.store.records import Clock, Record, clock_join
from novakms.wire import cbor

SECRET = bytes(range(32))
NODES = ("0x" + "aa" * 20, "0x" + "bb" * 20, "0x" + "cc" * 20)
SKEWS = (0, 170, -130)  # each replica's wall clock offset, ms
MAX_SKEW_MS = 1_000
T0 = 1_700_000_000_000
APPS = (1, 2)
KEYS = ("a", "b", "ключ")
BUCKETS = 4
LIMITS = Limits(
    record_overhead_bytes=16,
    # Merges obey the quota too (a merge over it is refused and retried later, so replicas
    # converge only once the data fits): 3 keys of at most 16 + 8 + 40 bytes and 3 clock
    # entries (2 charged at CLOCK_ENTRY_BYTES) always fit.
    app_quota_bytes=3 * (16 + 8 + 40 + 2 * 64),
    quota_mode="evict",
    tombstone_retention=10**7,  # no tombstone is forgotten within a test run
)


def event(name: str) -> None:
    """A Hypothesis statistics event (the hand cases below run outside Hypothesis)."""
    if currently_in_test_context():
        hypothesis_event(name)


@functools.cache
def app_key(app_id: int) -> bytes:
    return data_key(master_secret=SECRET, app_id=app_id)


@dataclass
class Replica:
    index: int
    store: KVStore
    outbox: Outbox


@dataclass
class Cluster:
    """Three replicas, the messages in flight, and every record any replica created."""

    now: int = T0
    replicas: list[Replica] = field(default_factory=list)
    in_flight: list[tuple[int, bytes]] = field(default_factory=list)  # (destination, batch)
    created: dict[tuple[int, str], list[Record]] = field(default_factory=dict)
    values: dict[tuple[int, str], bytes] = field(default_factory=dict)  # (hlc, node) → value
    pulled: int = 0  # records pulled by anti-entropy so far

    def __post_init__(self) -> None:
        for index, node in enumerate(NODES):
            outbox = Outbox()
            nonces = itertools.count(1)

            def listener(record: Record, outbox: Outbox = outbox) -> None:
                self.created.setdefault((record.app_id, record.key), []).append(record)
                outbox.add(record)

            def random_bytes(n: int, index: int = index, nonces: Iterator[int] = nonces) -> bytes:
                return bytes([index]) + next(nonces).to_bytes(n - 1, "big")

            store = KVStore(
                node=node,
                limits=LIMITS,
                data_key=app_key,
                random_bytes=random_bytes,
                listener=listener,
            )
            self.replicas.append(Replica(index, store, outbox))

    def wall(self, index: int) -> int:
        return self.now + SKEWS[index]

    # -- local operations ---------------------------------------------------------------------

    def put(self, index: int, app: int, key: str, value: bytes, ttl: int | None) -> None:
        before = sum(map(len, self.created.values()))
        try:
            record = self.replicas[index].store.put(app, key, value, self.wall(index), ttl_ms=ttl)
        except QuotaExceeded:
            event("put: quota exceeded")
            return
        if sum(map(len, self.created.values())) > before + 1:
            event("put: evicted (an eviction tombstone to replicate)")
        self.values[(record.hlc, record.node)] = value

    def delete(self, index: int, app: int, key: str) -> None:
        try:
            self.replicas[index].store.delete(app, key, self.wall(index))
        except NotFound:
            event("delete: not found")

    def sweep(self, index: int) -> None:
        self.replicas[index].store.sweep(self.wall(index))

    # -- the network ----------------------------------------------------------------------------

    def flush(self, index: int, budget: int) -> None:
        """Push one batch of a replica's outbox to both peers."""
        batch = self.replicas[index].outbox.drain(budget)
        if not batch:
            return
        frame = cbor.encode([record_to_wire(r) for r in batch])
        assert len(batch) == 1 or len(frame) <= budget - ENVELOPE_BYTES
        for peer in range(len(self.replicas)):
            if peer != index:
                self.in_flight.append((peer, frame))

    def receive(self, index: int, item: object) -> None:
        replica = self.replicas[index]
        record = record_from_wire(
            item, limits=LIMITS, now_ms=self.wall(index), max_skew_ms=MAX_SKEW_MS
        )
        check_decryptable(record, app_key)
        if not replica.store.merge(record):
            event("receive: nothing new (duplicate or older)")

    def deliver(self, pick: int, duplicate: bool) -> None:
        if not self.in_flight:
            return
        pick %= len(self.in_flight)
        destination, frame = self.in_flight[pick] if duplicate else self.in_flight.pop(pick)
        for item in cbor.decode(frame):
            self.receive(destination, item)

    def drop(self, pick: int) -> None:
        if self.in_flight:
            del self.in_flight[pick % len(self.in_flight)]

    def pull(self, local: int, remote: int) -> int:
        """One anti-entropy pull of ``local`` from ``remote``: digests, buckets, keys, records."""
        mine = self.replicas[local].store.records()
        theirs = self.replicas[remote].store.records()
        pulled = 0
        for app in differing_apps(app_digests(mine), app_digests(theirs)):
            ids = differing_buckets(
                bucket_digests(mine, app, BUCKETS), bucket_digests(theirs, app, BUCKETS)
            )
            wanted = plan_pull(
                keys_in_buckets(mine, app, ids, BUCKETS), keys_in_buckets(theirs, app, ids, BUCKETS)
            )
            for key in wanted:
                record = self.replicas[remote].store.record(app, key)
                assert record is not None
                self.receive(local, cbor.decode(cbor.encode(record_to_wire(record))))
                pulled += 1
        self.pulled += pulled
        return pulled

    def anti_entropy(self, max_rounds: int = 3) -> int:
        """Pull between every ordered pair until all app digests agree; the rounds it took."""
        n = len(self.replicas)
        for round_ in range(1, max_rounds + 1):
            for local, remote in itertools.permutations(range(n), 2):
                self.pull(local, remote)
            digests = [app_digests(r.store.records()) for r in self.replicas]
            if all(d == digests[0] for d in digests):
                return round_
        raise AssertionError(f"digests still differ after {max_rounds} anti-entropy rounds")

    # -- what the writes imply ------------------------------------------------------------------

    def expected(self, slot: tuple[int, str]) -> Record:
        """The greatest write of a key, with the join of every write's clock."""
        writes = self.created[slot]
        winner = max(writes, key=Record.order_key)
        empty: Clock = ()
        clock = functools.reduce(clock_join, (w.clock for w in writes), empty)
        return replace(winner, clock=clock)

    def check_converged(self) -> None:
        stores = [r.store for r in self.replicas]
        reference = set(stores[0].records())
        for store in stores[1:]:
            assert set(store.records()) == reference
            assert app_digests(store.records()) == app_digests(stores[0].records())
        assert {(r.app_id, r.key) for r in reference} == set(self.created)
        for record in reference:
            want = self.expected((record.app_id, record.key))
            # the same record, or the tombstone every replica derives once it expired
            assert record in (want, want.as_expired()), (record, want)
            if record.tombstone and not want.tombstone:
                event("an expired value became the same tombstone everywhere")
            if want.tombstone:
                event("a deleted key stayed deleted")
                assert record.tombstone
            writers = {w.node for w in self.created[(record.app_id, record.key)]}
            if len(writers) > 1:
                event("a key written on several replicas")


# --- the property ------------------------------------------------------------------------------

replica_ids = st.integers(0, len(NODES) - 1)
values = st.builds(lambda size, fill: bytes([fill]) * size, st.integers(0, 40), st.integers(0, 255))
ttls = st.one_of(st.none(), st.none(), st.none(), st.integers(1, 3_000))

puts = st.tuples(
    st.just("put"), replica_ids, st.sampled_from(APPS), st.sampled_from(KEYS), values, ttls
)
deletes = st.tuples(st.just("delete"), replica_ids, st.sampled_from(APPS), st.sampled_from(KEYS))
flushes = st.tuples(
    st.just("flush"), replica_ids, st.integers(ENVELOPE_BYTES + 1, ENVELOPE_BYTES + 400)
)
deliveries = st.tuples(st.just("deliver"), st.integers(0, 1_000), st.booleans())
operations = st.one_of(
    # weights by repetition: mostly writes and message traffic
    puts,
    puts,
    puts,
    deletes,
    flushes,
    flushes,
    deliveries,
    deliveries,
    deliveries,
    st.tuples(st.just("drop"), st.integers(0, 1_000)),
    st.tuples(st.just("tick"), st.integers(0, 1_500)),
    st.tuples(st.just("sweep"), replica_ids),
    st.tuples(st.just("pull"), replica_ids, replica_ids),
)


def run(cluster: Cluster, ops: list[tuple[Any, ...]]) -> None:
    for op in ops:
        name, *args = op
        if name == "tick":
            cluster.now += args[0]
        elif name == "pull":
            if args[0] != args[1]:
                cluster.pull(args[0], args[1])
        else:
            getattr(cluster, name)(*args)


# Each example is a few milliseconds: four times the profile's examples, still about 2 s (dev).
@settings(max_examples=4 * settings().max_examples)
@given(st.lists(operations, min_size=25, max_size=120))
def test_three_replicas_converge(ops: list[tuple[Any, ...]]) -> None:
    cluster = Cluster()
    run(cluster, ops)
    event(f"messages left undelivered: {min(len(cluster.in_flight), 5)}+")
    event(f"records stored: {min(len(cluster.created), 5)}+")

    pulled_before = cluster.pulled
    cluster.anti_entropy()
    event(f"final anti-entropy pulled records: {cluster.pulled > pulled_before}")
    cluster.check_converged()

    # every replica purges expiries at the same instant: still identical, and reads agree
    end = cluster.now + max(SKEWS)
    for replica in cluster.replicas:
        replica.store.sweep(end)
    cluster.check_converged()
    for (app, key), _ in cluster.created.items():
        want = cluster.expected((app, key))
        for replica in cluster.replicas:
            if want.live(end):
                record, value = replica.store.get(app, key, end)
                assert value == cluster.values[(want.hlc, want.node)]
                assert record.version == want.version
            else:
                with pytest.raises(NotFound):
                    replica.store.get(app, key, end)


# --- hand cases ----------------------------------------------------------------------------------


def test_late_write_does_not_resurrect_a_delete() -> None:
    cluster = Cluster()
    cluster.put(0, 1, "k", b"old", None)
    cluster.flush(0, 1 << 20)  # the write is on its way to B and C…
    write_to_b, write_to_c = cluster.in_flight
    cluster.in_flight.clear()
    cluster.in_flight.append(write_to_b)
    cluster.deliver(0, duplicate=False)  # …B has it, C does not yet
    cluster.now += 10
    cluster.delete(1, 1, "k")  # B deletes it
    cluster.flush(1, 1 << 20)
    cluster.deliver(0, duplicate=True)  # the delete reaches A (and is delivered again later)
    cluster.deliver(0, duplicate=False)
    cluster.deliver(0, duplicate=False)  # and C
    assert not cluster.in_flight
    cluster.in_flight.append(write_to_c)  # the old write reaches C late
    cluster.deliver(0, duplicate=False)
    for replica in cluster.replicas:
        record = replica.store.record(1, "k")
        assert record is not None and record.tombstone
        with pytest.raises(NotFound):
            replica.store.get(1, "k", cluster.wall(replica.index))
    cluster.anti_entropy()
    cluster.check_converged()


def test_concurrent_writes_resolve_last_writer_wins() -> None:
    cluster = Cluster()
    # B's clock runs 170 ms ahead, so its concurrent write is the later one even though A
    # wrote after it in real time.
    cluster.put(1, 1, "k", b"from B", None)
    cluster.now += 100
    cluster.put(0, 1, "k", b"from A", None)
    assert cluster.anti_entropy() == 1
    cluster.check_converged()
    for replica in cluster.replicas:
        record, value = replica.store.get(1, "k", cluster.wall(replica.index))
        assert value == b"from B"
        assert dict(record.clock) == {NODES[0]: 1, NODES[1]: 1}  # both writes' clocks joined


def test_same_millisecond_tie_breaks_on_the_node() -> None:
    cluster = Cluster()
    cluster.put(1, 1, "k", b"from B", None)
    cluster.now += 300  # C's wall runs 300 ms behind B's: it now reads what B's read then
    cluster.put(2, 1, "k", b"from C", None)  # the same HLC as B's write: the greater wallet wins
    records = [cluster.replicas[i].store.record(1, "k") for i in (1, 2)]
    assert records[0] is not None and records[1] is not None
    assert records[0].hlc == records[1].hlc
    cluster.anti_entropy()
    cluster.check_converged()
    _, value = cluster.replicas[0].store.get(1, "k", cluster.wall(0))
    assert value == b"from C"


def test_partitioned_replica_catches_up_by_anti_entropy_alone() -> None:
    cluster = Cluster()
    for i, key in enumerate(KEYS):
        cluster.put(i % 2, 1 + i % 2, key, bytes([i]) * 10, None)
        cluster.now += 5
    cluster.delete(0, 1, "a")
    # every push is lost
    for index in range(3):
        while cluster.replicas[index].outbox.pending():
            cluster.flush(index, 1 << 20)
    cluster.in_flight.clear()
    assert cluster.replicas[2].store.records() == []
    cluster.anti_entropy()
    cluster.check_converged()
    assert len(cluster.replicas[2].store.records()) == len(KEYS)
