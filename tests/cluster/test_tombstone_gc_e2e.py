"""Tombstone GC over real sockets and a real chain: the smoke run.

The GC cases (the delay, a peer that is down, a peer with an older change queued, a joiner)
run on a memory cluster under a MockClock: test_tombstone_gc.py.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import trio

from novakms.client.aio import Client
from tests.harness.build import replicator
from tests.harness.world import APP, LIMITS, until, value_on, wait_everywhere

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
            n.master_secret is not None and not n.syncing and replicator(n).peer_count() == 2
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
    assert replicator(nodes[0]).tombstones_collected == 1
    async with await Client.connect(f"127.0.0.1:{members[0][1]}") as kms:
        assert (await kms.call("status"))["cluster"]["tombstones_collected"] == 1
    # Several anti-entropy rounds later nothing came back, and the key stays deleted.
    await trio.sleep(4 * GC.anti_entropy_interval)
    for n, (_, port) in zip(nodes, members, strict=True):
        assert grave(n, "doomed") is None
        assert await value_on(port, "doomed") is None
