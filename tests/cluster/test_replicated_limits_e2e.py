"""Replicated records obey the record limits and the quotas of the node that merges them."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any

import pytest

from novakms.client.aio import Client
from novakms.cluster.proof import cluster_proof
from novakms.cluster.replication import record_to_wire
from novakms.errors import Unavailable
from novakms.server.ops import dispatch
from novakms.store.records import HLC_LOGICAL_BITS, Record
from tests.harness.build import replicator
from tests.harness.world import LIMITS, signer, until, wait_everywhere

APP = signer("app")


def tombstone(key: str, clock: tuple[tuple[str, int], ...], writer: str) -> Record:
    return Record(
        app_id=1,
        key=key,
        sealed=None,
        clock=clock,
        hlc=int(time.time() * 1000) << HLC_LOGICAL_BITS,
        node=writer,
    )


async def test_a_pushed_record_with_a_huge_clock_is_refused(world: Any) -> None:
    cluster, members = world
    nodes = [await cluster.start(s, port) for s, port in members]
    await until(lambda: all(n.master_secret is not None and not n.syncing for n in nodes))
    target, (peer, _) = nodes[0], members[1]
    huge_clock = tuple((f"0x{i:040x}", 1) for i in range(20_000))  # ~920 KB of clock
    huge = tombstone("huge", huge_clock, huge_clock[0][0])
    small = tombstone("small", ((peer.wallet, 1),), peer.wallet)
    async with await Client.connect(
        f"127.0.0.1:{members[0][1]}",
        signer=peer,
        role="peer",
        max_frame=LIMITS.max_frame,
        timeout=10,
    ) as channel:
        assert target.master_secret is not None
        proof = cluster_proof(
            master_secret=target.master_secret,
            transcript_hash=channel.transcript_hash,
            direction="c2s",
        )
        await channel.call("sync.hello", {"proof": proof})
        # The server sets a message's decode budget before reading it: the message after
        # sync.hello is still read with the unregistered budget (max_request_items).
        await channel.call("health")
        answer = await channel.call(
            "sync.push", {"records": [record_to_wire(huge), record_to_wire(small)]}
        )
    assert answer == {"accepted": 1, "rejected": [0], "deferred": []}
    assert target.store is not None
    assert target.store.record(1, "huge") is None
    assert target.store.record(1, "small") == small
    assert target.replication_rejected == 1


QUOTA = 2_000  # one 1000-byte value (+ 384 overhead + key) fits, two do not
QUOTA_LIMITS = dataclasses.replace(LIMITS, app_quota_bytes=QUOTA)


@pytest.fixture
def paused(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """While ``paused[0]``, every node answers sync.* calls (but sync.hello) ``unavailable``:
    no replication, so two nodes can each take a write the other has not seen."""
    flag = [False]
    for op in [op for op in dispatch.OPS if op.startswith("sync.") and op != "sync.hello"]:
        auth, honest = dispatch.OPS[op]

        async def maybe_pause(
            ctx: dispatch.OpContext, args: Mapping[str, Any], honest: dispatch.Handler = honest
        ) -> dict[str, Any]:
            if flag[0]:
                raise Unavailable("replication paused by the test", reason="paused")
            return await honest(ctx, args)

        monkeypatch.setitem(dispatch.OPS, op, dispatch.Op(auth, maybe_pause))
    return flag


async def test_merges_obey_the_app_quota_and_stay_queued_at_the_sender(
    world: Any, paused: list[bool]
) -> None:
    cluster, members = world
    nodes = [await cluster.start(s, port, limits=QUOTA_LIMITS) for s, port in members]
    await until(lambda: all(n.master_secret is not None and not n.syncing for n in nodes))
    a, b, c = nodes
    paused[0] = True
    async with await Client.connect(f"127.0.0.1:{members[0][1]}", signer=APP) as kms:
        await kms.kv_put("on-a", b"a" * 1000)
    async with await Client.connect(f"127.0.0.1:{members[1][1]}", signer=APP) as kms:
        await kms.kv_put("on-b", b"b" * 1000)
    paused[0] = False

    # Each node refuses the second value: the app never holds more than its quota on a node.
    to_b = replicator(a).links[b.wallet]
    to_a = replicator(b).links[a.wallet]
    await until(lambda: to_b.deferred >= 1 and to_a.deferred >= 1)
    for node in nodes:
        assert node.store is not None and node.store.usage(1) <= QUOTA
    assert b.store is not None and b.store.record(1, "on-a") is None
    assert a.store is not None and a.store.record(1, "on-b") is None
    assert to_b.outbox.has(1, "on-a") or (1, "on-a") in to_b.inflight  # still queued
    async with await Client.connect(f"127.0.0.1:{members[0][1]}") as kms:
        peers = {p["wallet"]: p for p in (await kms.call("status"))["cluster"]["peers"]}
    assert peers[b.wallet]["deferred"] >= 1 and peers[b.wallet]["pending"] >= 0

    # Freeing room lets the queued record through, everywhere.
    async with await Client.connect(f"127.0.0.1:{members[1][1]}", signer=APP) as kms:
        await kms.kv_delete("on-b")
    await wait_everywhere(members, "on-a", b"a" * 1000)
    await wait_everywhere(members, "on-b", None)
    await until(lambda: not to_b.outbox.pending())
    for node in (a, b, c):
        assert node.store is not None and node.store.usage(1) <= QUOTA
