"""Partitions and lost connections on a memory cluster under a MockClock.

Each node dials its peers through its own dialer of the memory network, so a test cuts a node
off (its dials are refused, nobody else's reach it, open peer connections are severed) and
heals the cut without sockets or proxies. (One real-socket run: test_partition_e2e.py.)
"""

from __future__ import annotations

import logging

import pytest
import trio
from trio.testing import MockClock

from novakms.client.aio import Client
from novakms.errors import Unavailable
from tests.harness.build import replicator
from tests.harness.cluster import (
    MEMORY_LIMITS,
    MemoryCluster,
    digests,
    replace_limits,
    signer,
    until,
)

RECORDS = 1500
# The bulk writes must never meet the wallet's rate limit.
SMALL = replace_limits(max_frame=16_384, max_value_bytes=1024, wallet_burst=4 * RECORDS)


async def test_a_cut_off_node_converges_after_the_partition_heals(
    memory_cluster: MemoryCluster, autojump_clock: MockClock
) -> None:
    cluster = memory_cluster
    nodes = await cluster.start_all()
    (_, a), (_, b), (c, address_c) = cluster.members
    await cluster.put(a, "doomed", b"old", acks=2)
    await cluster.put(a, "conflict", b"before", acks=2)

    cluster.network.isolate(c.wallet)

    # Both sides keep serving writes.
    await cluster.put(a, "a-side", b"written on A")
    await cluster.put(address_c, "c-side", b"written on C")
    await cluster.put(a, "conflict", b"from A")
    async with await cluster.connect(a) as on_a:
        await on_a.kv_delete("doomed")
    await trio.sleep(0.05)
    await cluster.put(address_c, "conflict", b"from C, later")
    # The cut is real: several push and anti-entropy rounds later nothing crossed it.
    await cluster.wait_everywhere("a-side", b"written on A", [a, b])
    await trio.sleep(3 * MEMORY_LIMITS.anti_entropy_interval)
    assert await cluster.value_on(address_c, "a-side") is None
    assert await cluster.value_on(address_c, "doomed") == b"old"  # C never saw the delete
    assert await cluster.value_on(a, "c-side") is None
    assert await cluster.value_on(b, "c-side") is None

    cluster.network.heal()

    await cluster.wait_everywhere("a-side", b"written on A")
    await cluster.wait_everywhere("c-side", b"written on C")
    await cluster.wait_everywhere("doomed", None)  # the delete wins over C's older copy
    await cluster.wait_everywhere("conflict", b"from C, later")  # the later write everywhere
    await until(lambda: digests(nodes[0]) == digests(nodes[1]) == digests(nodes[2]))
    await trio.sleep(2 * MEMORY_LIMITS.anti_entropy_interval)
    assert await cluster.value_on(address_c, "doomed") is None  # and it stays deleted


async def write_bulk(cluster: MemoryCluster, address: str) -> None:
    """RECORDS values of 512 bytes (``bulk/00000`` …), 32 writes in flight on one connection."""
    writers = trio.CapacityLimiter(32)

    async def put(client: Client, i: int) -> None:
        async with writers:
            await client.kv_put(f"bulk/{i:05d}", bytes([i % 251]) * 512)

    async with await cluster.connect(address) as kms, trio.open_nursery() as nursery:
        for i in range(RECORDS):
            nursery.start_soon(put, kms, i)


async def test_a_joiner_that_loses_its_connection_mid_snapshot_resumes(
    memory_cluster: MemoryCluster, autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="novakms.replication")
    cluster = memory_cluster
    nodes = await cluster.start_all(SMALL)
    await write_bulk(cluster, cluster.members[0][1])
    await until(lambda: all(len(n.store.records()) == RECORDS for n in nodes))  # type: ignore[union-attr]

    # Everything the joiner dialed is cut once ~40 KB came back: well after the handshakes and
    # the secret, early in a ~1 MB snapshot of 16 KB chunks.
    who = signer("joiner")
    cluster.network.isolate_after(who.wallet, 40_000)
    joiner, address = await cluster.join(who, limits=SMALL)
    await until(
        lambda: (
            cluster.network.received.get(who.wallet, 0) >= 40_000
            and joiner.master_secret is not None
        )
    )
    await trio.sleep(2 * MEMORY_LIMITS.anti_entropy_interval)
    # Cut off mid-snapshot: still syncing, and saying so to apps.
    assert joiner.syncing
    snapshot = replicator(joiner).snapshot_status()
    assert snapshot["state"] == "syncing"
    assert 0 < snapshot["records"] < RECORDS and snapshot["total"] == RECORDS
    async with await cluster.connect(address) as kms:
        with pytest.raises(Unavailable) as info:
            await kms.kv_get("bulk/00000")
        assert info.value.reason == "syncing"
        status = await kms.call("status")
    assert status["syncing"] is True and status["cluster"]["snapshot"]["state"] == "syncing"

    cluster.network.heal()
    await until(lambda: not joiner.syncing, seconds=40)
    snapshot = replicator(joiner).snapshot_status()
    assert snapshot["state"] == "done"
    assert snapshot["resumed"] >= 1
    # Resumed after the last chunk received, not restarted: every record arrived exactly once.
    assert snapshot["records"] == RECORDS
    assert joiner.store is not None and len(joiner.store.records()) == RECORDS
    # Progress lines while it ran (at most one per 5 s, and the last one at the end).
    progress = [
        r.msg
        for r in caplog.records
        if isinstance(r.msg, dict)
        and r.msg["event"] == "snapshot_progress"
        and r.msg["node"] == who.wallet
    ]
    assert len(progress) >= 2 and progress[-1]["records"] == RECORDS
    assert {p["total"] for p in progress} == {RECORDS}
    assert digests(joiner) == digests(nodes[0])
    assert await cluster.value_on(address, "bulk/01234") == bytes([1234 % 251]) * 512
