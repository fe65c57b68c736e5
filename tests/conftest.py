"""Shared fixtures: Hypothesis profiles, dev keys, a static registry and running servers."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, settings

from novakms.auth.static import StaticRegistry
from novakms.config import Limits, ServerConfig
from novakms.server.node import Node, build_node
from novakms.server.server import Server, serve
from tests.harness.registry import MASTER_SECRET, VECTORS, Wallets, load_vectors, registry_json

settings.register_profile(
    "ci",
    max_examples=150,
    deadline=None,
    derandomize=True,  # CI runs the same examples every time; dev runs explore
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=50, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

# The data moved to tests/harness/registry.py; re-exported for code not yet importing it there.
__all__ = ["MASTER_SECRET", "VECTORS", "Wallets", "load_vectors", "registry_json"]


@pytest.fixture(scope="session")
def wallets() -> Wallets:
    return Wallets.make()


@dataclass
class RunningServer:
    server: Server
    node: Node
    registry: StaticRegistry
    addresses: list[str]
    stop: trio.Event

    @property
    def tcp(self) -> str:
        return next(a for a in self.addresses if not a.startswith("unix://"))

    @property
    def unix(self) -> str:
        return next(a for a in self.addresses if a.startswith("unix://"))

    @property
    def proxied(self) -> str:
        """The PROXY-protocol listener (started with ``proxy=True``)."""
        assert len(self.addresses) == 3, "start the server with proxy=True"
        return self.addresses[2]


StartServer = Callable[..., Any]


@pytest.fixture
async def start_server(nursery: trio.Nursery, wallets: Wallets, tmp_path: Path) -> StartServer:
    """Start a real server on TCP (loopback, free port) and a Unix socket; returns a handle."""

    async def start(
        *,
        limits: Limits | None = None,
        master_secret: bytes | None = MASTER_SECRET,
        proxy: bool = False,
        metrics: bool = False,
        access_log: bool = False,
        registry_changes: dict[str, Any] | None = None,
        **node_kwargs: Any,
    ) -> RunningServer:
        registry = StaticRegistry.from_json(registry_json(wallets) | (registry_changes or {}))
        sock = tmp_path / f"kms-{len(os.listdir(tmp_path))}.sock"
        config = ServerConfig(
            listen=("tcp://127.0.0.1:0", f"unix://{sock}"),
            listen_proxy=("tcp://127.0.0.1:0",) if proxy else (),
            limits=limits or Limits(),
            metrics=("tcp://127.0.0.1:0",) if metrics else (),
            access_log=access_log,
        )
        node = build_node(
            config=config,
            signer=wallets.node,
            registry=registry,
            membership=registry,
            secret=master_secret,
            **node_kwargs,
        )
        servers: list[Server] = []
        stop = trio.Event()
        addresses = await nursery.start(
            functools.partial(serve, node, config, stop=stop, on_server=servers.append)
        )
        return RunningServer(
            server=servers[0], node=node, registry=registry, addresses=addresses, stop=stop
        )

    return start
