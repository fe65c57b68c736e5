"""Three real nodes converge (DESIGN §6): random writes, lossy pushes, then anti-entropy.

Three nodes of a :class:`~tests.harness.cluster.MemoryCluster` (real servers, real
replicators, the real ``sync.*`` handlers, over the memory network, on a MockClock) hold the
same master secret. Local writes go straight into each node's store (with each node's wall
clock skewed), so the replicator queues them in its per-peer outboxes; pushes are the
replicator's own ``sync.push`` rounds, or batches taken out of an outbox and delivered later
over the same channel — in any order, duplicated or never; ``pull`` is the replicator's own
anti-entropy round (``sync.digests`` → ``sync.buckets`` → ``sync.keys`` → ``sync.pull``). A
final anti-entropy phase runs those rounds between every pair, and then every node must hold
exactly the same records — those the writes imply: for every key, the greatest write by
``(hlc, node)`` (so a delete is never undone by an older write arriving late, and concurrent
writes resolve last-writer-wins), with the join of every write's clock.

The background loops are kept out of the way (their intervals are longer than any run), so
every exchange happens when the operations say: an example is one deterministic conversation.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import currently_in_test_context, given, settings
from hypothesis import event as hypothesis_event
from hypothesis import strategies as st

from novakms.cluster.replication import ENVELOPE_BYTES, app_digests, record_to_wire
from novakms.errors import NotFound, QuotaExceeded
from novakms.server.node import Node
from novakms.store.records import Clock, Record, clock_join
from tests.harness.clock import follow_trio_clock
from tests.harness.cluster import MemoryCluster, replace_limits, until

SECRET = bytes(range(32))
SKEWS = (0, 170, -130)  # each node's wall clock offset, ms
T0 = 1_700_000_000_000
APPS = (1, 2)
KEYS = ("a", "b", "ключ")
FOREVER = 10**7  # seconds: no background round, sweep or GC happens within a run
LIMITS = replace_limits(
    record_overhead_bytes=16,
    # Merges obey the quota too (a merge over it is refused and retried later, so replicas
    # converge only once the data fits): 3 keys of at most 16 + 8 + 40 bytes and 3 clock
    # entries (2 charged at CLOCK_ENTRY_BYTES) always fit.
    app_quota_bytes=3 * (16 + 8 + 40 + 2 * 64),
    quota_mode="evict",
    tombstone_retention=FOREVER,
    tombstone_gc_delay=FOREVER,
    push_interval=FOREVER,
    anti_entropy_interval=FOREVER,
    sweep_interval=FOREVER,
)


def event(name: str) -> None:
    """A Hypothesis statistics event (the hand cases below run outside Hypothesis)."""
    if currently_in_test_context():
        hypothesis_event(name)


@dataclass
class Cluster:
    """Three running nodes, the batches held back in flight, every record any node created."""

    memory: MemoryCluster
    now: int = T0
    nodes: list[Node] = field(default_factory=list)
    in_flight: list[tuple[int, int, list[Record]]] = field(default_factory=list)  # (from, to, …)
    created: dict[tuple[int, str], list[Record]] = field(default_factory=dict)
    values: dict[tuple[int, str], bytes] = field(default_factory=dict)  # (hlc, node) → value
    pulled: int = 0  # records pulled by anti-entropy so far

    async def start(self) -> None:
        # Replica i is the i-th smallest wallet (the tie-break on equal HLCs is by wallet).
        members = sorted(self.memory.members, key=lambda member: member[0].wallet)
        for index, (who, address) in enumerate(members):
            nonces = itertools.count(1)

            def random_bytes(n: int, index: int = index, nonces: Iterator[int] = nonces) -> bytes:
                return bytes([index]) + next(nonces).to_bytes(n - 1, "big")

            node = await self.memory.start(
                who,
                address,
                secret=SECRET,
                limits=LIMITS,
                clock=functools.partial(self.wall_seconds, index),
                random_bytes=random_bytes,
            )
            self.nodes.append(node)
        # Every replicator knows both peers; a first (empty) round opens every channel.
        await until(
            lambda: all(
                n.replicator is not None and n.replicator.peer_count() == 2 for n in self.nodes
            )
        )
        await self.anti_entropy(max_rounds=1)
        for node in self.nodes:
            store = self.store(node)
            queue = store.listener
            assert queue is not None  # the replicator's: every local change to every outbox

            def listener(record: Record, queue: Callable[[Record], None] = queue) -> None:
                self.created.setdefault((record.app_id, record.key), []).append(record)
                queue(record)

            store.listener = listener

    def store(self, node: Node) -> Any:
        assert node.store is not None
        return node.store

    def wall(self, index: int) -> int:
        return self.now + SKEWS[index]

    def wall_seconds(self, index: int) -> float:
        return self.wall(index) / 1000

    def link(self, local: int, remote: int) -> Any:
        return self.nodes[local].replicator.links[self.nodes[remote].wallet]

    # -- local operations ---------------------------------------------------------------------

    def put(self, index: int, app: int, key: str, value: bytes, ttl: int | None) -> None:
        before = sum(map(len, self.created.values()))
        try:
            record = self.store(self.nodes[index]).put(
                app, key, value, self.wall(index), ttl_ms=ttl
            )
        except QuotaExceeded:
            event("put: quota exceeded")
            return
        if sum(map(len, self.created.values())) > before + 1:
            event("put: evicted (an eviction tombstone to replicate)")
        self.values[(record.hlc, record.node)] = value

    def delete(self, index: int, app: int, key: str) -> None:
        try:
            self.store(self.nodes[index]).delete(app, key, self.wall(index))
        except NotFound:
            event("delete: not found")

    def sweep(self, index: int) -> None:
        self.store(self.nodes[index]).sweep(self.wall(index))

    # -- the conversation -----------------------------------------------------------------------

    async def push(self, local: int, remote: int) -> None:
        """The replicator's push to one peer (``sync.push`` of its whole outbox)."""
        if local != remote:
            assert await self.nodes[local].replicator.push(self.link(local, remote))

    def hold(self, local: int, remote: int, budget: int) -> None:
        """Take one batch out of an outbox: a push the network holds back (or loses)."""
        if local != remote:
            batch = self.link(local, remote).outbox.drain(budget)
            if batch:
                self.in_flight.append((local, remote, batch))

    async def deliver(self, pick: int, duplicate: bool) -> None:
        """A held-back batch arrives late (``sync.push`` over the sender's channel)."""
        if not self.in_flight:
            return
        pick %= len(self.in_flight)
        local, remote, batch = self.in_flight[pick] if duplicate else self.in_flight.pop(pick)
        replicator = self.nodes[local].replicator
        client = await replicator._channel(self.link(local, remote))
        answer = await client.call("sync.push", {"records": [record_to_wire(r) for r in batch]})
        if answer.get("deferred"):
            event("deliver: the receiver's quota deferred records")

    def drop(self, pick: int) -> None:
        if self.in_flight:
            del self.in_flight[pick % len(self.in_flight)]

    async def pull(self, local: int, remote: int) -> None:
        """One anti-entropy round of ``local`` with ``remote``, the replicator's own."""
        if local != remote:
            link = self.link(local, remote)
            before = link.pulled
            assert await self.nodes[local].replicator.anti_entropy(link)
            self.pulled += link.pulled - before

    async def anti_entropy(self, max_rounds: int = 3) -> int:
        """Rounds between every ordered pair until all app digests agree; the rounds it took."""
        for round_ in range(1, max_rounds + 1):
            for local, remote in itertools.permutations(range(len(self.nodes)), 2):
                await self.pull(local, remote)
            digests = [app_digests(self.store(n).records()) for n in self.nodes]
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
        stores = [self.store(n) for n in self.nodes]
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


def on_a_cluster(body: Callable[[Cluster], Awaitable[None]]) -> None:
    """Run ``body`` against a started three-node memory cluster, on a MockClock."""

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            with pytest.MonkeyPatch.context() as monkeypatch:
                cluster = Cluster(MemoryCluster(nursery, clock=lambda: cluster.now / 1000))
                follow_trio_clock(monkeypatch, lambda: cluster.now / 1000)
                await cluster.start()
                await body(cluster)
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


# --- the property ------------------------------------------------------------------------------

replica_ids = st.integers(0, 2)
values = st.builds(lambda size, fill: bytes([fill]) * size, st.integers(0, 40), st.integers(0, 255))
ttls = st.one_of(st.none(), st.none(), st.none(), st.integers(1, 3_000))

puts = st.tuples(
    st.just("put"), replica_ids, st.sampled_from(APPS), st.sampled_from(KEYS), values, ttls
)
deletes = st.tuples(st.just("delete"), replica_ids, st.sampled_from(APPS), st.sampled_from(KEYS))
pushes = st.tuples(st.just("push"), replica_ids, replica_ids)
holds = st.tuples(
    st.just("hold"), replica_ids, replica_ids, st.integers(ENVELOPE_BYTES + 1, ENVELOPE_BYTES + 400)
)
deliveries = st.tuples(st.just("deliver"), st.integers(0, 1_000), st.booleans())
operations = st.one_of(
    # weights by repetition: mostly writes and message traffic
    puts,
    puts,
    puts,
    deletes,
    pushes,
    holds,
    holds,
    deliveries,
    deliveries,
    st.tuples(st.just("drop"), st.integers(0, 1_000)),
    st.tuples(st.just("tick"), st.integers(0, 1_500)),
    st.tuples(st.just("sweep"), replica_ids),
    st.tuples(st.just("pull"), replica_ids, replica_ids),
)


async def run(cluster: Cluster, ops: list[tuple[Any, ...]]) -> None:
    for op in ops:
        name, *args = op
        if name == "tick":
            cluster.now += args[0]
        else:
            done = getattr(cluster, name)(*args)
            if done is not None:
                await done


async def converge_and_check(cluster: Cluster) -> None:
    pulled_before = cluster.pulled
    await cluster.anti_entropy()
    event(f"final anti-entropy pulled records: {cluster.pulled > pulled_before}")
    cluster.check_converged()

    # every replica purges expiries at the same instant: still identical, and reads agree
    end = cluster.now + max(SKEWS)
    for node in cluster.nodes:
        cluster.store(node).sweep(end)
    cluster.check_converged()
    for (app, key), _ in cluster.created.items():
        want = cluster.expected((app, key))
        for node in cluster.nodes:
            if want.live(end):
                record, value = cluster.store(node).get(app, key, end)
                assert value == cluster.values[(want.hlc, want.node)]
                assert record.version == want.version
            else:
                with pytest.raises(NotFound):
                    cluster.store(node).get(app, key, end)


# An example starts three servers and runs a few dozen sync calls over memory streams: tens
# of milliseconds, so the profile's number of examples (not more).
@settings(max_examples=settings().max_examples)
@given(st.lists(operations, min_size=25, max_size=120))
def test_three_replicas_converge(ops: list[tuple[Any, ...]]) -> None:
    async def body(cluster: Cluster) -> None:
        await run(cluster, ops)
        event(f"batches left undelivered: {min(len(cluster.in_flight), 5)}+")
        event(f"records stored: {min(len(cluster.created), 5)}+")
        await converge_and_check(cluster)

    on_a_cluster(body)


# --- hand cases ----------------------------------------------------------------------------------


def test_late_write_does_not_resurrect_a_delete() -> None:
    async def body(cluster: Cluster) -> None:
        cluster.put(0, 1, "k", b"old", None)
        cluster.hold(0, 1, 1 << 20)  # the write is on its way to B and C…
        cluster.hold(0, 2, 1 << 20)
        write_to_c = cluster.in_flight.pop()
        await cluster.deliver(0, duplicate=False)  # …B has it, C does not yet
        cluster.now += 10
        cluster.delete(1, 1, "k")  # B deletes it
        cluster.hold(1, 0, 1 << 20)
        await cluster.deliver(0, duplicate=True)  # the delete reaches A (and again later)
        await cluster.deliver(0, duplicate=False)
        await cluster.push(1, 2)  # and C
        assert not cluster.in_flight
        cluster.in_flight.append(write_to_c)  # the old write reaches C late
        await cluster.deliver(0, duplicate=False)
        for index, node in enumerate(cluster.nodes):
            record = cluster.store(node).record(1, "k")
            assert record is not None and record.tombstone
            with pytest.raises(NotFound):
                cluster.store(node).get(1, "k", cluster.wall(index))
        await cluster.anti_entropy()
        cluster.check_converged()

    on_a_cluster(body)


def test_concurrent_writes_resolve_last_writer_wins() -> None:
    async def body(cluster: Cluster) -> None:
        # B's clock runs 170 ms ahead, so its concurrent write is the later one even though A
        # wrote after it in real time.
        cluster.put(1, 1, "k", b"from B", None)
        cluster.now += 100
        cluster.put(0, 1, "k", b"from A", None)
        assert await cluster.anti_entropy() == 1
        cluster.check_converged()
        for index, node in enumerate(cluster.nodes):
            record, value = cluster.store(node).get(1, "k", cluster.wall(index))
            assert value == b"from B"
            wallets = {cluster.nodes[0].wallet: 1, cluster.nodes[1].wallet: 1}
            assert dict(record.clock) == wallets  # both writes' clocks joined

    on_a_cluster(body)


def test_same_millisecond_tie_breaks_on_the_node() -> None:
    async def body(cluster: Cluster) -> None:
        cluster.put(1, 1, "k", b"from B", None)
        cluster.now += 300  # C's wall runs 300 ms behind B's: it now reads what B's read then
        cluster.put(2, 1, "k", b"from C", None)  # the same HLC as B's: the greater wallet wins
        records = [cluster.store(cluster.nodes[i]).record(1, "k") for i in (1, 2)]
        assert records[0] is not None and records[1] is not None
        assert records[0].hlc == records[1].hlc
        await cluster.anti_entropy()
        cluster.check_converged()
        _, value = cluster.store(cluster.nodes[0]).get(1, "k", cluster.wall(0))
        assert value == b"from C"

    on_a_cluster(body)


def test_partitioned_replica_catches_up_by_anti_entropy_alone() -> None:
    async def body(cluster: Cluster) -> None:
        for i, key in enumerate(KEYS):
            cluster.put(i % 2, 1 + i % 2, key, bytes([i]) * 10, None)
            cluster.now += 5
        cluster.delete(0, 1, "a")
        # every push is lost
        for local, remote in itertools.permutations(range(3), 2):
            while cluster.link(local, remote).outbox.pending():
                cluster.hold(local, remote, 1 << 20)
        cluster.in_flight.clear()
        assert cluster.store(cluster.nodes[2]).records() == []
        await cluster.anti_entropy()
        cluster.check_converged()
        assert len(cluster.store(cluster.nodes[2]).records()) == len(KEYS)

    on_a_cluster(body)
