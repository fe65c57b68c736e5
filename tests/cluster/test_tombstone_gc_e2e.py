"""Tombstone GC: forgotten early once every current peer has the tombstone, never before."""

from __future__ import annotations

import dataclasses
from typing import Any

import trio

from novakms.client.aio import Client
from tests.cluster.test_bootstrap_e2e import LIMITS, signer, until, world
from tests.cluster.test_partition_e2e import proxies
from tests.cluster.test_replication_e2e import APP, value_on, wait_everywhere
from tests.net.connectproxy import ConnectProxy

__all__ = ["proxies", "world"]

GC = dataclasses.replace(LIMITS, tombstone_gc_delay=0.3)


def grave(node: Any, key: str) -> Any:
    """What the node stores under ``key`` (any app): the record, or None."""
    found = [r for r in node.store.records() if r.key == key]
    return found[0] if found else None


async def start_all(world: Any, limits: Any = GC) -> tuple[Any, list[tuple[Any, int]], list[Any]]:
    cluster, members = world
    nodes = [await cluster.start(s, port, limits=limits) for s, port in members]
    await until(
        lambda: all(
            n.master_secret is not None and not n.syncing and n.replicator.peer_count() == 2
            for n in nodes
        )
    )
    return cluster, members, nodes


async def test_a_tombstone_every_peer_holds_is_forgotten_everywhere(world: Any) -> None:
    cluster, members, nodes = await start_all(world)
    assert GC.tombstone_retention == 86_400  # the retention bound is a day away
    async with await Client.connect(f"127.0.0.1:{members[0][1]}", signer=APP) as a:
        await a.kv_put("doomed", b"v", acks=2)
        await a.kv_delete("doomed")
        # Held here at once (collecting it takes tombstone_gc_delay and every peer's ack).
        assert grave(nodes[0], "doomed") is not None and grave(nodes[0], "doomed").tombstone
    await wait_everywhere(members, "doomed", None)
    await until(lambda: all(grave(n, "doomed") is None for n in nodes))
    assert nodes[0].replicator.tombstones_collected == 1
    async with await Client.connect(f"127.0.0.1:{members[0][1]}") as kms:
        assert (await kms.status())["cluster"]["tombstones_collected"] == 1
    # Several anti-entropy rounds later nothing came back, and the key stays deleted.
    await trio.sleep(4 * GC.anti_entropy_interval)
    for n, (_, port) in zip(nodes, members, strict=True):
        assert grave(n, "doomed") is None
        assert await value_on(port, "doomed") is None


async def test_a_tombstone_waits_for_a_peer_that_is_down(world: Any) -> None:
    cluster, members, nodes = await start_all(world)
    (_, pa), _, (c, pc) = members
    async with await Client.connect(f"127.0.0.1:{pa}", signer=APP) as a:
        await a.kv_put("doomed", b"v", acks=2)
        cluster.stop(nodes[2])  # C is down but still a current peer: it cannot acknowledge
        await a.kv_delete("doomed")
    await until(
        lambda: grave(nodes[1], "doomed") is not None and grave(nodes[1], "doomed").tombstone
    )
    await trio.sleep(GC.tombstone_gc_delay + 4 * GC.anti_entropy_interval)
    assert grave(nodes[0], "doomed").tombstone and grave(nodes[1], "doomed").tombstone
    assert nodes[0].replicator.tombstones_collected == 0
    # C returns (empty); the tombstone reaches it, is acknowledged, and only then collected.
    restarted = await cluster.start(c, pc, limits=GC)
    await until(lambda: all(grave(n, "doomed") is None for n in (*nodes[:2], restarted)))
    assert nodes[0].replicator.tombstones_collected == 1
    await wait_everywhere(members, "doomed", None)


async def test_a_peer_with_an_older_change_still_queued_keeps_the_tombstone(
    world: Any, proxies: list[ConnectProxy]
) -> None:
    cluster, members = world
    nodes = [
        await cluster.start(s, port, limits=GC, peer_proxy=proxy.address)
        for (s, port), proxy in zip(members, proxies, strict=False)
    ]
    await until(
        lambda: all(
            n.master_secret is not None and not n.syncing and n.replicator.peer_count() == 2
            for n in nodes
        )
    )
    (_, pa), (b, pb), _ = members
    async with await Client.connect(f"127.0.0.1:{pa}", signer=APP) as a:
        await a.kv_put("k", b"first", acks=2)
        # One-way cut: B cannot reach A, A still reaches B.
        proxies[1].block(f"127.0.0.1:{pa}")
        async with await Client.connect(f"127.0.0.1:{pb}", signer=APP) as on_b:
            await on_b.kv_put("k", b"stale on B")  # queued on B for A, which it cannot reach
        await trio.sleep(0.05)
        await a.kv_delete("k")  # newer than B's write; B and C acknowledge it
    await until(lambda: all(grave(n, "k").tombstone for n in nodes))
    assert nodes[1].replicator.has_pending(grave(nodes[1], "k").app_id, "k")
    # A's GC rounds ask first: B still has its older write queued, so nobody forgets.
    await trio.sleep(GC.tombstone_gc_delay + 4 * GC.anti_entropy_interval)
    assert all(grave(n, "k").tombstone for n in nodes)
    assert nodes[0].replicator.tombstones_collected == 0
    # Healed: B's stale write reaches A, loses to the tombstone, and only then is it collected.
    proxies[1].heal()
    await until(lambda: all(grave(n, "k") is None for n in nodes))
    assert nodes[0].replicator.tombstones_collected == 1
    await wait_everywhere(members, "k", None)


async def test_a_node_that_joined_after_the_delete_does_not_hold_up_the_collection(
    world: Any,
) -> None:
    slow = dataclasses.replace(GC, tombstone_gc_delay=3.0)  # time for a node to join first
    cluster, members, nodes = await start_all(world, slow)
    async with await Client.connect(f"127.0.0.1:{members[0][1]}", signer=APP) as a:
        await a.kv_put("doomed", b"v", acks=2)
        await a.kv_delete("doomed")
    # A fourth node joins: a current peer that never received the tombstone by push (it gets
    # it in its snapshot), so only anti-entropy's equal digests can tell A that it holds it.
    joiner, port = await cluster.join(signer("joiner"), limits=slow)
    await until(lambda: not joiner.syncing and joiner.master_secret is not None)
    assert grave(joiner, "doomed").tombstone
    await until(lambda: all(grave(n, "doomed") is None for n in (*nodes, joiner)))
    assert nodes[0].replicator.tombstones_collected == 1
    assert await value_on(port, "doomed") is None
