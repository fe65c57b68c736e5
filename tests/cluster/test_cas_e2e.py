"""Conditional writes decided by a majority, on real ``novakms serve`` processes (issue 17).

Three node processes on anvil, the clients connected to all three:

* **one winner** — in every one of 20 races, six clients (two on each node) create the same
  key with ``if_version: "absent"`` at once: exactly one succeeds, and every other one is told
  ``conflict`` naming the winner's version (before consensus, 18 of 20 races had two winners);
* **linearizable under faults** — nine clients race conditional puts and deletes on three keys
  while one node is paused (SIGSTOP, then SIGCONT) and then another is killed (SIGKILL) and
  restarted; every key's history passes the single-register linearizability checker
  (tests/harness/linearizability.py), and every node ends up with the version a final
  consensus read names;
* **no majority, no change** — with two of the three nodes paused, a conditional write on the
  third is refused ``unavailable: no_quorum`` and the key keeps its version; once they resume,
  the same write succeeds with no restart or operator step.

The faults are triggered by the clients' own progress (operations completed), never by the
wall clock, and every wait is on a state.
"""

from __future__ import annotations

import random
import signal
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
import trio

from novakms.client.aio import Client
from novakms.dev.nodes import start_node
from novakms.errors import Conflict, NotFound, NovaKMSError, TransportError, Unavailable
from tests.harness.linearizability import Op, check
from tests.harness.processes import FAST_LIMITS, ProcessWorld, process_world, serving

# A paused peer costs a coordinator at most peer_timeout per round; cas_timeout bounds a
# write that cannot find a majority. The client's timeout is above both: a write the client
# gives up on is recorded as of unknown outcome.
LIMITS = (*FAST_LIMITS, "peer_timeout=1", "cas_timeout=3")
CALL_TIMEOUT = 8.0
VALUE = b"value of a conditional write"
NOT_A_VERSION = "not-a-version"  # a conditional delete of it is refused, naming the version


async def connect(world: ProcessWorld, address: str) -> Client:
    return await Client.connect(address, signer=world.app, timeout=CALL_TIMEOUT)


async def consensus_read(kms: Client, key: str) -> str | None:
    """The key's version, decided by a majority (a conditional delete that cannot match)."""
    try:
        await kms.kv_delete(key, if_version=NOT_A_VERSION)
    except Conflict as exc:
        version = exc.details["version"]
        assert version is None or isinstance(version, str)
        return version
    raise AssertionError("a delete of a version that does not exist succeeded")


async def local_version(kms: Client, key: str) -> str | None:
    try:
        return (await kms.kv_get(key)).version
    except NotFound:
        return None


# -- one winner --------------------------------------------------------------------------------


async def test_create_if_absent_has_exactly_one_winner_in_every_race(tmp_path: Path) -> None:
    async with process_world(tmp_path, limits=LIMITS) as world:
        clients = [await connect(world, a) for a in world.addresses for _ in range(2)]
        try:
            for race in range(20):
                key = f"race/{race}"
                start = trio.Event()
                answers: list[str | Conflict] = []

                async def create(
                    kms: Client,
                    key: str = key,
                    start: trio.Event = start,
                    answers: list[str | Conflict] = answers,
                ) -> None:
                    await start.wait()
                    try:
                        answers.append((await kms.kv_put(key, VALUE, if_version="absent")).version)
                    except Conflict as exc:
                        answers.append(exc)

                async with trio.open_nursery() as nursery:
                    for kms in clients:
                        nursery.start_soon(create, kms)
                    await trio.sleep(0)
                    start.set()
                winners = [a for a in answers if isinstance(a, str)]
                assert len(winners) == 1, f"race {race}: {len(winners)} winners"
                losers = [a for a in answers if isinstance(a, Conflict)]
                assert len(losers) == len(clients) - 1
                assert {loser.details["version"] for loser in losers} == set(winners)
                assert await consensus_read(clients[race % len(clients)], key) == winners[0]
        finally:
            for kms in clients:
                await kms.aclose()


# -- linearizable under faults -----------------------------------------------------------------

KEYS = ("cas/a", "cas/b", "cas/c")
CLIENTS_PER_NODE = 3


@dataclass
class Run:
    """The clients' shared record: every operation, by key, and how many completed."""

    history: dict[str, list[Op]] = field(default_factory=lambda: {k: [] for k in KEYS})
    done: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    stop: trio.Event = field(default_factory=trio.Event)
    by_node: Counter[str] = field(default_factory=Counter)

    def record(self, key: str, op: Op, address: str) -> None:
        self.history[key].append(op)
        self.outcomes[op.outcome] += 1
        self.done += 1
        if op.outcome in ("ok", "conflict"):
            self.by_node[address] += 1


async def racer(world: ProcessWorld, address: str, name: str, run: Run) -> None:
    """Conditional puts and deletes on the shared keys, each on the version last seen."""
    rng = random.Random(name)
    known: dict[str, str | None] = dict.fromkeys(KEYS)
    kms: Client | None = None
    try:
        while not run.stop.is_set():
            if kms is None:
                try:
                    kms = await connect(world, address)
                except NovaKMSError:
                    await trio.sleep(0.05)  # its node is down: try again
                    continue
            key = rng.choice(KEYS)
            expect = known[key]
            deleting = expect is not None and rng.random() < 0.3
            kind: Literal["put", "delete"] = "delete" if deleting else "put"
            invoked = trio.current_time()
            op: dict[str, Any] = {}
            try:
                if kind == "put":
                    put = await kms.kv_put(key, VALUE, if_version=expect or "absent")
                    op = {"outcome": "ok", "version": put.version}
                    known[key] = put.version
                else:
                    assert expect is not None
                    await kms.kv_delete(key, if_version=expect)
                    op = {"outcome": "ok"}
                    known[key] = None
            except Conflict as exc:
                current = exc.details.get("version")
                op = {"outcome": "conflict", "has_current": True, "current": current}
                known[key] = current
            except TransportError:
                op = {"outcome": "unknown"}  # timed out or the connection died: who knows
                await kms.aclose()
                kms = None
            except Unavailable as exc:
                # Every refusal but outcome_unknown promises that nothing changed (no_quorum,
                # contention, syncing...); the checker holds them to it.
                op = {"outcome": "unknown" if exc.reason == "outcome_unknown" else "failed"}
            run.record(
                key,
                Op(kind, expect, invoked=invoked, returned=trio.current_time(), client=name, **op),
                address,
            )
            # A pause between calls keeps the history to a few thousand operations (the
            # checker's search grows with it) while calls of different clients still overlap.
            await trio.sleep(rng.uniform(0, 0.05))
    finally:
        if kms is not None:
            await kms.aclose()


async def progress(run: Run, count: int) -> None:
    with trio.fail_after(120):
        while run.done < count:
            await trio.sleep(0.05)


async def answered(run: Run, address: str, count: int) -> None:
    """Until ``address``'s clients had ``count`` more writes decided (ok or conflict)."""
    target = run.by_node[address] + count
    with trio.fail_after(120):
        while run.by_node[address] < target:
            await trio.sleep(0.05)


async def cas_status(address: str) -> dict[str, Any]:
    async with await Client.connect(address, timeout=CALL_TIMEOUT) as kms:
        cas = (await kms.status()).document["cas"]
        assert isinstance(cas, dict)
        return cas


async def test_racing_conditional_writes_stay_linearizable_through_a_pause_and_a_kill(
    tmp_path: Path,
) -> None:
    async with process_world(tmp_path, limits=LIMITS) as world:
        paused, killed, steady = world.addresses
        run = Run()
        async with trio.open_nursery() as nursery:
            for address in world.addresses:
                for i in range(CLIENTS_PER_NODE):
                    nursery.start_soon(racer, world, address, f"{address}#{i}", run)
            await progress(run, 150)

            world.signal(paused, signal.SIGSTOP)
            await answered(run, steady, 150)  # the other two go on as a majority
            await answered(run, killed, 50)
            world.signal(paused, signal.SIGCONT)
            await answered(run, paused, 50)

            process = world.node(killed).process
            assert process is not None
            world.signal(killed, signal.SIGKILL)
            process.wait()
            await answered(run, steady, 150)
            await answered(run, paused, 50)
            start_node(world.launch, world.node(killed), with_secret=True)
            await serving(killed)
            with trio.fail_after(60):  # it copies its peers' tables, then votes
                while not (status := await cas_status(killed))["voting"]:
                    await trio.sleep(0.1)
            assert sorted(status["recovered_from"]) == sorted(
                world.node(a).wallet for a in (paused, steady)
            )
            await answered(run, killed, 50)
            run.stop.set()

        async with await connect(world, steady) as kms:
            finals = {key: await consensus_read(kms, key) for key in KEYS}
        for key, final in finals.items():
            now = trio.current_time()
            run.history[key].append(
                Op("delete", NOT_A_VERSION, "conflict", now, now, current=final, has_current=True)
            )
        for key, ops in run.history.items():
            assert check(ops) is not None, f"{key}: not linearizable ({len(ops)} operations)"
        assert run.outcomes["ok"] >= 100, run.outcomes

        # ... and replication brings every node's store to the decided version
        clients = [await connect(world, a) for a in world.addresses]
        try:
            with trio.fail_after(30):
                for key, final in finals.items():
                    for kms in clients:
                        while await local_version(kms, key) != final:
                            await trio.sleep(0.05)
        finally:
            for kms in clients:
                await kms.aclose()


# -- no majority, no change --------------------------------------------------------------------


async def test_without_a_majority_nothing_changes_and_progress_resumes_by_itself(
    tmp_path: Path,
) -> None:
    async with process_world(tmp_path, limits=LIMITS) as world:
        alone, *others = world.addresses
        async with await connect(world, alone) as kms:
            first = await kms.kv_put("cas/quorum", VALUE, if_version="absent")
            for address in others:
                world.signal(address, signal.SIGSTOP)
            try:
                for _ in range(2):
                    with pytest.raises(Unavailable) as put:
                        await kms.kv_put("cas/quorum", b"not decided", if_version=first.version)
                    assert put.value.reason == "no_quorum"
                with pytest.raises(Unavailable) as delete:
                    await kms.kv_delete("cas/quorum", if_version=first.version)
                assert delete.value.reason == "no_quorum"
                assert (await kms.kv_get("cas/quorum")).version == first.version
            finally:
                for address in others:
                    world.signal(address, signal.SIGCONT)
            second = None
            reasons: set[str] = set()
            with trio.fail_after(30):
                while second is None:
                    try:
                        second = await kms.kv_put(
                            "cas/quorum", b"decided", if_version=first.version
                        )
                    except Unavailable as exc:
                        reasons.add(exc.reason)
            assert reasons <= {"no_quorum", "contention"}
            assert await consensus_read(kms, "cas/quorum") == second.version
            assert (await kms.kv_get("cas/quorum")).value == b"decided"
