"""Restarts on a memory cluster under a MockClock: a long outage, a graceful shutdown's drain.

The 45 s outage and the minute-long push batching are virtual: trio's clock jumps through
them. (The catch-up and degraded-state cases run on real sockets: test_restarts_e2e.py.)
"""

from __future__ import annotations

import logging

import pytest
import trio
from trio.testing import MockClock

from novakms.server.node import Node
from tests.harness.build import replicator
from tests.harness.cluster import MEMORY_LIMITS, MemoryCluster, replace_limits, stored, until

OUTAGE = 45.0


def serving(node: Node) -> bool:
    return node.master_secret is not None and not node.syncing


async def test_a_peer_back_from_a_45_s_outage_gets_its_backlog_within_a_push_round(
    memory_cluster: MemoryCluster, autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="novakms.replication")
    cluster = memory_cluster
    nodes = await cluster.start_all()
    (a, address_a), _, (c, address_c) = cluster.members
    cluster.stop(nodes[2])
    # 45 s of writes on A while C is down: A's link to C fails again and again meanwhile.
    writes = 15
    for i in range(writes):
        await cluster.put(address_a, f"while-down/{i:02d}", b"v", acks=1)
        await trio.sleep(OUTAGE / writes)
    link = replicator(nodes[0]).links[c.wallet]
    assert link.outbox.pending() == writes and link.failures >= 5
    restarted = await cluster.start(c, address_c)

    def pushed() -> list[logging.LogRecord]:
        return [
            r
            for r in caplog.records
            if isinstance(r.msg, dict)
            and r.msg["event"] == "backlog_pushed"
            and r.msg["node"] == a.wallet
            and r.msg["peer"] == c.wallet
        ]

    await until(lambda: bool(pushed()) and serving(restarted), seconds=30)
    (event,) = pushed()
    fields: dict[str, object] = event.msg  # type: ignore[assignment]
    assert fields["records"] == writes
    # Pushed in the first push round after C came back (or the one after, if its hello arrived
    # while a round was under way), not after a backoff.
    assert isinstance(fields["rounds"], int) and fields["rounds"] <= 2
    assert link.outbox.pending() == 0 and link.failures == 0
    # acks=2 works again at once.
    async with await cluster.connect(address_a) as kms:
        answer = await kms.kv_put("after", b"x", acks=2)
    assert answer.acked == 2


QUIET = replace_limits(MEMORY_LIMITS, anti_entropy_interval=120.0)


async def test_a_graceful_shutdown_pushes_the_outbox_before_exiting(
    memory_cluster: MemoryCluster, autojump_clock: MockClock
) -> None:
    cluster = memory_cluster
    (a, address_a), *rest = cluster.members
    # A batches its pushes for a minute and nobody runs anti-entropy meanwhile, so the
    # writes below are only in A's outbox when it is told to stop.
    first = await cluster.start(a, address_a, limits=replace_limits(QUIET, push_interval=60.0))
    others = [await cluster.start(s, address, limits=QUIET) for s, address in rest]
    nodes = [first, *others]
    await until(lambda: all(serving(n) and replicator(n).peer_count() == 2 for n in nodes))
    await trio.sleep(1.0)  # the joiners' first anti-entropy pass (after catching up) is over
    async with await cluster.connect(address_a) as kms:
        for i in range(50):
            await kms.kv_put(f"queued/{i:02d}", b"q")
    assert all(stored(n, 1, "queued/00") is None for n in others)
    async with await cluster.connect(address_a, signer=None) as kms:
        a_status = await kms.call("status")
    assert a_status["safe_to_stop"] is False
    assert a_status["safe_to_stop_reason"] == "unconfirmed"
    assert a_status["unconfirmed"] == 50

    began = trio.current_time()
    await cluster.shut_down(first)
    assert trio.current_time() - began < QUIET.push_interval  # drained, not a push round later
    for node in others:
        held = [stored(node, 1, f"queued/{i:02d}") for i in range(50)]
        assert all(r is not None and r.sealed is not None for r in held)
