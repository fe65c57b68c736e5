"""An in-process cluster over the memory network: static registry, no sockets, no chain.

:class:`MemoryCluster` registers N KMS operators (``node0:7000`` …) and one app in a
:class:`~novakms.auth.static.StaticRegistry`, starts each node's server on a
:class:`~tests.harness.memory.MemoryListener` and lets its peers dial it through the node's own
:meth:`~tests.harness.memory.MemoryNetwork.dialer`. Run it under
``MockClock(autojump_threshold=0)`` (pytest-trio's ``autojump_clock`` fixture) with a
:func:`tests.harness.clock.unix_clock` as every node's clock: intervals and timeouts then cost
no real time.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from typing import Any

import trio

from novakms.auth.model import App, AppStatus, AppVersion, Instance, InstanceStatus, VersionStatus
from novakms.auth.static import StaticRegistry
from novakms.client.aio import Client
from novakms.cluster import replication
from novakms.config import Limits
from novakms.crypto.signer import LocalSigner
from novakms.errors import NotFound, Unavailable
from novakms.server.node import Node
from novakms.store.records import Record
from tests.harness.build import RunningNodes, build_node, build_server, replicator
from tests.harness.memory import MemoryNetwork

__all__ = [
    "APP_ID",
    "KMS_APP_ID",
    "MEMORY_LIMITS",
    "SYNCING",
    "MemoryCluster",
    "digests",
    "grave",
    "signer",
    "stored",
    "until",
]

APP_ID = 1
KMS_APP_ID = 2
#: The cluster tests' intervals (as on the anvil world), and room for the memory network: every
#: connection comes from the ``unknown`` source, so the per-source bounds are raised.
MEMORY_LIMITS = Limits(
    bootstrap_interval=0.2,
    peer_timeout=2.0,
    anti_entropy_interval=0.5,
    ack_timeout=1.0,
    handshake_burst=10**6,
    max_unproven_per_source=10**4,
    max_connections_per_source=10**4,
)
SYNCING = "syncing"


def signer(label: str) -> LocalSigner:
    """A fixed test wallet named by ``label`` (the same as on the anvil world)."""
    return LocalSigner(hashlib.sha256(f"novakms cluster test {label}".encode()).digest())


async def until(predicate: Callable[[], object], seconds: float = 20) -> None:
    """Wait (trio time) until ``predicate()`` is true; fail after ``seconds``."""
    with trio.fail_after(seconds):
        while not predicate():
            await trio.sleep(0.05)


def grave(node: Node, key: str) -> Any:
    """What the node stores under ``key`` (any app): the record, or None."""
    assert node.store is not None
    found = [r for r in node.store.records() if r.key == key]
    return found[0] if found else None


def stored(node: Node, app_id: int, key: str) -> Record | None:
    """The record the node stores for ``key`` of ``app_id`` (None: none, or no store yet)."""
    return None if node.store is None else node.store.record(app_id, key)


def digests(node: Node) -> dict[int, bytes]:
    """The node's per-app digests (equal on two nodes: they hold the same records)."""
    assert node.store is not None
    return replication.app_digests(node.store.records())


class MemoryCluster(RunningNodes):
    """Operators ``node0..`` and the app ``app`` in a static registry, over a memory network.

    Args:
        nursery: where the servers run.
        clock: the servers' unix-seconds clock (:func:`tests.harness.clock.unix_clock`).
        size: how many operators are registered (started with :meth:`start`).
        label: the operators' wallet labels are ``<label>0`` ….
    """

    def __init__(
        self,
        nursery: trio.Nursery,
        clock: Callable[[], float],
        *,
        size: int = 3,
        label: str = "node",
    ) -> None:
        super().__init__(nursery)
        self.clock = clock
        self.network = MemoryNetwork()
        self.app = signer("app")
        self.registry = StaticRegistry(
            apps=[App(app_id=a, status=AppStatus.ACTIVE) for a in (APP_ID, KMS_APP_ID)],
            versions=[
                AppVersion(app_id=app_id, version_id=1, status=VersionStatus.ENROLLED)
                for app_id in (APP_ID, KMS_APP_ID)
            ],
            kms_app_id=KMS_APP_ID,
        )
        self._instances = 0
        self._register(self.app.wallet, APP_ID, "")
        self.members: list[tuple[LocalSigner, str]] = []
        for i in range(size):
            self.members.append(self.register(signer(f"{label}{i}"), f"node{i}:7000"))
        self.nodes: dict[str, Node] = {}

    def _register(self, wallet: str, app_id: int, url: str) -> None:
        self._instances += 1
        self.registry.add_instance(
            Instance(
                instance_id=self._instances,
                app_id=app_id,
                version_id=1,
                wallet=wallet,
                zk_verified=True,
                status=InstanceStatus.ACTIVE,
                instance_url=url,
            )
        )

    def register(self, who: LocalSigner, address: str) -> tuple[LocalSigner, str]:
        """Register a KMS operator instance listening at ``address`` (not started)."""
        self._register(who.wallet, KMS_APP_ID, f"http://{address}")
        self.registry.add_operator(who.wallet)
        self.network.name(address, who.wallet)
        return who, address

    def address(self, node: Node) -> str:
        """Where ``node`` listens."""
        return next(address for s, address in self.members if s.wallet == node.wallet)

    async def start(
        self,
        who: LocalSigner,
        address: str,
        *,
        secret: bytes | None = None,
        limits: Limits = MEMORY_LIMITS,
        clock: Callable[[], float] | None = None,
        **options: Any,
    ) -> Node:
        """Start a registered operator's server at ``address``; returns its node.

        ``clock`` replaces the cluster's for this server; ``options`` are further node fields
        (e.g. ``random_bytes``).
        """
        node = build_node(
            signer=who,
            auth=self.registry,
            limits=limits,
            master_secret=secret,
            dial=self.network.dialer(who.wallet),
            clock=clock or self.clock,
            **options,
        )
        listener = self.network.listen(address)
        server = build_server(node=node, listeners=[(listener, address)])
        await self.run_server(server)
        self.nodes[who.wallet] = node
        return node

    async def start_all(self, limits: Limits = MEMORY_LIMITS) -> list[Node]:
        """Start every registered operator; wait until all share a secret and see every peer."""
        nodes = [await self.start(s, address, limits=limits) for s, address in self.members]
        await until(
            lambda: all(
                n.master_secret is not None
                and not n.syncing
                and n.replicator is not None
                and replicator(n).peer_count() == len(nodes) - 1
                for n in nodes
            )
        )
        return nodes

    async def join(self, who: LocalSigner, **start: Any) -> tuple[Node, str]:
        """Register a new operator, then start it (a late joiner)."""
        member = self.register(who, f"node{len(self.members)}:7000")
        self.members.append(member)
        return await self.start(*member, **start), member[1]

    async def connect(self, address: str, **options: Any) -> Client:
        """A client of the node at ``address`` (default: as the app), over the memory network."""
        options.setdefault("signer", self.app)
        return await Client.connect(
            address, dial=self.network.dialer("test"), clock=self.clock, **options
        )

    async def put(self, address: str, key: str, value: bytes, **options: Any) -> None:
        """``kv.put`` as the app on the node at ``address``."""
        async with await self.connect(address) as kms:
            await kms.kv_put(key, value, **options)

    async def value_on(self, address: str, key: str) -> bytes | str | None:
        """The value (None: not found; ``SYNCING`` while the node is still catching up)."""
        async with await self.connect(address) as kms:
            try:
                return (await kms.kv_get(key)).value
            except NotFound:
                return None
            except Unavailable as exc:
                if exc.reason != "syncing":
                    raise
                return SYNCING

    async def wait_everywhere(
        self, key: str, expected: bytes | None, addresses: list[str] | None = None
    ) -> None:
        """Poll every node (or those at ``addresses``) until it reads ``expected`` for ``key``."""
        with trio.fail_after(20):
            for address in addresses or [a for _, a in self.members]:
                while await self.value_on(address, key) != expected:
                    await trio.sleep(0.05)


def replace_limits(limits: Limits = MEMORY_LIMITS, **changes: Any) -> Limits:
    """``MEMORY_LIMITS`` with ``changes``."""
    return dataclasses.replace(limits, **changes)
