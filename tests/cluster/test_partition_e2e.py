"""Partitions and lost connections, made with real CONNECT proxies between real nodes.

Every node dials its peers through its own HTTP CONNECT proxy (``peer_proxy``, as an enclave
reaches other hosts through its egress proxy), so a test can cut a node off — its own proxy
refuses everything, the others' refuse it — and heal the cut, with real sockets throughout.
This is the real-socket smoke run; the partition cases run on a memory cluster under a
MockClock in test_partition.py.
"""

from __future__ import annotations

from typing import Any

import trio

from novakms.client.aio import Client
from novakms.cluster import replication
from tests.harness.world import APP, LIMITS, until, value_on, wait_everywhere
from tests.net.connectproxy import ConnectProxy


async def put(port: int, key: str, value: bytes, **options: Any) -> None:
    async with await Client.connect(f"127.0.0.1:{port}", signer=APP) as kms:
        await kms.kv_put(key, value, **options)


def digests(node: Any) -> dict[int, bytes]:
    return replication.app_digests(node.store.records())


async def test_a_cut_off_node_converges_after_the_partition_heals(
    world: Any, proxies: list[ConnectProxy]
) -> None:
    cluster, members = world
    nodes = [
        await cluster.start(s, port, peer_proxy=proxy.address)
        for (s, port), proxy in zip(members, proxies, strict=False)
    ]
    await until(
        lambda: all(
            n.master_secret is not None and not n.syncing and n.replicator.peer_count() == 2
            for n in nodes
        )
    )
    (_, pa), (_, pb), (_, pc) = members
    await put(pa, "doomed", b"old", acks=2)
    await put(pa, "conflict", b"before", acks=2)
    # Every peer channel went through the proxies.
    assert all(proxy.tunnels >= 2 for proxy in proxies[:3])

    # Cut C off: its own proxy refuses everything, A's and B's refuse C (open tunnels are cut).
    proxies[2].isolate()
    proxies[0].block(f"127.0.0.1:{pc}")
    proxies[1].block(f"127.0.0.1:{pc}")

    # Both sides keep serving writes.
    await put(pa, "a-side", b"written on A")
    await put(pc, "c-side", b"written on C")
    await put(pa, "conflict", b"from A")
    async with await Client.connect(f"127.0.0.1:{pa}", signer=APP) as a:
        await a.kv_delete("doomed")
    await trio.sleep(0.05)
    await put(pc, "conflict", b"from C, later")
    # The cut is real: several push and anti-entropy rounds later nothing crossed it.
    await wait_everywhere(members[:2], "a-side", b"written on A")
    await trio.sleep(3 * LIMITS.anti_entropy_interval)
    assert await value_on(pc, "a-side") is None
    assert await value_on(pc, "doomed") == b"old"  # C never saw the delete
    assert await value_on(pa, "c-side") is None
    assert await value_on(pb, "c-side") is None

    for proxy in proxies:
        proxy.heal()

    await wait_everywhere(members, "a-side", b"written on A")
    await wait_everywhere(members, "c-side", b"written on C")
    await wait_everywhere(members, "doomed", None)  # the delete wins over C's older copy
    await wait_everywhere(members, "conflict", b"from C, later")  # the later write everywhere
    await until(lambda: digests(nodes[0]) == digests(nodes[1]) == digests(nodes[2]))
    await trio.sleep(2 * LIMITS.anti_entropy_interval)
    assert await value_on(pc, "doomed") is None  # and it stays deleted
