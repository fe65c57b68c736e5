"""The master-secret bootstrap over real peer channels, with the registries on a real anvil."""

from __future__ import annotations

import contextlib
import hashlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from novakms.admin.tx import TxSender
from novakms.chain import abi
from novakms.chain.registry import RegistryReader
from novakms.chain.rpc import JsonRpcClient
from novakms.chain.source import ChainAuthorizationSource, ChainSettings
from novakms.client.aio import Client
from novakms.cluster.peering import bootstrap_round
from novakms.cluster.proof import cluster_proof
from novakms.config import Limits, ServerConfig
from novakms.crypto.kdf import secret_fingerprint
from novakms.crypto.signer import LocalSigner
from novakms.dev.anvil import AnvilProcess
from novakms.dev.world import DevChain, enroll_version, register_instance, setup_world
from novakms.errors import Forbidden, Unavailable
from novakms.server.node import Node, build_node
from novakms.server.server import Server

LIMITS = Limits(
    bootstrap_interval=0.2, peer_timeout=2.0, anti_entropy_interval=0.5, ack_timeout=1.0
)


def signer(label: str) -> LocalSigner:
    return LocalSigner(hashlib.sha256(f"novakms cluster test {label}".encode()).digest())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cluster:
    def __init__(
        self, nursery: trio.Nursery, anvil: AnvilProcess, chain: DevChain, admin: TxSender
    ) -> None:
        self.nursery, self.anvil, self.chain, self.admin = nursery, anvil, chain, admin
        self.clients: list[JsonRpcClient] = []
        self.nodes: list[Node] = []
        self.scopes: dict[str, trio.CancelScope] = {}
        self.servers: dict[str, Server] = {}
        self.stopped: dict[str, trio.Event] = {}

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
        config = ServerConfig(listen=(f"tcp://127.0.0.1:{port}",), limits=limits)
        node = build_node(
            config=config,
            signer=who,
            registry=source,
            membership=source,
            secret=secret,
            peer_proxy=peer_proxy,
            require_pin=require_pin,
        )
        await self.nursery.start(self._serve, Server(config=config, node=node))
        self.nodes.append(node)
        return node

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

    def stop(self, node: Node) -> None:
        """Kill a node (its memory, secret and data included), as a crash would."""
        self.scopes.pop(node.wallet).cancel()

    async def shut_down(self, node: Node) -> None:
        """Stop a node gracefully (as SIGTERM does) and wait until it has stopped."""
        self.scopes.pop(node.wallet)
        self.servers[node.wallet].shutdown()
        await self.stopped[node.wallet].wait()

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


@pytest.fixture
async def world(
    nursery: trio.Nursery, anvil: AnvilProcess
) -> AsyncIterator[tuple[Cluster, list[tuple[LocalSigner, int]]]]:
    async with open_world(nursery, anvil, app_wallets=[signer("app").wallet]) as opened:
        yield opened


async def until(predicate: Any, seconds: float = 20) -> None:
    with trio.fail_after(seconds):
        while not predicate():
            await trio.sleep(0.05)


async def test_simultaneous_start_gives_exactly_one_secret(world: Any) -> None:
    cluster, members = world
    nodes = [await cluster.start(s, port) for s, port in members]
    await until(lambda: all(n.master_secret is not None for n in nodes))
    assert len({n.fingerprint() for n in nodes}) == 1
    # Every node then serves the same keys to an app.
    app = signer("app")
    keys = set()
    for _, port in members:
        async with await Client.connect(f"127.0.0.1:{port}", signer=app) as kms:
            keys.add((await kms.derive("k")).key)
    assert len(keys) == 1


async def test_a_late_node_fetches_the_existing_secret(world: Any) -> None:
    cluster, members = world
    nodes = [await cluster.start(s, port) for s, port in members]
    await until(lambda: all(n.master_secret is not None for n in nodes))
    node, _ = await cluster.join(signer("late"))
    await until(lambda: node.master_secret is not None)
    assert node.fingerprint() == nodes[0].fingerprint()


async def test_conflicting_secrets_without_pin_are_split_brain(world: Any) -> None:
    cluster, members = world
    (a, pa), (b, pb), (c, pc) = members
    await cluster.start(a, pa, secret=b"\x01" * 32)
    await cluster.start(b, pb, secret=b"\x02" * 32)
    fresh = await cluster.start(c, pc)
    await until(lambda: fresh.not_ready.reason == "split_brain")
    assert fresh.master_secret is None
    async with await Client.connect(f"127.0.0.1:{pc}") as kms:
        status = await kms.status()
    assert status["ready"] is False and status["reason"] == "split_brain"


async def test_pin_selects_the_matching_secret(world: Any) -> None:
    cluster, members = world
    (a, pa), (b, pb), (c, pc) = members
    await cluster.pin(bytes.fromhex(secret_fingerprint(b"\x02" * 32)[2:]))
    await cluster.start(a, pa, secret=b"\x01" * 32)
    await cluster.start(b, pb, secret=b"\x02" * 32)
    fresh = await cluster.start(c, pc)
    await until(lambda: fresh.master_secret is not None)
    assert fresh.master_secret == b"\x02" * 32  # never the unpinned one


async def test_pin_nobody_matches_is_secret_lost_and_nothing_is_generated(world: Any) -> None:
    cluster, members = world
    await cluster.pin(b"\x07" * 32)
    nodes = [await cluster.start(s, port) for s, port in members]
    await until(lambda: all(n.not_ready.reason == "secret_lost" for n in nodes))
    assert all(n.master_secret is None for n in nodes)


async def test_a_held_secret_that_stops_matching_the_pin_is_not_served(world: Any) -> None:
    cluster, members = world
    (a, pa), (b, pb), _ = members
    node = await cluster.start(a, pa, secret=b"\x01" * 32)
    proven = await Client.connect(f"127.0.0.1:{pa}", signer=b, role="peer")
    th = proven.transcript_hash
    proof = cluster_proof(master_secret=b"\x01" * 32, transcript_hash=th, direction="c2s")
    await proven.call("sync.hello", {"proof": proof})
    async with await Client.connect(f"127.0.0.1:{pa}", signer=signer("app")) as app:
        before = await app.derive("disk")
        # The owner pins another secret's fingerprint: within a poll the node stops serving.
        await cluster.pin(bytes.fromhex(secret_fingerprint(b"\x02" * 32)[2:]))
        await until(lambda: node.pin_mismatch)
        with pytest.raises(Unavailable) as info:
            await app.derive("disk")
        assert info.value.reason == "secret_mismatch"
        with pytest.raises(Unavailable):
            await app.cert_ca(1)
        status = await app.status()
        assert (status["ready"], status["reason"]) == (False, "secret_mismatch")
        assert status["secret"]["matches_pin"] is False
        # Nor does it give the secret, or a proof of it, to a peer, nor exchange records on a
        # channel that was proven before the pin changed.
        async with await Client.connect(f"127.0.0.1:{pa}", signer=b, role="peer") as peer:
            for op, args in (("secret.get", {}), ("sync.hello", {"proof": bytes(32)})):
                with pytest.raises(Unavailable) as info:
                    await peer.call(op, args)
                assert info.value.reason == "secret_mismatch"
        with pytest.raises(Unavailable) as info:
            await proven.call("sync.digests", {})
        assert info.value.reason == "secret_mismatch"
        await proven.aclose()
        # Pinning the secret it holds makes it serve again, with the same keys.
        await cluster.pin(bytes.fromhex(secret_fingerprint(b"\x01" * 32)[2:]))
        await until(lambda: not node.pin_mismatch)
        assert (await app.derive("disk")).key == before.key


async def test_only_kms_operators_may_ask_for_the_secret(world: Any) -> None:
    cluster, members = world
    (a, pa), _, _ = members
    await cluster.start(a, pa, secret=b"\x01" * 32)
    async with await Client.connect(
        f"127.0.0.1:{pa}", signer=signer("intruder"), role="peer"
    ) as peer:
        with pytest.raises(Forbidden):
            await peer.call("secret.get")
    async with await Client.connect(f"127.0.0.1:{pa}", signer=signer("app"), role="app") as app:
        with pytest.raises(Forbidden) as info:
            await app.call("secret.status")
        assert info.value.details["reason"] == "wrong_role"


async def test_a_refused_operator_that_may_hold_the_secret_stops_a_new_one(world: Any) -> None:
    """A revoked-version node holding the secret is no peer, but nobody generates beside it."""
    cluster, members = world
    chain = cluster.chain
    await enroll_version(cluster.admin, chain.nova_app_registry, chain.kms_app_id, "kms2")
    await cluster.join(signer("holder"), version_id=2, secret=b"\x05" * 32)
    await cluster.admin.send(
        chain.nova_app_registry,
        abi.nova_app_registry().encode_call("revokeVersion", chain.kms_app_id, 2),
    )
    # The three version-1 operators start fresh and all answer each other: without the holder
    # they would form a "fully answering fresh cluster" and generate a second secret.
    nodes = [await cluster.start(s, port) for s, port in members]
    assert nodes[0].bootstrap is not None
    decision = await bootstrap_round(nodes[0].bootstrap, timeout=2.0, random_bytes=bytes)
    assert decision.action == "wait"
    assert all(n.master_secret is None for n in nodes)


async def test_an_unpinned_cluster_bootstraps_but_serves_apps_only_once_pinned(
    world: Any,
) -> None:
    cluster, members = world
    nodes = [await cluster.start(s, port, require_pin=True) for s, port in members]
    # The secret is agreed on and shared between peers as before the pin...
    await until(lambda: all(n.master_secret is not None and not n.syncing for n in nodes))
    assert len({n.fingerprint() for n in nodes}) == 1
    fingerprint = nodes[0].fingerprint()
    app = signer("app")
    for _, port in members:
        async with await Client.connect(f"127.0.0.1:{port}", signer=app) as kms:
            status = await kms.status()
            assert status["ready"] is False and status["reason"] == "unpinned"
            assert status["secret"]["fingerprint"] == fingerprint
            assert status["secret"]["pinned"] is False
            # ...but no app operation is served under it.
            for call in (kms.derive("p"), kms.kv_get("k"), kms.cert_ca(1)):
                with pytest.raises(Unavailable) as info:
                    await call
                assert info.value.reason == "unpinned"
                assert info.value.details["fingerprint"] == fingerprint
    assert fingerprint is not None
    await cluster.pin(bytes.fromhex(fingerprint[2:]))
    await until(lambda: all(n.serving_apps for n in nodes))
    keys = set()
    for _, port in members:
        async with await Client.connect(f"127.0.0.1:{port}", signer=app) as kms:
            assert (await kms.status())["ready"] is True
            keys.add((await kms.derive("p")).key)
    assert len(keys) == 1
