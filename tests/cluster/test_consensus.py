"""Conditional writes on a memory cluster under a MockClock: the faults between the phases.

* a coordinator that dies after a majority accepted its write and before committing it: the
  acceptors commit it themselves (settling), and the write is neither lost nor duplicated;
* a restarted node forgot what it promised: it takes part in no quorum until it copied its
  peers' tables, so with another node down nothing is decided; once it recovered, decisions go
  on from the committed state;
* a node joining while conditional writes race: it recovers before it votes, and the histories
  stay linearizable;
* a conditional write and a concurrent unconditional write from a node whose clock is far
  ahead: the decided write survives replication (generations).

(The same on real processes, with kill -9 and pauses: test_cas_e2e.py.)
"""

from __future__ import annotations

import random
from typing import Any

import pytest
import trio
from trio.testing import MockClock

from novakms.client.aio import Client
from novakms.errors import Conflict, NovaKMSError, Unavailable
from novakms.server.node import Node
from novakms.store.records import HLC_LOGICAL_BITS, Record
from tests.harness.cluster import APP_ID, MemoryCluster, signer, stored, until
from tests.harness.linearizability import Op, check

VALUE = b"decided"


def consensus(node: Node) -> dict[str, Any]:
    assert node.consensus is not None
    return node.consensus.describe()


async def start_voting(cluster: MemoryCluster) -> list[Node]:
    """Start every node; wait until each one's acceptor votes (its first recovery is done)."""
    nodes = await cluster.start_all()
    await until(lambda: all(consensus(n)["voting"] for n in nodes))
    return nodes


async def decided_version(kms: Client, key: str) -> str | None:
    """The key's version as a majority decides it (a conditional delete that cannot match)."""
    with pytest.raises(Conflict) as refused:
        await kms.kv_delete(key, if_version="no such version")
    version = refused.value.details["version"]
    assert version is None or isinstance(version, str)
    return version


async def test_a_write_accepted_by_a_majority_is_committed_when_its_coordinator_dies(
    memory_cluster: MemoryCluster, autojump_clock: MockClock
) -> None:
    cluster = memory_cluster
    a, b, c = await start_voting(cluster)
    (_, address_a), (_, address_b), (_, address_c) = cluster.members
    async with await cluster.connect(address_a) as kms:
        first = await kms.kv_put("leader", b"first", if_version="absent")
    await until(lambda: all(stored(n, APP_ID, "leader") is not None for n in (b, c)))

    # A dies at the moment a majority accepted its second write, before committing it.
    store = a.gate.store
    assert store is not None
    accepted: list[Record] = []

    def die_instead(record: Record) -> bool:
        accepted.append(record)
        cluster.network.isolate(a.wallet)
        cluster.stop(a)  # its tasks are cancelled at their next checkpoint
        return False

    store.commit = die_instead  # type: ignore[method-assign]
    async with await cluster.connect(address_a) as kms:
        with pytest.raises(NovaKMSError):  # the connection ends with the node
            await kms.kv_put("leader", b"second", if_version=first.version)
    (value,) = accepted
    assert stored(b, APP_ID, "leader") != value and stored(c, APP_ID, "leader") != value

    # Nobody asks for the key again: B and C find the value unsettled and commit it.
    await until(lambda: stored(b, APP_ID, "leader") == value == stored(c, APP_ID, "leader"), 30)
    assert consensus(b)["settled"] + consensus(c)["settled"] >= 1
    assert await cluster.value_on(address_b, "leader") == b"second"
    async with await cluster.connect(address_c) as kms:
        version = await decided_version(kms, "leader")
        assert version == (await kms.kv_get("leader")).version
        with pytest.raises(Conflict):  # the first version is gone for good
            await kms.kv_put("leader", b"third", if_version=first.version)


async def test_a_restarted_node_votes_only_once_it_copied_its_peers(
    memory_cluster: MemoryCluster, autojump_clock: MockClock
) -> None:
    cluster = memory_cluster
    a, b, c = await start_voting(cluster)
    (_, address_a), (who_b, address_b), (who_c, address_c) = cluster.members
    async with await cluster.connect(address_a) as kms:
        first = await kms.kv_put("k", b"one", if_version="absent")
    await until(lambda: stored(c, APP_ID, "k") is not None)

    # C restarts while it cannot reach B: it cannot copy enough tables, so it does not vote.
    cluster.stop(c)
    cluster.network.block(who_c.wallet, address_b)
    cluster.network.block(who_b.wallet, address_c)
    c = await cluster.start(who_c, address_c)
    await until(lambda: c.master_secret is not None and not c.syncing)
    await trio.sleep(10)
    assert consensus(c)["voting"] is False
    async with await cluster.connect(address_a) as kms:
        second = await kms.kv_put("k", b"two", if_version=first.version)  # A and B decide
        # With B down too, A and the recovering C are no majority: nothing is decided.
        cluster.stop(b)
        with pytest.raises(Unavailable) as put:
            await kms.kv_put("k", b"three", if_version=second.version)
        assert put.value.reason == "no_quorum"

        # B comes back (recovering too) and the cut heals: both copy tables, then vote.
        cluster.network.heal()
        b = await cluster.start(who_b, address_b)
        await until(lambda: consensus(b)["voting"] is True and consensus(c)["voting"] is True, 30)
        assert sorted(consensus(c)["recovered_from"]) == sorted([a.wallet, b.wallet])
        # The decisions go on from the decided state: "two" is current, "three" never was.
        with pytest.raises(Conflict) as stale:
            await kms.kv_put("k", b"four", if_version=first.version)
        assert stale.value.details["version"] == second.version
        third = await kms.kv_put("k", b"three", if_version=second.version)
    async with await cluster.connect(address_c) as kms:
        assert await decided_version(kms, "k") == third.version


async def test_a_node_joining_while_conditional_writes_race_keeps_them_linearizable(
    memory_cluster: MemoryCluster, autojump_clock: MockClock
) -> None:
    cluster = memory_cluster
    nodes = await start_voting(cluster)
    addresses = [address for _, address in cluster.members]
    history: list[Op] = []
    stop = trio.Event()

    async def racer(address: str, name: str) -> None:
        rng = random.Random(name)
        known: str | None = None
        async with await cluster.connect(address) as kms:
            while not stop.is_set():
                invoked = trio.current_time()
                expect = known
                try:
                    put = await kms.kv_put("race", VALUE, if_version=expect or "absent")
                    op = Op("put", expect, "ok", invoked, trio.current_time(), put.version)
                    known = put.version
                except Conflict as exc:
                    known = exc.details["version"]
                    op = Op("put", expect, "conflict", invoked, trio.current_time(),
                            current=known, has_current=True)  # fmt: skip
                except Unavailable as exc:
                    unknown = exc.reason == "outcome_unknown"
                    op = Op(
                        "put",
                        expect,
                        "unknown" if unknown else "failed",
                        invoked,
                        trio.current_time(),
                    )
                history.append(op)
                await trio.sleep(rng.uniform(0, 0.05))

    async with trio.open_nursery() as nursery:
        for i, address in enumerate(addresses * 2):
            nursery.start_soon(racer, address, f"racer{i}")
        await until(lambda: len(history) >= 50)
        joiner, _ = await cluster.join(signer("node3"))
        everyone = [*nodes, joiner]
        await until(
            lambda: all(consensus(n)["members"] == 4 and consensus(n)["voting"] for n in everyone),
            30,
        )
        assert consensus(joiner)["quorum"] == 3
        count = len(history)
        await until(lambda: len(history) >= count + 100)
        stop.set()
    assert sum(op.outcome == "ok" for op in history) >= 20
    async with await cluster.connect(cluster.members[3][1]) as kms:
        final = await decided_version(kms, "race")
    now = trio.current_time()
    history.append(Op("delete", "no such version", "conflict", now, now, current=final,
                      has_current=True))  # fmt: skip
    assert check(history) is not None


async def test_a_decided_write_beats_a_concurrent_write_from_a_clock_far_ahead(
    memory_cluster: MemoryCluster, autojump_clock: MockClock
) -> None:
    cluster = memory_cluster
    a, b, c = await start_voting(cluster)
    (_, address_a), _, (_, address_c) = cluster.members
    # C is cut off from A and B, and its hybrid clock runs 50 s ahead (within the skew bound).
    cluster.network.isolate(c.wallet)
    assert c.gate.store is not None
    c.gate.store.hlc.observe(int(cluster.clock() * 1000 + 50_000) << HLC_LOGICAL_BITS)
    async with await cluster.connect(address_a) as kms:
        decided = await kms.kv_put("owner", b"decided by a majority", if_version="absent")
    await cluster.put(address_c, "owner", b"written on C, later by its clock")
    late = stored(c, APP_ID, "owner")
    win = stored(a, APP_ID, "owner")
    assert late is not None and win is not None and late.hlc > win.hlc and win.gen == 1
    cluster.network.heal()
    await cluster.wait_everywhere("owner", b"decided by a majority")
    # ... and the replicas converge on one record (the clocks joined), of generation 1.
    await until(
        lambda: (
            stored(a, APP_ID, "owner") == stored(b, APP_ID, "owner") == stored(c, APP_ID, "owner")
        )
    )
    merged = stored(c, APP_ID, "owner")
    assert merged is not None and merged.gen == 1 and merged.node == a.wallet
    async with await cluster.connect(address_c) as kms:
        assert await decided_version(kms, "owner") == decided.version
        # A write made after seeing the decided one is an ordinary later write: it wins.
        await kms.kv_put("owner", b"after it")
    await cluster.wait_everywhere("owner", b"after it")
