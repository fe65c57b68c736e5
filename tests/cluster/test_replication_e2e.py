"""KV replication between real nodes: pushes, anti-entropy, conflicts, deletes, late joiners."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from novakms.client.aio import Client
from novakms.errors import Forbidden
from tests.harness.build import replicator
from tests.harness.cluster import stored
from tests.harness.world import APP, LIMITS, signer, started, until, value_on, wait_everywhere


async def test_a_write_on_one_node_is_readable_on_every_other(world: Any) -> None:
    cluster, members, nodes = await started(world)
    async with await Client.connect(f"127.0.0.1:{members[0][1]}", signer=APP) as kms:
        await kms.kv_put("db/password", b"s3cret")
    await wait_everywhere(members, "db/password", b"s3cret")
    # derive gives identical keys everywhere, too (one secret)
    keys = set()
    for _, port in members:
        async with await Client.connect(f"127.0.0.1:{port}", signer=APP) as kms:
            keys.add((await kms.derive("k")).key)
    assert len(keys) == 1


async def test_concurrent_conflicting_writes_converge(world: Any) -> None:
    cluster, members, nodes = await started(world)
    async with (
        await Client.connect(f"127.0.0.1:{members[0][1]}", signer=APP) as a,
        await Client.connect(f"127.0.0.1:{members[1][1]}", signer=APP) as b,
    ):
        await a.kv_put("shared", b"from-a")
        await b.kv_put("shared", b"from-b")
    await until(
        lambda: (
            len({stored(n, 1, "shared") for n in nodes}) == 1
            and stored(nodes[0], 1, "shared") is not None
        )
    )
    winner = stored(nodes[0], 1, "shared")
    assert all(stored(n, 1, "shared") == winner for n in nodes)
    assert (await value_on(members[2][1], "shared")) in (b"from-a", b"from-b")


async def test_a_delete_stays_deleted(world: Any) -> None:
    cluster, members, nodes = await started(world)
    async with await Client.connect(f"127.0.0.1:{members[0][1]}", signer=APP) as a:
        await a.kv_put("temp", b"v")
    await wait_everywhere(members, "temp", b"v")
    async with await Client.connect(f"127.0.0.1:{members[2][1]}", signer=APP) as c:
        await c.kv_delete("temp")
    await wait_everywhere(members, "temp", None)
    # Several more anti-entropy rounds later it is still deleted on every node.
    rounds = [replicator(n).links for n in nodes]
    await until(
        lambda: all(
            link.pulled >= 0 and link.last_ok for links in rounds for link in links.values()
        )
    )
    for _, port in members:
        assert await value_on(port, "temp") is None


async def test_a_late_node_catches_up_from_a_snapshot(world: Any) -> None:
    cluster, members, nodes = await started(world)
    async with await Client.connect(f"127.0.0.1:{members[0][1]}", signer=APP) as a:
        for i in range(30):
            await a.kv_put(f"item/{i:02d}", f"value-{i}".encode())
    await wait_everywhere(members, "item/29", b"value-29")
    node, port = await cluster.join(signer("late"))
    await until(lambda: node.master_secret is not None and not node.syncing)
    assert node.store is not None and len(node.store.records()) == 30
    assert await value_on(port, "item/07") == b"value-7"
    async with await Client.connect(f"127.0.0.1:{port}") as kms:
        status = await kms.call("status")
    peers = status["cluster"]["peers"]
    assert {p["wallet"] for p in peers} == {s.wallet for s, _ in members}
    snapshot = status["cluster"]["snapshot"]
    assert snapshot["state"] == "done" and snapshot["records"] == 30
    assert snapshot["total"] == 30  # what the serving peer held: the progress goal
    assert snapshot["peer"] in {s.wallet for s, _ in members}
    assert status["syncing"] is False


async def test_sync_ops_need_the_cluster_proof(world: Any) -> None:
    cluster, members, nodes = await started(world)
    (a, pa), (b, _), _ = members
    async with await Client.connect(f"127.0.0.1:{pa}", signer=b, role="peer") as peer:
        with pytest.raises(Forbidden) as info:
            await peer.call("sync.digests")
        assert info.value.details["reason"] == "no_cluster_proof"
        with pytest.raises(Forbidden) as info:
            await peer.call("sync.hello", {"proof": b"\x00" * 32})
        assert info.value.details["reason"] == "bad_cluster_proof"


async def test_a_restarted_node_rejoins_with_the_same_secret_and_data(world: Any) -> None:
    cluster, members, nodes = await started(world)
    (_, pa), _, (c, pc) = members
    async with await Client.connect(f"127.0.0.1:{pa}", signer=APP) as a:
        await a.kv_put("before", b"1")
    await wait_everywhere(members, "before", b"1")
    fingerprint = nodes[0].fingerprint()
    cluster.stop(nodes[2])  # node C crashes: its memory is gone
    async with await Client.connect(f"127.0.0.1:{pa}", signer=APP) as a:
        await a.kv_put("while-down", b"2")
        await a.kv_delete("before")
    await trio.sleep(0.2)
    restarted = await cluster.start(c, pc)
    await until(lambda: restarted.master_secret is not None)
    assert restarted.fingerprint() == fingerprint
    await wait_everywhere(members, "while-down", b"2")
    await wait_everywhere(members, "before", None)


async def test_sync_keys_answers_stay_within_a_frame(world: Any) -> None:
    import dataclasses

    from novakms.cluster.proof import cluster_proof

    cluster, members = world
    (a, pa), (b, _), _ = members
    small = dataclasses.replace(LIMITS, max_frame=65536, max_value_bytes=1024)
    node = await cluster.start(a, pa, secret=b"\x05" * 32, limits=small)
    store = node.store
    assert store is not None
    for i in range(2500):
        store.put(1, f"bulk/{i:05d}-{'x' * 40}", b"v", 1_000)
    # A peer asks for every bucket at once: the answer is cut to fit a frame, and says so.
    async with await Client.connect(f"127.0.0.1:{pa}", signer=b, role="peer") as peer:
        proof = cluster_proof(
            master_secret=b"\x05" * 32, transcript_hash=peer.transcript_hash, direction="c2s"
        )
        await peer.call("sync.hello", {"proof": proof})
        answer = await peer.call("sync.keys", {"app_id": 1, "buckets": list(range(64))})
    assert answer["truncated"] is True
    assert 0 < len(answer["keys"]) < 2500
