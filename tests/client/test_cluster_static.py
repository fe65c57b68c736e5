"""The cluster clients over a static list, against real servers on loopback.

A node that cannot be dialed, or that proves another wallet than the list says, costs a call
nothing: nothing was sent, so even a blind write goes to the next node. Both twins are driven
the same way; the blocking one from a worker thread (the servers run in this trio run).
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from novakms.client.blocking_cluster import BlockingClusterClient
from novakms.client.cluster import ClusterClient
from novakms.client.cluster_core import CallTrace, ClusterSettings
from novakms.errors import NetworkError, NotFound, Unavailable
from tests.conftest import Wallets
from tests.harness.world import free_port

SETTINGS = ClusterSettings(attempt_timeout=2.0, probe_interval=60, membership_interval=60)


async def test_trio_client_fails_over_before_sending_and_says_who_answered(
    start_server: Any, wallets: Wallets
) -> None:
    good = await start_server()
    impostor = await start_server()  # a real node, but not the wallet the list names for it
    dead = f"127.0.0.1:{free_port()}"
    nodes = [(dead, wallets.node.wallet), (impostor.tcp, "0x" + "12" * 20)]
    nodes.append((good.tcp, wallets.node.wallet))
    async with ClusterClient.from_nodes(nodes, wallets.app1, settings=SETTINGS) as kms:
        view = {v.address: v for v in kms.view()}
        assert view[good.tcp].ready is True and view[dead].down and view[impostor.tcp].down
        assert kms.last_call() is None
        derived = await kms.derive("static/path")
        trace = kms.last_call()
        assert trace is not None and trace.answered_by == good.tcp
        # A blind write whose earlier attempts failed before sending is still sent once.
        put = await kms.kv_put("static/k", b"v")
        item = await kms.kv_get("static/k")
        assert item.value == b"v" and item.version == put.version
        # An answer is the result: not_found is not tried elsewhere.
        with pytest.raises(NotFound):
            await kms.kv_get("static/missing")
        missing = kms.last_call()
        assert missing is not None and missing.answered_by == good.tcp
        assert missing.nodes[-1] == good.tcp and missing.attempts[-1].answered
        assert len(await kms.cert_ca(1)) > 0

        # Each task sees its own last call.
        traces: list[CallTrace | None] = []

        async def other() -> None:
            await kms.health()
            traces.append(kms.last_call())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(other)
        assert traces[0] is not None and traces[0].op == "health"
        mine = kms.last_call()
        assert mine is not None and mine.op == "cert.ca"  # not the other task's health

    def blocking() -> tuple[bytes, CallTrace | None]:
        with BlockingClusterClient.from_nodes(nodes, wallets.app1, settings=SETTINGS) as twin:
            key = twin.derive("static/path").key
            return key, twin.last_call()

    key, trace = await trio.to_thread.run_sync(blocking)
    assert key == derived.key and trace is not None and trace.answered_by == good.tcp


async def test_no_reachable_node_is_the_last_error_after_bounded_attempts(
    wallets: Wallets,
) -> None:
    dead = [(f"127.0.0.1:{free_port()}", wallets.node.wallet) for _ in range(2)]
    async with ClusterClient.from_nodes(dead, wallets.app1, settings=SETTINGS) as kms:
        with pytest.raises(NetworkError):
            await kms.derive("p")
        trace = kms.last_call()
        assert trace is not None and len(trace.attempts) == SETTINGS.retry.max_attempts
        assert not any(a.sent for a in trace.attempts) and trace.answered_by is None
    async with ClusterClient.from_nodes([], wallets.app1, settings=SETTINGS) as empty:
        with pytest.raises(Unavailable) as raised:
            await empty.health()
        assert raised.value.reason == "no_nodes"
