"""Tombstone GC on a memory cluster under a MockClock: forgotten early once every current peer
has the tombstone, never before. (One real-socket run: test_tombstone_gc_e2e.py.)"""

from __future__ import annotations

import trio
from trio.testing import MockClock

from tests.harness.build import replicator
from tests.harness.cluster import MemoryCluster, grave, replace_limits, signer, until

GC = replace_limits(tombstone_gc_delay=0.3)


async def test_a_tombstone_every_peer_holds_is_forgotten_everywhere(
    memory_cluster: MemoryCluster,
    autojump_clock: MockClock,
) -> None:
    cluster = memory_cluster
    nodes = await cluster.start_all(GC)
    a = cluster.address(nodes[0])
    assert GC.tombstone_retention == 86_400  # the retention bound is a day away
    async with await cluster.connect(a) as kms:
        await kms.kv_put("doomed", b"v", acks=2)
        await kms.kv_delete("doomed")
        # Held here at once (collecting it takes tombstone_gc_delay and every peer's ack).
        assert grave(nodes[0], "doomed") is not None and grave(nodes[0], "doomed").tombstone
    await cluster.wait_everywhere("doomed", None)
    await until(lambda: all(grave(n, "doomed") is None for n in nodes))
    assert replicator(nodes[0]).tombstones_collected == 1
    async with await cluster.connect(a, signer=None) as kms:
        assert (await kms.call("status"))["cluster"]["tombstones_collected"] == 1
    # Several anti-entropy rounds later nothing came back, and the key stays deleted.
    await trio.sleep(4 * GC.anti_entropy_interval)
    for n in nodes:
        assert grave(n, "doomed") is None
        assert await cluster.value_on(cluster.address(n), "doomed") is None


async def test_a_tombstone_is_kept_for_the_gc_delay(
    memory_cluster: MemoryCluster, autojump_clock: MockClock
) -> None:
    """Every peer acknowledged it at once, yet it stays until ``tombstone_gc_delay`` passed."""
    cluster = memory_cluster
    slow = replace_limits(tombstone_gc_delay=30.0)
    nodes = await cluster.start_all(slow)
    async with await cluster.connect(cluster.address(nodes[0])) as kms:
        await kms.kv_put("doomed", b"v", acks=2)
        await kms.kv_delete("doomed")
    deleted = trio.current_time()
    await trio.sleep(20 * slow.anti_entropy_interval)  # 10 s: acknowledged, digests equal
    assert all(grave(n, "doomed").tombstone for n in nodes)
    assert replicator(nodes[0]).tombstones_collected == 0
    await until(lambda: all(grave(n, "doomed") is None for n in nodes), seconds=60)
    assert trio.current_time() - deleted >= slow.tombstone_gc_delay


async def test_a_tombstone_waits_for_a_peer_that_is_down(
    memory_cluster: MemoryCluster, autojump_clock: MockClock
) -> None:
    cluster = memory_cluster
    nodes = await cluster.start_all(GC)
    (_, a), _, (c, address_c) = cluster.members
    async with await cluster.connect(a) as kms:
        await kms.kv_put("doomed", b"v", acks=2)
        cluster.stop(nodes[2])  # C is down but still a current peer: it cannot acknowledge
        await kms.kv_delete("doomed")
    await until(
        lambda: grave(nodes[1], "doomed") is not None and grave(nodes[1], "doomed").tombstone
    )
    await trio.sleep(GC.tombstone_gc_delay + 4 * GC.anti_entropy_interval)
    assert grave(nodes[0], "doomed").tombstone and grave(nodes[1], "doomed").tombstone
    assert replicator(nodes[0]).tombstones_collected == 0
    # C returns (empty); the tombstone reaches it, is acknowledged, and only then collected.
    restarted = await cluster.start(c, address_c, limits=GC)
    await until(lambda: all(grave(n, "doomed") is None for n in (*nodes[:2], restarted)))
    assert replicator(nodes[0]).tombstones_collected == 1
    await cluster.wait_everywhere("doomed", None)


async def test_a_peer_with_an_older_change_still_queued_keeps_the_tombstone(
    memory_cluster: MemoryCluster,
    autojump_clock: MockClock,
) -> None:
    cluster = memory_cluster
    nodes = await cluster.start_all(GC)
    (_, a), (b, address_b), _ = cluster.members
    async with await cluster.connect(a) as on_a:
        await on_a.kv_put("k", b"first", acks=2)
        # One-way cut: B cannot reach A, A still reaches B.
        cluster.network.block(b.wallet, a)
        async with await cluster.connect(address_b) as on_b:
            await on_b.kv_put("k", b"stale on B")  # queued on B for A, which it cannot reach
        await trio.sleep(0.05)
        await on_a.kv_delete("k")  # newer than B's write; B and C acknowledge it
    await until(lambda: all(grave(n, "k").tombstone for n in nodes))
    assert replicator(nodes[1]).has_pending(grave(nodes[1], "k").app_id, "k")
    # A's GC rounds ask first: B still has its older write queued, so nobody forgets.
    await trio.sleep(GC.tombstone_gc_delay + 4 * GC.anti_entropy_interval)
    assert all(grave(n, "k").tombstone for n in nodes)
    assert replicator(nodes[0]).tombstones_collected == 0
    # Healed: B's stale write reaches A, loses to the tombstone, and only then is it collected.
    cluster.network.heal()
    await until(lambda: all(grave(n, "k") is None for n in nodes))
    assert replicator(nodes[0]).tombstones_collected == 1
    await cluster.wait_everywhere("k", None)


async def test_a_node_that_joined_after_the_delete_does_not_hold_up_the_collection(
    memory_cluster: MemoryCluster,
    autojump_clock: MockClock,
) -> None:
    cluster = memory_cluster
    slow = replace_limits(GC, tombstone_gc_delay=3.0)  # time for a node to join first
    nodes = await cluster.start_all(slow)
    async with await cluster.connect(cluster.address(nodes[0])) as kms:
        await kms.kv_put("doomed", b"v", acks=2)
        await kms.kv_delete("doomed")
    # A fourth node joins: a current peer that never received the tombstone by push (it gets
    # it in its snapshot), so only anti-entropy's equal digests can tell A that it holds it.
    joiner, address = await cluster.join(signer("joiner"), limits=slow)
    await until(lambda: not joiner.syncing and joiner.master_secret is not None)
    assert grave(joiner, "doomed").tombstone
    await until(lambda: all(grave(n, "doomed") is None for n in (*nodes, joiner)))
    assert replicator(nodes[0]).tombstones_collected == 1
    assert await cluster.value_on(address, "doomed") is None
