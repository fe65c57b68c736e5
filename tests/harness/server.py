"""One in-process server on the memory network: no port, and trio's clock for its wall clock.

Under ``MockClock(autojump_threshold=0)`` the server's timeouts (handshake, idle, drain) pass
as soon as nothing else can run, so the lifecycle tests take no real time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from novakms.auth.model import App, AppStatus, AppVersion, Instance, InstanceStatus, VersionStatus
from novakms.auth.source import Registry
from novakms.auth.static import StaticRegistry
from novakms.client.aio import Client
from novakms.config import Limits
from novakms.crypto.signer import LocalSigner
from novakms.net.framed import SealedStream
from novakms.server.node import Node
from novakms.server.server import Server
from tests.harness.build import build_node, build_server
from tests.harness.memory import MemoryNetwork
from tests.sessions import handshake

__all__ = ["MemoryServer", "app_registry", "start_memory_server"]

ADDRESS = "kms:7000"


def app_registry(*, node: LocalSigner, apps: list[LocalSigner]) -> StaticRegistry:
    """A static registry: ``node`` an operator, each of ``apps`` an active instance of app 1."""
    return StaticRegistry(
        apps=[App(app_id=1, status=AppStatus.ACTIVE)],
        versions=[AppVersion(app_id=1, version_id=1, status=VersionStatus.ENROLLED)],
        instances=[
            Instance(
                instance_id=i,
                app_id=1,
                version_id=1,
                wallet=app.wallet,
                zk_verified=True,
                status=InstanceStatus.ACTIVE,
            )
            for i, app in enumerate(apps, start=1)
        ],
        operators=[node.wallet],
    )


@dataclass
class MemoryServer:
    """A running server at ``address`` on ``network``."""

    server: Server
    node: Node
    network: MemoryNetwork
    address: str
    clock: Callable[[], float]

    async def connect(self, **options: Any) -> Client:
        """A client over the memory network (options as for ``Client.connect``)."""
        return await Client.connect(
            self.address, dial=self.network.dialer("test"), clock=self.clock, **options
        )

    async def dial(self) -> trio.abc.Stream:
        """A raw stream to the server."""
        return await self.network.dial(self.address)

    async def session(self, signer: LocalSigner | None = None) -> SealedStream:
        """A hand-driven session (:func:`tests.sessions.handshake`)."""
        return await handshake(await self.dial(), signer, clock=self.clock)


async def start_memory_server(
    nursery: trio.Nursery,
    *,
    signer: LocalSigner,
    auth: Registry,
    clock: Callable[[], float],
    limits: Limits | None = None,
    master_secret: bytes | None = None,
) -> MemoryServer:
    """Start a node's server on a fresh memory network; returns once it serves."""
    network = MemoryNetwork()
    node = build_node(
        signer=signer,
        auth=auth,
        limits=limits or Limits(),
        master_secret=master_secret,
        clock=clock,
    )
    server = build_server(node=node, listeners=[(network.listen(ADDRESS), ADDRESS)])
    await nursery.start(server.run)
    return MemoryServer(server=server, node=node, network=network, address=ADDRESS, clock=clock)
