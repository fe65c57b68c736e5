"""The anvil world of the cluster tests: real nodes on real sockets, registries on a real chain.

Where the chain (or the socket) is the subject. :class:`Cluster` starts nodes on loopback TCP
with a chain authorization source; :func:`open_world` deploys the registries with three KMS
operators; ``value_on`` / ``wait_everywhere`` read through a real client; ``write_bulk`` fills a
node for the snapshot tests. The fixtures ``world`` and ``proxies`` live in
tests/cluster/conftest.py. (A cluster without a chain or sockets: :mod:`tests.harness.cluster`.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
from collections.abc import AsyncIterator
from typing import Any

import trio

from novakms.admin.tx import TxSender
from novakms.chain import abi
from novakms.chain.registry import RegistryReader
from novakms.chain.rpc import JsonRpcClient
from novakms.chain.source import ChainAuthorizationSource, ChainSettings
from novakms.client.aio import Client
from novakms.config import Limits
from novakms.crypto.signer import LocalSigner
from novakms.dev.anvil import AnvilProcess
from novakms.dev.world import DevChain, register_instance, setup_world
from novakms.errors import NotFound, Unavailable
from novakms.server.node import Node
from tests.harness.build import RunningNodes, build_node, build_server
from tests.harness.cluster import signer, until

__all__ = [
    "APP",
    "LIMITS",
    "RECORDS",
    "SMALL",
    "SYNCING",
    "Cluster",
    "World",
    "free_port",
    "open_world",
    "signer",
    "started",
    "until",
    "value_on",
    "wait_everywhere",
    "write_bulk",
]

World = tuple["Cluster", list[tuple[LocalSigner, int]]]

LIMITS = Limits(
    bootstrap_interval=0.2, peer_timeout=2.0, anti_entropy_interval=0.5, ack_timeout=1.0
)


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cluster(RunningNodes):
    """Nodes on loopback TCP, authorized by the registries on the anvil chain."""

    def __init__(
        self, nursery: trio.Nursery, anvil: AnvilProcess, chain: DevChain, admin: TxSender
    ) -> None:
        super().__init__(nursery)
        self.anvil, self.chain, self.admin = anvil, chain, admin
        self.clients: list[JsonRpcClient] = []
        self.nodes: list[Node] = []

    async def start(
        self,
        who: LocalSigner,
        port: int,
        secret: bytes | None = None,
        limits: Limits = LIMITS,
        peer_proxy: str | None = None,
        require_pin: bool = False,
    ) -> Node:
        rpc = JsonRpcClient(self.anvil.url, timeout=2.0)
        self.clients.append(rpc)
        reader = RegistryReader(
            rpc,
            nova_app_registry=self.chain.nova_app_registry,
            kms_registry=self.chain.kms_registry,
        )
        source = ChainAuthorizationSource(reader, ChainSettings(poll_interval=0.2))
        node = build_node(
            signer=who,
            auth=source,
            limits=limits,
            master_secret=secret,
            peer_proxy=peer_proxy,
            require_pin=require_pin,
        )
        server = build_server(node=node, listen=[f"tcp://127.0.0.1:{port}"])
        await self.run_server(server)
        self.nodes.append(node)
        return node

    async def join(
        self, who: LocalSigner, *, version_id: int = 1, **start: Any
    ) -> tuple[Node, int]:
        """Register a new KMS instance on chain, then start it (a late joiner)."""
        port = free_port()
        await register_instance(
            self.admin,
            self.chain.nova_app_registry,
            self.chain.kms_app_id,
            who.wallet,
            f"http://127.0.0.1:{port}",
            version_id=version_id,
        )
        return await self.start(who, port, **start), port

    async def pin(self, secret_hash: bytes) -> None:
        await self.admin.send(
            self.chain.kms_registry,
            abi.kms_registry().encode_call("setMasterSecretHash", secret_hash),
        )


@contextlib.asynccontextmanager
async def open_world(
    nursery: trio.Nursery,
    anvil: AnvilProcess,
    *,
    app_wallets: list[str],
    label: str = "node",
) -> AsyncIterator[tuple[Cluster, list[tuple[LocalSigner, int]]]]:
    """Registries with three KMS operators (``<label>0..2``, not started) and these apps."""
    members = [(signer(f"{label}{i}"), free_port()) for i in range(3)]
    admin_rpc = JsonRpcClient(anvil.url, timeout=10)
    chain = await setup_world(
        admin_rpc,
        anvil.private_keys[0],
        node_wallets=[(s.wallet, f"http://127.0.0.1:{port}") for s, port in members],
        app_wallets=app_wallets,
    )
    cluster = Cluster(nursery, anvil, chain, TxSender(admin_rpc, anvil.private_keys[0]))
    try:
        yield cluster, members
    finally:
        for client in [admin_rpc, *cluster.clients]:
            await client.aclose()


APP = signer("app")


async def started(world: World) -> tuple[Cluster, list[tuple[LocalSigner, int]], list[Node]]:
    """Start the world's three operators; wait until they share a secret and are caught up."""
    cluster, members = world
    nodes = [await cluster.start(s, port) for s, port in members]
    await until(lambda: all(n.master_secret is not None and not n.syncing for n in nodes))
    return cluster, members, nodes


SYNCING = "syncing"


async def value_on(port: int, key: str) -> bytes | str | None:
    """The value (None: not found; ``SYNCING`` while the node is still catching up)."""
    async with await Client.connect(f"127.0.0.1:{port}", signer=APP) as kms:
        try:
            return (await kms.kv_get(key)).value
        except NotFound:
            return None
        except Unavailable as exc:
            if exc.reason != "syncing":
                raise
            return SYNCING


async def wait_everywhere(members: list[tuple[Any, int]], key: str, expected: bytes | None) -> None:
    """Poll every node until it reads ``expected`` for ``key`` (None: not found)."""
    with trio.fail_after(20):
        for _, port in members:
            while await value_on(port, key) != expected:
                await trio.sleep(0.05)


RECORDS = 1500
# The bulk writes must never meet the wallet's rate limit: a burst that covers all of them makes
# the test independent of how fast the machine refills the bucket.
SMALL = dataclasses.replace(
    LIMITS, max_frame=16_384, max_value_bytes=1024, wallet_burst=4 * RECORDS
)


async def write_bulk(port: int) -> None:
    """RECORDS values of 512 bytes (``bulk/00000`` …), 32 writes in flight on one connection."""
    writers = trio.CapacityLimiter(32)

    async def put(client: Client, i: int) -> None:
        async with writers:
            await client.kv_put(f"bulk/{i:05d}", bytes([i % 251]) * 512)

    async with (
        await Client.connect(f"127.0.0.1:{port}", signer=APP) as kms,
        trio.open_nursery() as nursery,
    ):
        for i in range(RECORDS):
            nursery.start_soon(put, kms, i)
