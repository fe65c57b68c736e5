"""The one place the harness constructs nodes and servers (re-point it at a composition root).

Every in-process ``Node`` and ``Server`` of the harness is built by :func:`build_node` and
:func:`build_server`; nothing else in tests/harness calls the constructors.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import trio

from novakms.auth.source import AuthorizationSource
from novakms.config import Limits, Mode, ServerConfig
from novakms.crypto.signer import Signer
from novakms.net.dial import Dialer
from novakms.server.node import Node
from novakms.server.server import Server

__all__ = ["build_node", "build_server"]


def build_node(
    *,
    signer: Signer,
    auth: AuthorizationSource,
    limits: Limits,
    master_secret: bytes | None = None,
    dial: Dialer | None = None,
    random_bytes: Callable[[int], bytes] = os.urandom,
    **options: Any,
) -> Node:
    """A development-mode node (``options``: further ``Node`` fields, e.g. ``peer_proxy``)."""
    return Node(
        signer=signer,
        auth=auth,
        limits=limits,
        mode=Mode.DEVELOPMENT,
        master_secret=master_secret,
        dial=dial,
        random_bytes=random_bytes,
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
    if listen:
        config = ServerConfig(listen=tuple(listen), limits=node.limits)
    else:
        # ServerConfig insists on a listen address even when the server is handed listeners;
        # a memory-only server has none (reported: the composition root should allow it).
        config = ServerConfig(listen=("tcp://127.0.0.1:0",), limits=node.limits)
        object.__setattr__(config, "listen", ())
    if clock is None:
        return Server(config=config, node=node, listeners=listeners)
    return Server(config=config, node=node, listeners=listeners, clock=clock)
