"""Partitions and lost connections, made with real CONNECT proxies between real nodes.

Every node dials its peers through its own HTTP CONNECT proxy (``peer_proxy``, as an enclave
reaches other hosts through its egress proxy), so a test can cut a node off — its own proxy
refuses everything, the others' refuse it — and heal the cut, with real sockets throughout.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import pytest
import trio

from novakms.client.aio import Client
from novakms.cluster import replication
from novakms.errors import Unavailable
from tests.cluster.test_bootstrap_e2e import LIMITS, signer, until, world
from tests.cluster.test_replication_e2e import APP, value_on, wait_everywhere
from tests.net.connectproxy import ConnectProxy, connect_proxy

__all__ = ["world"]


@pytest.fixture
async def proxies() -> AsyncIterator[list[ConnectProxy]]:
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(connect_proxy()) for _ in range(4)]


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


RECORDS = 1500
# The bulk writes must never meet the wallet's rate limit: a burst that covers all of them makes
# the test independent of how fast the machine refills the bucket.
SMALL = dataclasses.replace(
    LIMITS, max_frame=16_384, max_value_bytes=1024, wallet_burst=4 * RECORDS
)


async def write_bulk(port: int) -> None:
    """RECORDS values of 512 bytes (``bulk/00000`` …), 32 writes in flight on one connection."""
    writers = trio.CapacityLimiter(32)

    async def put(client: Client, i: int) -> None:
        async with writers:
            await client.kv_put(f"bulk/{i:05d}", bytes([i % 251]) * 512)

    async with (
        await Client.connect(f"127.0.0.1:{port}", signer=APP) as kms,
        trio.open_nursery() as nursery,
    ):
        for i in range(RECORDS):
            nursery.start_soon(put, kms, i)


async def test_a_joiner_that_loses_its_connection_mid_snapshot_resumes(
    world: Any, proxies: list[ConnectProxy]
) -> None:
    cluster, members = world
    nodes = [await cluster.start(s, port, limits=SMALL) for s, port in members]
    await until(lambda: all(n.master_secret is not None and not n.syncing for n in nodes))
    await write_bulk(members[0][1])
    await until(lambda: all(len(n.store.records()) == RECORDS for n in nodes))

    # The joiner dials through its own proxy, which cuts everything once ~40 KB came back:
    # well after the handshakes and the secret, early in a ~1 MB snapshot of 16 KB chunks.
    proxy = proxies[3]
    proxy.isolate_after(40_000)
    joiner, port = await cluster.join(signer("joiner"), limits=SMALL, peer_proxy=proxy.address)
    await until(lambda: proxy.relayed >= 40_000 and joiner.master_secret is not None)
    await trio.sleep(2 * LIMITS.anti_entropy_interval)
    # Cut off mid-snapshot: still syncing, and saying so to apps.
    assert joiner.syncing
    snapshot = joiner.replicator.snapshot_status()
    assert snapshot["state"] == "syncing"
    assert 0 < snapshot["records"] < RECORDS
    async with await Client.connect(f"127.0.0.1:{port}", signer=APP) as kms:
        with pytest.raises(Unavailable) as info:
            await kms.kv_get("bulk/00000")
        assert info.value.reason == "syncing"
        status = await kms.status()
    assert status["syncing"] is True and status["cluster"]["snapshot"]["state"] == "syncing"

    proxy.heal()
    await until(lambda: not joiner.syncing, seconds=40)
    snapshot = joiner.replicator.snapshot_status()
    assert snapshot["state"] == "done"
    assert snapshot["resumed"] >= 1
    # Resumed after the last chunk received, not restarted: every record arrived exactly once.
    assert snapshot["records"] == RECORDS
    assert len(joiner.store.records()) == RECORDS
    assert digests(joiner) == digests(nodes[0])
    assert await value_on(port, "bulk/01234") == bytes([1234 % 251]) * 512
