"""The master-secret bootstrap over real peer channels, with the registries on a real anvil."""

from __future__ import annotations

from typing import Any

import pytest

from novakms.chain import abi
from novakms.client.aio import Client
from novakms.cluster.peering import bootstrap_round
from novakms.cluster.proof import cluster_proof
from novakms.crypto.kdf import secret_fingerprint
from novakms.dev.world import enroll_version
from novakms.errors import Forbidden, Unavailable
from tests.harness.world import signer, until


async def test_simultaneous_start_gives_exactly_one_secret(world: Any) -> None:
    cluster, members = world
    nodes = [await cluster.start(s, port) for s, port in members]
    await until(lambda: all(n.master_secret is not None for n in nodes))
    assert len({n.fingerprint() for n in nodes}) == 1
    # Every node then serves the same keys to an app.
    app = signer("app")
    keys = set()
    for _, port in members:
        async with await Client.connect(f"127.0.0.1:{port}", signer=app) as kms:
            keys.add((await kms.derive("k")).key)
    assert len(keys) == 1


async def test_a_late_node_fetches_the_existing_secret(world: Any) -> None:
    cluster, members = world
    nodes = [await cluster.start(s, port) for s, port in members]
    await until(lambda: all(n.master_secret is not None for n in nodes))
    node, _ = await cluster.join(signer("late"))
    await until(lambda: node.master_secret is not None)
    assert node.fingerprint() == nodes[0].fingerprint()


async def test_conflicting_secrets_without_pin_are_split_brain(world: Any) -> None:
    cluster, members = world
    (a, pa), (b, pb), (c, pc) = members
    await cluster.start(a, pa, secret=b"\x01" * 32)
    await cluster.start(b, pb, secret=b"\x02" * 32)
    fresh = await cluster.start(c, pc)
    await until(lambda: fresh.not_ready.reason == "split_brain")
    assert fresh.master_secret is None
    async with await Client.connect(f"127.0.0.1:{pc}") as kms:
        status = await kms.call("status")
    assert status["ready"] is False and status["reason"] == "split_brain"


async def test_pin_selects_the_matching_secret(world: Any) -> None:
    cluster, members = world
    (a, pa), (b, pb), (c, pc) = members
    await cluster.pin(bytes.fromhex(secret_fingerprint(b"\x02" * 32)[2:]))
    await cluster.start(a, pa, secret=b"\x01" * 32)
    await cluster.start(b, pb, secret=b"\x02" * 32)
    fresh = await cluster.start(c, pc)
    await until(lambda: fresh.master_secret is not None)
    assert fresh.master_secret == b"\x02" * 32  # never the unpinned one


async def test_pin_nobody_matches_is_secret_lost_and_nothing_is_generated(world: Any) -> None:
    cluster, members = world
    await cluster.pin(b"\x07" * 32)
    nodes = [await cluster.start(s, port) for s, port in members]
    await until(lambda: all(n.not_ready.reason == "secret_lost" for n in nodes))
    assert all(n.master_secret is None for n in nodes)


async def test_a_held_secret_that_stops_matching_the_pin_is_not_served(world: Any) -> None:
    cluster, members = world
    (a, pa), (b, pb), _ = members
    node = await cluster.start(a, pa, secret=b"\x01" * 32)
    proven = await Client.connect(f"127.0.0.1:{pa}", signer=b, role="peer")
    th = proven.transcript_hash
    proof = cluster_proof(master_secret=b"\x01" * 32, transcript_hash=th, direction="c2s")
    await proven.call("sync.hello", {"proof": proof})
    async with await Client.connect(f"127.0.0.1:{pa}", signer=signer("app")) as app:
        before = await app.derive("disk")
        # The owner pins another secret's fingerprint: within a poll the node stops serving.
        await cluster.pin(bytes.fromhex(secret_fingerprint(b"\x02" * 32)[2:]))
        await until(lambda: node.pin_mismatch)
        with pytest.raises(Unavailable) as info:
            await app.derive("disk")
        assert info.value.reason == "secret_mismatch"
        with pytest.raises(Unavailable):
            await app.cert_ca(1)
        status = await app.call("status")
        assert (status["ready"], status["reason"]) == (False, "secret_mismatch")
        assert status["secret"]["matches_pin"] is False
        # Nor does it give the secret, or a proof of it, to a peer, nor exchange records on a
        # channel that was proven before the pin changed.
        async with await Client.connect(f"127.0.0.1:{pa}", signer=b, role="peer") as peer:
            for op, args in (("secret.get", {}), ("sync.hello", {"proof": bytes(32)})):
                with pytest.raises(Unavailable) as info:
                    await peer.call(op, args)
                assert info.value.reason == "secret_mismatch"
        with pytest.raises(Unavailable) as info:
            await proven.call("sync.digests", {})
        assert info.value.reason == "secret_mismatch"
        await proven.aclose()
        # Pinning the secret it holds makes it serve again, with the same keys.
        await cluster.pin(bytes.fromhex(secret_fingerprint(b"\x01" * 32)[2:]))
        await until(lambda: not node.pin_mismatch)
        assert (await app.derive("disk")).key == before.key


async def test_only_kms_operators_may_ask_for_the_secret(world: Any) -> None:
    cluster, members = world
    (a, pa), _, _ = members
    await cluster.start(a, pa, secret=b"\x01" * 32)
    async with await Client.connect(
        f"127.0.0.1:{pa}", signer=signer("intruder"), role="peer"
    ) as peer:
        with pytest.raises(Forbidden):
            await peer.call("secret.get")
    async with await Client.connect(f"127.0.0.1:{pa}", signer=signer("app"), role="app") as app:
        with pytest.raises(Forbidden) as info:
            await app.call("secret.status")
        assert info.value.details["reason"] == "wrong_role"


async def test_a_refused_operator_that_may_hold_the_secret_stops_a_new_one(world: Any) -> None:
    """A revoked-version node holding the secret is no peer, but nobody generates beside it."""
    cluster, members = world
    chain = cluster.chain
    await enroll_version(cluster.admin, chain.nova_app_registry, chain.kms_app_id, "kms2")
    await cluster.join(signer("holder"), version_id=2, secret=b"\x05" * 32)
    await cluster.admin.send(
        chain.nova_app_registry,
        abi.nova_app_registry().encode_call("revokeVersion", chain.kms_app_id, 2),
    )
    # The three version-1 operators start fresh and all answer each other: without the holder
    # they would form a "fully answering fresh cluster" and generate a second secret.
    nodes = [await cluster.start(s, port) for s, port in members]
    assert nodes[0].bootstrap is not None
    decision = await bootstrap_round(nodes[0].bootstrap, timeout=2.0, random_bytes=bytes)
    assert decision.action == "wait"
    assert all(n.master_secret is None for n in nodes)


async def test_an_unpinned_cluster_bootstraps_but_serves_apps_only_once_pinned(
    world: Any,
) -> None:
    cluster, members = world
    nodes = [await cluster.start(s, port, require_pin=True) for s, port in members]
    # The secret is agreed on and shared between peers as before the pin...
    await until(lambda: all(n.master_secret is not None and not n.syncing for n in nodes))
    assert len({n.fingerprint() for n in nodes}) == 1
    fingerprint = nodes[0].fingerprint()
    app = signer("app")
    for _, port in members:
        async with await Client.connect(f"127.0.0.1:{port}", signer=app) as kms:
            status = await kms.call("status")
            assert status["ready"] is False and status["reason"] == "unpinned"
            assert status["secret"]["fingerprint"] == fingerprint
            assert status["secret"]["pinned"] is False
            # ...but no app operation is served under it.
            for call in (kms.derive("p"), kms.kv_get("k"), kms.cert_ca(1)):
                with pytest.raises(Unavailable) as info:
                    await call
                assert info.value.reason == "unpinned"
                assert info.value.details["fingerprint"] == fingerprint
    assert fingerprint is not None
    await cluster.pin(bytes.fromhex(fingerprint[2:]))
    await until(lambda: all(n.serving_apps for n in nodes))
    keys = set()
    for _, port in members:
        async with await Client.connect(f"127.0.0.1:{port}", signer=app) as kms:
            assert (await kms.call("status"))["ready"] is True
            keys.add((await kms.derive("p")).key)
    assert len(keys) == 1
