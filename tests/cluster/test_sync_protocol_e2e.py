"""A proven peer that answers garbage to sync.* calls: the link is reset and counted, no crash."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from novakms.client.aio import Client
from novakms.cluster.proof import cluster_proof
from novakms.errors import BadRequest
from novakms.server.node import Node
from novakms.server.ops import dispatch
from tests.harness.build import replicator
from tests.harness.world import signer, until, wait_everywhere

APP = signer("app")
LYING_OPS = [op for op in dispatch.OPS if op.startswith("sync.") and op != "sync.hello"]


@pytest.fixture
def liars(monkeypatch: pytest.MonkeyPatch) -> set[Node]:
    """Nodes in this set prove the cluster secret (sync.hello) but answer ``{}`` to every other
    sync.* call, over their real server and peer channel."""
    lying: set[Node] = set()
    for op in LYING_OPS:
        auth, honest = dispatch.OPS[op]

        async def maybe_lie(
            ctx: dispatch.OpContext, args: Mapping[str, Any], honest: dispatch.Handler = honest
        ) -> dict[str, Any]:
            if ctx.wallet in {node.wallet for node in lying}:
                return {}  # the auth column (proven_peer) was checked before
            return await honest(ctx, args)

        monkeypatch.setitem(dispatch.OPS, op, dispatch.Op(auth, maybe_lie))
    return lying


async def test_a_peer_answering_empty_maps_is_a_counted_protocol_error(
    world: Any, liars: set[Node]
) -> None:
    cluster, members = world
    (a, port_a), (b, port_b), (liar, port_liar) = members
    node_a = await cluster.start(a, port_a)
    node_b = await cluster.start(b, port_b)
    liar_node = await cluster.start(liar, port_liar)
    nodes = (node_a, node_b, liar_node)
    await until(lambda: all(n.master_secret is not None and not n.syncing for n in nodes))
    # From now on the liar still proves the cluster secret but answers garbage.
    liars.add(liar_node)

    async with await Client.connect(f"127.0.0.1:{port_a}", signer=APP) as kms:
        await kms.kv_put("first", b"1")
    await wait_everywhere([(a, port_a), (b, port_b)], "first", b"1")

    # Pushes and anti-entropy rounds to the liar fail as protocol errors, again and again.
    await until(lambda: replicator(node_a).links[liar.wallet].protocol_errors >= 3)
    await until(lambda: replicator(node_b).links[liar.wallet].protocol_errors >= 3)
    to_liar = replicator(node_a).links[liar.wallet]
    assert to_liar.acked == 0  # `{}` is no acknowledgement
    assert to_liar.error is not None

    # The node kept running and keeps replicating with its honest peer.
    async with await Client.connect(f"127.0.0.1:{port_a}", signer=APP) as kms:
        await kms.kv_put("second", b"2")
        status = await kms.call("status")
    await wait_everywhere([(a, port_a), (b, port_b)], "second", b"2")
    await until(lambda: replicator(node_a).links[b.wallet].acked >= 2)
    peers = {p["wallet"]: p for p in status["cluster"]["peers"]}
    assert peers[liar.wallet]["protocol_errors"] >= 3
    assert peers[b.wallet]["protocol_errors"] == 0
    assert replicator(node_a).links[b.wallet].protocol_errors == 0
    assert node_b.store is not None and node_b.store.record(1, "second") is not None


async def test_a_proven_peers_next_request_gets_the_peer_decode_budget(world: Any) -> None:
    """Right after sync.hello, a message larger than an app's 1024-item budget is decoded."""
    cluster, members = world
    nodes = [await cluster.start(s, port) for s, port in members]
    await until(lambda: all(n.master_secret is not None and not n.syncing for n in nodes))
    (_, port_a), (b, _), _ = members
    secret = nodes[0].master_secret
    assert secret is not None
    async with await Client.connect(f"127.0.0.1:{port_a}", signer=b, role="peer") as peer:
        proof = cluster_proof(
            master_secret=secret, transcript_hash=peer.transcript_hash, direction="c2s"
        )
        await peer.call("sync.hello", {"proof": proof})
        # Decoded whole (an app's session would be closed for it), then refused as arguments.
        with pytest.raises(BadRequest):
            await peer.call("sync.digests", {"junk": list(range(5000))})
        await peer.call("sync.digests", {})  # the link is still up
