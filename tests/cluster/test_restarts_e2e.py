"""Restarts lose nothing: complete catch-up, degraded states, returning peers, shutdown drains.

Real nodes on a real anvil, real sockets; cuts are made with real CONNECT proxies (see
``test_partition_e2e``). Every assertion is on state or events, never on elapsed time.
The long-outage and shutdown-drain cases run on a memory cluster under a MockClock:
test_restarts.py.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import pytest
import trio

from novakms.client.aio import Client
from tests.harness.build import replicator
from tests.harness.world import APP, LIMITS, RECORDS, until, value_on, write_bulk
from tests.harness.world import SMALL as BULK_LIMITS
from tests.net.connectproxy import ConnectProxy, connect_proxy

APP_ID = 1  # APP is the first (and only) app the world registers


@pytest.fixture
async def proxies() -> AsyncIterator[list[ConnectProxy]]:
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(connect_proxy()) for _ in range(3)]


async def status(port: int) -> Any:
    async with await Client.connect(f"127.0.0.1:{port}") as kms:
        return await kms.call("status")


async def put(port: int, key: str, value: bytes, **options: Any) -> Any:
    async with await Client.connect(f"127.0.0.1:{port}", signer=APP) as kms:
        return await kms.kv_put(key, value, **options)


def serving(node: Any) -> bool:
    return node.master_secret is not None and not node.syncing


async def test_a_restarted_node_merges_what_every_peer_holds_before_it_serves(
    world: Any, proxies: list[ConnectProxy]
) -> None:
    cluster, members = world
    nodes = [
        await cluster.start(s, port, peer_proxy=proxy.address)
        for (s, port), proxy in zip(members, proxies, strict=True)
    ]
    await until(lambda: all(serving(n) and replicator(n).peer_count() == 2 for n in nodes))
    c, pc = members[2]
    # "B" is the peer C asks last (a snapshot from the first one alone would miss its data).
    index = {n.wallet: i for i, n in enumerate(nodes)}
    ia, ib = (index[w] for w in replicator(nodes[2]).links)
    pa, pb = members[ia][1], members[ib][1]
    await put(pa, "everywhere", b"1", acks=2)
    # B is cut off: it cannot dial out, and nobody can dial it.
    proxies[ib].isolate()
    proxies[ia].block(f"127.0.0.1:{pb}")
    proxies[2].block(f"127.0.0.1:{pb}")
    await put(pb, "only-on-b", b"newest")
    await trio.sleep(3 * LIMITS.anti_entropy_interval)
    assert await value_on(pa, "only-on-b") is None
    # B holds a change nobody else has: not safe to stop.
    b_status = await status(pb)
    assert b_status["safe_to_stop"] is False
    assert b_status["safe_to_stop_reason"] == "unconfirmed"

    # C restarts (memory gone) and can reach B again; A still cannot.
    cluster.stop(nodes[2])
    proxies[2].heal()
    restarted = await cluster.start(c, pc, peer_proxy=proxies[2].address)
    with trio.fail_after(60):
        while not serving(restarted):
            await trio.sleep(0)  # catch the moment it starts serving
    assert list(replicator(restarted).links) == list(replicator(nodes[2]).links)
    # The first moment C serves, it holds what each of its peers held, not just one of them.
    held = restarted.store.record(APP_ID, "only-on-b")
    assert held is not None and held.sealed is not None
    assert restarted.degraded is None
    assert await value_on(pc, "only-on-b") == b"newest"
    assert await value_on(pc, "everywhere") == b"1"

    # Once B's links heal, its own anti-entropy confirms the others hold everything it does.
    proxies[ia].heal()
    proxies[ib].heal()

    async def b_safe() -> bool:
        return bool((await status(pb))["safe_to_stop"])

    with trio.fail_after(30):
        while not await b_safe():
            await trio.sleep(0.1)


SMALL = dataclasses.replace(BULK_LIMITS, catch_up_timeout=2.0)


async def test_overlapping_restarts_end_in_a_reported_degraded_state(
    world: Any, proxies: list[ConnectProxy], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="novakms.replication")
    cluster, members = world
    (a, pa), (b, pb), (c, pc) = members
    nodes = [
        await cluster.start(s, port, limits=SMALL, peer_proxy=proxy.address)
        for (s, port), proxy in zip(members, proxies, strict=True)
    ]
    await until(lambda: all(serving(n) for n in nodes))
    await write_bulk(pa)
    await until(lambda: all(len(n.store.records()) == RECORDS for n in nodes), seconds=60)

    # B and C restart together; each loses its link ~40 KB into its snapshot from A.
    cluster.stop(nodes[1])
    cluster.stop(nodes[2])
    for proxy in proxies[1:]:
        proxy.isolate_after(40_000)
    b2 = await cluster.start(b, pb, limits=SMALL, peer_proxy=proxies[1].address)
    c2 = await cluster.start(c, pc, limits=SMALL, peer_proxy=proxies[2].address)
    await until(
        lambda: (
            b2.master_secret is not None
            and c2.master_secret is not None
            and all(p.relayed >= 40_000 for p in proxies[1:])
        )
    )
    assert b2.syncing and c2.syncing
    # A is the only node holding the data now (its peers are cut off mid-catch-up): stopping
    # it would not be safe.
    a_status = await status(pa)
    assert a_status["safe_to_stop"] is False
    assert a_status["safe_to_stop_reason"] in ("peer_syncing", "unconfirmed")

    # A dies anyway (the overlapping restart), and the joiners' links heal.
    cluster.stop(nodes[0])
    for proxy in proxies[1:]:
        proxy.heal()
    await until(lambda: not b2.syncing and not c2.syncing, seconds=60)

    # Never a silent ready: both say they could not catch up from a caught-up peer.
    for node, port in ((b2, pb), (c2, pc)):
        assert node.degraded == "no_caught_up_peer"
        report = await status(port)
        assert report["degraded"] == "no_caught_up_peer"
        catch_up = report["catch_up"]
        assert catch_up["state"] == "degraded" and catch_up["reason"] == "no_caught_up_peer"
        # A for sure; the other joiner too if it was still starting when the retries ran out.
        assert a.wallet in catch_up["unreachable"]
        async with await Client.connect(f"127.0.0.1:{port}", signer=APP) as kms:
            answer = await kms.call("kv.list", {"limit": 1})
        assert answer["degraded"] == "no_caught_up_peer"  # every KV answer carries it
    warnings = [
        r
        for r in caplog.records
        if r.levelno == logging.WARNING
        and isinstance(r.msg, dict)
        and r.msg["event"] == "catch_up_degraded"
    ]
    assert len(warnings) == 2
    # A is still registered and unreachable: several anti-entropy rounds later, still degraded.
    await trio.sleep(3 * SMALL.anti_entropy_interval)
    assert b2.degraded == "no_caught_up_peer" and c2.degraded == "no_caught_up_peer"


async def test_a_node_without_peers_is_safe_to_stop_only_while_empty(
    start_server: Any, wallets: Any
) -> None:
    srv = await start_server()
    async with await Client.connect(srv.tcp) as kms:
        empty = await kms.call("status")
    assert empty["safe_to_stop"] is True and empty["safe_to_stop_reason"] is None
    async with await Client.connect(srv.tcp, signer=wallets.app1) as kms:
        await kms.kv_put("alone", b"1")
        held = await kms.call("status")
    # Whatever it holds, it holds alone.
    assert held["safe_to_stop"] is False
    assert held["safe_to_stop_reason"] == "unconfirmed" and held["unconfirmed"] == 1
