"""The cluster client against real ``novakms serve`` processes on anvil (issue 13's acceptance).

Built from the chain alone (RPC URL and the two registry addresses: every node's address and
wallet come from the registries), the client rides out one node killed (SIGKILL) and another
paused (SIGSTOP, later SIGCONT) in the middle of 2,000 derives and reads: the only calls allowed
to fail are those in flight on the killed node when it died — and since derive and kv.get are
safe to retry, none does. Then the membership changes on chain (an instance stopped, a new
instance registered and started) and the running client follows.

The faults are triggered by the calls' own progress (after the 400th, 800th, 1,400th completed
call), and every wait is on a state (the client's view of its nodes), never on the wall clock.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path

import trio

from novakms.client.cluster import ClusterClient
from novakms.client.cluster_core import CallTrace, ClusterSettings, RetryPolicy
from novakms.errors import NovaKMSError, TransportTimeout
from tests.harness.cluster import until
from tests.harness.processes import ProcessWorld, process_world, serving

CALLS = 2000
WORKERS = 8
KILL_AT, PAUSE_AT, RESUME_AT = 400, 800, 1400

SETTINGS = ClusterSettings(
    attempt_timeout=1.0,
    probe_interval=0.2,
    membership_interval=0.2,
    retry=RetryPolicy(max_attempts=8, deadline=20.0),
)


def _client(world: ProcessWorld) -> ClusterClient:
    return ClusterClient.from_chain(
        world.anvil.url,
        world.chain.kms_registry,
        world.chain.nova_app_registry,
        world.app,
        block_tag="latest",
        settings=SETTINGS,
    )


@dataclass
class Failure:
    index: int
    error: NovaKMSError
    trace: CallTrace | None
    started_before_kill: bool
    ended_after_kill: bool


async def test_a_killed_and_a_paused_node_cost_no_calls_and_membership_follows_the_chain(
    tmp_path: Path,
) -> None:
    async with process_world(tmp_path, nodes=3) as world, _client(world) as kms:
        killed, paused, removed = world.addresses
        assert {v.address for v in kms.view()} == set(world.addresses)
        assert {v.wallet for v in kms.view()} == {n.wallet for n in world.nodes}
        await until(lambda: all(v.ready for v in kms.view()))
        expected = (await kms.derive("cluster/e2e")).key
        await kms.kv_put("cluster/e2e", b"value", acks=2)  # on every node before the faults

        completed = 0
        killed_yet = paused_yet = resumed = False
        next_index = 0
        failures: list[Failure] = []
        answered_by: set[str] = set()
        ridden_out: dict[str, list[CallTrace]] = {killed: [], paused: []}

        def state(address: str) -> tuple[bool | None, bool]:
            view = next(v for v in kms.view() if v.address == address)
            return view.ready, view.down

        async def progress() -> None:
            nonlocal completed, killed_yet, paused_yet, resumed
            completed += 1
            if completed == KILL_AT:
                world.signal(killed, signal.SIGKILL)
                killed_yet = True
            elif completed == PAUSE_AT:
                world.signal(paused, signal.SIGSTOP)
                paused_yet = True
            elif completed == RESUME_AT:
                # Resume only once the client has given up on the paused node (calls to it, or
                # its probes, timed out): this worker waits, the others go on.
                await until(lambda: state(paused)[1])
                world.signal(paused, signal.SIGCONT)
                resumed = True

        async def worker() -> None:
            nonlocal next_index
            while next_index < CALLS:
                index, next_index = next_index, next_index + 1
                before_kill = not killed_yet
                try:
                    if index % 2:
                        assert (await kms.kv_get("cluster/e2e")).value == b"value"
                    else:
                        assert (await kms.derive("cluster/e2e")).key == expected
                except NovaKMSError as exc:
                    failures.append(Failure(index, exc, kms.last_call(), before_kill, killed_yet))
                else:
                    trace = kms.last_call()
                    assert trace is not None and trace.answered_by is not None
                    answered_by.add(trace.answered_by)
                    for address, traces in ridden_out.items():
                        if any(a.node == address and a.error for a in trace.attempts):
                            traces.append(trace)
                await progress()

        async with trio.open_nursery() as nursery:
            for _ in range(WORKERS):
                nursery.start_soon(worker)

        assert completed == CALLS and resumed
        # Errors only for calls in flight on the killed node when it died (here: none at all,
        # since every one of these ops is retried on another node).
        for failure in failures:
            assert failure.trace is not None and failure.trace.attempts, failure
            assert failure.trace.attempts[-1].node == killed, failure
            assert failure.started_before_kill and failure.ended_after_kill, failure
        assert len(failures) <= WORKERS
        assert failures == []
        assert answered_by == set(world.addresses)  # load spread over every node
        # Both faults were met by calls, and those calls were answered by another node.
        assert ridden_out[killed], "no call met the killed node"
        assert ridden_out[paused], "no call met the paused node"
        assert any(
            isinstance(a.error, TransportTimeout)
            for t in ridden_out[paused]
            for a in t.attempts
            if a.node == paused
        )

        # The paused node comes back once it is resumed (a probe says it is ready again).
        await until(lambda: state(paused) == (True, False))
        assert state(killed)[1] is True  # the killed one is down (and still on chain)

        # A node removed on chain leaves the client's membership...
        await world.stop_instance(removed)
        await until(lambda: removed not in {v.address for v in kms.view()})
        for _ in range(20):
            await kms.derive("cluster/e2e")
            trace = kms.last_call()
            assert trace is not None and removed not in trace.nodes

        # ... and a node added on chain joins it; once the last old live node is removed too,
        # the new one answers everything.
        added = await world.add_node("node3")
        await serving(added.address)
        await until(lambda: added.address in {v.address for v in kms.view()})
        await world.stop_instance(paused)
        await until(lambda: {v.address for v in kms.view()} == {killed, added.address})
        for _ in range(20):
            assert (await kms.derive("cluster/e2e")).key == expected
            trace = kms.last_call()
            assert trace is not None and trace.answered_by == added.address
