"""The one place the harness constructs nodes and servers (re-point it at a composition root).

Every in-process ``Node`` and ``Server`` of the harness is built by :func:`build_node` and
:func:`build_server`; nothing else in tests/harness calls the constructors.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import trio

from novakms.auth.source import Membership, Registry
from novakms.cluster.replicator import Replicator
from novakms.config import Limits, Mode, ServerConfig
from novakms.crypto.signer import Signer
from novakms.net.dial import Dialer
from novakms.server import node as composition
from novakms.server.node import Node
from novakms.server.server import Server

__all__ = ["RunningNodes", "build_node", "build_server", "replicator"]


def build_node(
    *,
    signer: Signer,
    auth: Registry,
    limits: Limits,
    master_secret: bytes | None = None,
    dial: Dialer | None = None,
    random_bytes: Callable[[int], bytes] = os.urandom,
    clock: Callable[[], float] = time.time,
    **options: Any,
) -> Node:
    """A development-mode node through the composition root (``novakms.server.node.build_node``).

    ``auth`` is the registry, and the membership too when it is one (a test's gated wrapper is
    not: such a node runs no replicator); ``options`` are further ``build_node`` arguments.
    """
    config = ServerConfig(listen=(), limits=limits, mode=Mode.DEVELOPMENT)
    return composition.build_node(
        config=config,
        signer=signer,
        registry=auth,
        membership=auth if isinstance(auth, Membership) else None,
        secret=master_secret,
        dial=dial,
        random_bytes=random_bytes,
        clock=clock,
        **options,
    )


def build_server(
    *,
    node: Node,
    listeners: Sequence[tuple[trio.abc.Listener[trio.abc.Stream], str]] = (),
    listen: Sequence[str] = (),
) -> Server:
    """A server for ``node`` (on the node's clock) on pre-opened ``listeners`` and/or real
    ``listen`` addresses."""
    config = ServerConfig(listen=tuple(listen), limits=node.limits)
    return Server(config=config, node=node, listeners=listeners)


def replicator(node: Node) -> Replicator:
    """The node's replicator (a node built with a membership has one)."""
    assert node.replicator is not None, "this node runs no replicator (no membership)"
    return node.replicator


class RunningNodes:
    """Servers each run in a cancel scope of their own: one can crash while the others serve.

    Args:
        nursery: where the servers run.
    """

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.servers: dict[str, Server] = {}
        self.scopes: dict[str, trio.CancelScope] = {}
        self.stopped: dict[str, trio.Event] = {}

    async def run_server(self, server: Server) -> None:
        """Start ``server``; returns once it listens."""
        await self.nursery.start(self._serve, server)

    async def _serve(self, server: Server, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        wallet = server.node.wallet
        self.servers[wallet] = server
        stopped = self.stopped[wallet] = trio.Event()
        try:
            with trio.CancelScope() as scope:
                self.scopes[wallet] = scope
                await server.run(task_status=task_status)
        finally:
            stopped.set()

    def stop(self, node: Node) -> None:
        """Kill a node (its memory, secret and data included), as a crash would."""
        self.scopes.pop(node.wallet).cancel()

    async def shut_down(self, node: Node) -> None:
        """Stop a node gracefully (as SIGTERM does) and wait until it has stopped."""
        self.scopes.pop(node.wallet)
        self.servers[node.wallet].shutdown()
        await self.stopped[node.wallet].wait()
