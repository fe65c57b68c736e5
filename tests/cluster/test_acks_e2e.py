"""``kv.put`` waiting for peer acknowledgements, and the per-peer lag ``status`` reports."""

from __future__ import annotations

from typing import Any

import pytest

from novakms.chain import abi
from novakms.client.aio import Client
from novakms.dev.world import enroll_version
from novakms.errors import NotFound, Unavailable
from tests.harness.build import replicator
from tests.harness.world import APP, LIMITS, signer, started, until, value_on, wait_everywhere


async def connected(world: Any) -> tuple[Any, list[tuple[Any, int]], list[Any]]:
    cluster, members, nodes = await started(world)
    await until(lambda: all(replicator(n).peer_count() == 2 for n in nodes))
    return cluster, members, nodes


async def peer_status(port: int) -> dict[str, Any]:
    async with await Client.connect(f"127.0.0.1:{port}") as kms:
        status = await kms.call("status")
    return {p["wallet"]: p for p in status["cluster"]["peers"]}


async def test_put_with_acks_answers_once_the_peers_hold_the_write(world: Any) -> None:
    cluster, members, nodes = await connected(world)
    async with await Client.connect(f"127.0.0.1:{members[0][1]}", signer=APP) as a:
        result = await a.kv_put("k", b"acknowledged", acks=2)
        assert result.acked == 2
        # Acknowledged means stored: both peers serve it now, with no waiting or polling.
        for _, port in members[1:]:
            assert await value_on(port, "k") == b"acknowledged"
        # Without acks the answer does not wait for anyone.
        assert (await a.kv_put("k2", b"v")).acked == 0
    peers = await peer_status(members[0][1])
    assert all(p["acked"] >= 1 and p["last_ack_ms"] is not None for p in peers.values())
    # `nodes` reports what replication knows about reaching each peer.
    async with await Client.connect(f"127.0.0.1:{members[0][1]}") as kms:
        listed = {n["wallet"]: n["probe"] for n in (await kms.call("nodes"))["nodes"]}
    assert listed.pop(members[0][0].wallet) is None
    assert len(listed) == 2
    assert all(p["connected"] and p["last_ok_ms"] and p["error"] is None for p in listed.values())


async def test_more_acks_than_peers_is_refused_before_writing(world: Any) -> None:
    cluster, members, nodes = await connected(world)
    async with await Client.connect(f"127.0.0.1:{members[0][1]}", signer=APP) as a:
        with pytest.raises(Unavailable) as info:
            await a.kv_put("never", b"v", acks=3)
        assert info.value.reason == "not_enough_peers"
        assert info.value.details["peers"] == 2
        with pytest.raises(NotFound):
            await a.kv_get("never")


async def test_acks_timeout_reports_the_count_and_keeps_the_write(world: Any) -> None:
    cluster, members, nodes = await connected(world)
    (_, pa), (b, _), (c, pc) = members
    cluster.stop(nodes[2])  # C is down but still an operator on chain: a current peer
    async with await Client.connect(f"127.0.0.1:{pa}", signer=APP) as a:
        with pytest.raises(Unavailable) as info:
            await a.kv_put("partial", b"v", acks=2)
        assert info.value.reason == "acks_timeout"
        assert info.value.details["acked"] == 1
        assert (await a.kv_get("partial")).version == info.value.details["version"]
    assert LIMITS.ack_timeout == 1.0
    # B acknowledged; C's change waits in A's outbox, and status shows how long it has waited.
    peers = await peer_status(pa)
    assert peers[b.wallet]["lag_ms"] == 0 and peers[b.wallet]["pending"] == 0
    assert peers[c.wallet]["pending"] >= 1 and peers[c.wallet]["lag_ms"] >= 1000
    # C comes back (empty, as after a crash): the pending change reaches it and the lag clears.
    await cluster.start(c, pc)
    link = replicator(nodes[0]).links[c.wallet]
    await until(lambda: link.outbox.pending() == 0 and link.inflight_since is None)
    peers = await peer_status(pa)
    assert peers[c.wallet]["lag_ms"] == 0 and peers[c.wallet]["pending"] == 0
    await wait_everywhere([(c, pc)], "partial", b"v")


async def test_a_revoked_kms_version_is_no_longer_a_peer(world: Any) -> None:
    cluster, members, nodes = await connected(world)
    (_, pa), _, _ = members
    # D runs KMS version 2; the others version 1.
    await enroll_version(
        cluster.admin, cluster.chain.nova_app_registry, cluster.chain.kms_app_id, "kms2"
    )
    d = signer("node-v2")
    await cluster.join(d, version_id=2)
    await until(lambda: replicator(nodes[0]).peer_count() == 3)
    async with await Client.connect(f"127.0.0.1:{pa}", signer=APP) as a:
        assert (await a.kv_put("before", b"v", acks=3)).acked == 3
        # The owner revokes version 2: within a poll D is out of A's dial / push / ack set.
        await cluster.admin.send(
            cluster.chain.nova_app_registry,
            abi.nova_app_registry().encode_call("revokeVersion", cluster.chain.kms_app_id, 2),
        )
        await until(lambda: replicator(nodes[0]).peer_count() == 2)
        assert d.wallet not in replicator(nodes[0]).links
        with pytest.raises(Unavailable) as info:
            await a.kv_put("after", b"v", acks=3)
        assert info.value.reason == "not_enough_peers"
        assert (await a.kv_put("after", b"v", acks=2)).acked == 2
        listed = {n["wallet"]: n for n in (await a.call("nodes"))["nodes"]}
    assert (listed[d.wallet]["authorized"], listed[d.wallet]["reason"]) == (
        False,
        "version_revoked",
    )
    assert all(listed[s.wallet]["authorized"] for s, _ in members)
