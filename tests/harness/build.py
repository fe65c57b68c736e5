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

__all__ = ["build_node", "build_server", "replicator"]


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
    clock: Callable[[], float] | None = None,
) -> Server:
    """A server for ``node`` on pre-opened ``listeners`` and/or real ``listen`` addresses."""
    config = ServerConfig(listen=tuple(listen), limits=node.limits)
    return Server(config=config, node=node, listeners=listeners, clock=clock)


def replicator(node: Node) -> Replicator:
    """The node's replicator (a node built with a membership has one)."""
    assert node.replicator is not None, "this node runs no replicator (no membership)"
    return node.replicator
