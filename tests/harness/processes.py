"""A KMS cluster of real ``novakms serve`` processes on a real anvil, for the cluster-client tests.

What ``novakms dev`` runs, driven from a test: the registries and one demo app on anvil, then
one ``novakms serve`` process per node (the same command line as the dev cluster's,
:func:`novakms.dev.nodes.start_node`), every node with the same master secret file, so that
they serve at once. Nodes can then be killed, paused, resumed, stopped on chain, and new ones
registered and started (:meth:`ProcessWorld.add_node`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import trio

from novakms.admin.tx import TxSender
from novakms.auth.model import InstanceStatus
from novakms.chain import abi
from novakms.chain.registry import RegistryReader
from novakms.chain.rpc import JsonRpcClient
from novakms.client.aio import Client
from novakms.crypto.signer import LocalSigner
from novakms.dev.anvil import AnvilProcess, find_anvil
from novakms.dev.env import write_key_file
from novakms.dev.nodes import DevNode, NodeLaunch, start_node, stop_nodes
from novakms.dev.world import DevChain, register_instance, setup_world
from novakms.errors import NovaKMSError
from tests.harness.world import free_port

__all__ = ["FAST_LIMITS", "ProcessWorld", "process_world"]

FAST_LIMITS = ("bootstrap_interval=0.2", "anti_entropy_interval=0.5", "wallet_rate=inf")
_READY_TIMEOUT = 60.0


def _key(label: str) -> bytes:
    return hashlib.sha256(f"novakms cluster-client test {label}".encode()).digest()


@dataclass
class ProcessWorld:
    """The chain, the app's key, and the node processes."""

    anvil: AnvilProcess
    chain: DevChain
    admin: TxSender
    launch: NodeLaunch
    directory: Path
    app: LocalSigner
    app_key_file: Path
    nodes: list[DevNode] = field(default_factory=list)

    @property
    def addresses(self) -> list[str]:
        return [node.address for node in self.nodes]

    def node(self, address: str) -> DevNode:
        return next(n for n in self.nodes if n.address == address)

    def signal(self, address: str, sig: signal.Signals) -> None:
        process = self.node(address).process
        assert process is not None
        os.kill(process.pid, sig)

    async def add_node(self, label: str) -> DevNode:
        """Register a new KMS instance on chain, then start its process (not waited for)."""
        node = self._new_node(label)
        await register_instance(
            self.admin,
            self.chain.nova_app_registry,
            self.chain.kms_app_id,
            node.wallet,
            f"http://{node.address}",
        )
        start_node(self.launch, node, with_secret=True)
        return node

    async def stop_instance(self, address: str) -> None:
        """``updateInstanceStatus(id, STOPPED)`` for the node's instance (its process runs on)."""
        reader = RegistryReader(
            self.admin.rpc,
            nova_app_registry=self.chain.nova_app_registry,
            kms_registry=self.chain.kms_registry,
            block_tag="latest",
        )
        instance = await reader.instance_by_wallet(self.node(address).wallet)
        assert instance is not None
        await self.admin.send(
            self.chain.nova_app_registry,
            abi.nova_app_registry().encode_call(
                "updateInstanceStatus", instance.instance_id, int(InstanceStatus.STOPPED)
            ),
        )

    def _new_node(self, label: str) -> DevNode:
        key = _key(label)
        key_file = write_key_file(self.directory / f"{label}.key", key)
        port = free_port()
        node = DevNode(
            host="127.0.0.1", port=port, wallet=LocalSigner(key).wallet, key_file=key_file
        )
        self.nodes.append(node)
        return node


async def serving(address: str, timeout: float = _READY_TIMEOUT) -> None:
    """Wait until the node answers ``status`` ready and not syncing."""
    with trio.fail_after(timeout):
        while True:
            with contextlib.suppress(NovaKMSError):
                async with await Client.connect(address, timeout=2) as kms:
                    status = await kms.status()
                    if status.ready and not status.syncing:
                        return
            await trio.sleep(0.1)


@contextlib.asynccontextmanager
async def process_world(
    directory: Path, *, nodes: int = 3, limits: Sequence[str] = FAST_LIMITS
) -> AsyncIterator[ProcessWorld]:
    """Anvil, the registries, one app and ``nodes`` serving node processes; all stopped after."""
    anvil = AnvilProcess(find_anvil()).start()
    try:
        rpc = JsonRpcClient(anvil.url, timeout=10)
        admin_key = anvil.private_keys[0]
        app_key = _key("app")
        app = LocalSigner(app_key)
        app_key_file = write_key_file(directory / "app.key", app_key)
        secret_file = directory / "master.secret"
        secret_file.write_text("0x" + _key("master secret").hex() + "\n")
        secret_file.chmod(0o600)
        world = ProcessWorld(
            anvil=anvil,
            chain=DevChain(nova_app_registry="", kms_registry="", kms_app_id=0),
            admin=TxSender(rpc, admin_key),
            launch=NodeLaunch(
                log_level="WARNING",
                chain_rpc="",
                nova_app_registry="",
                kms_registry="",
                poll_interval=0.2,
            ),
            directory=directory,
            app=app,
            app_key_file=app_key_file,
        )
        members = [world._new_node(f"node{i}") for i in range(nodes)]
        world.chain = await setup_world(
            rpc,
            admin_key,
            node_wallets=[(n.wallet, f"http://{n.address}") for n in members],
            app_wallets=[app.wallet],
        )
        world.launch = NodeLaunch(
            log_level="WARNING",
            chain_rpc=anvil.url,
            nova_app_registry=world.chain.nova_app_registry,
            kms_registry=world.chain.kms_registry,
            poll_interval=0.2,
            limits=tuple(limits),
            master_secret_file=str(secret_file.resolve()),
        )
        try:
            for node in members:
                start_node(world.launch, node, with_secret=True)
            for node in members:
                await serving(node.address)
            yield world
        finally:
            for node in world.nodes:  # resume a paused node, or it cannot drain
                if node.running:
                    assert node.process is not None
                    os.kill(node.process.pid, signal.SIGCONT)
            stop_nodes(world.nodes, grace=5.0)
            await rpc.aclose()
    finally:
        anvil.stop()
