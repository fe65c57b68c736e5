"""Authorization follows the chain: a running node against real anvil with the real registries.

Revocation latency is measured (polling, never fixed sleeps) and printed; what is asserted is
structural: enforcement happens by the end of the first poll that starts after the block.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import trio
import trio.testing

from novakms.admin.tx import TxSender
from novakms.auth.model import Identity
from novakms.chain import abi
from novakms.chain.registry import RegistryReader
from novakms.chain.rpc import JsonRpcClient
from novakms.chain.source import ChainAuthorizationSource, ChainSettings
from novakms.client.aio import Client
from novakms.config import Limits, ServerConfig
from novakms.dev.anvil import AnvilProcess
from novakms.dev.world import DevChain, register_instance, setup_world
from novakms.errors import Forbidden, NovaKMSError, Unavailable
from novakms.server.node import build_node
from novakms.server.server import serve
from tests.chain.faultproxy import Mode as ProxyMode
from tests.chain.faultproxy import fault_proxy
from tests.harness.registry import MASTER_SECRET, Wallets

POLL = 0.3
_OPEN_CLIENTS: list[JsonRpcClient] = []


@pytest.fixture(autouse=True)
async def _close_rpc_clients() -> AsyncIterator[None]:
    yield
    while _OPEN_CLIENTS:
        await _OPEN_CLIENTS.pop().aclose()


def client_of(url: str, timeout: float) -> JsonRpcClient:
    client = JsonRpcClient(url, timeout=timeout)
    _OPEN_CLIENTS.append(client)
    return client


@dataclass
class World:
    anvil: AnvilProcess
    admin: TxSender
    chain: DevChain
    source: ChainAuthorizationSource
    address: str


async def start_world(
    nursery: trio.Nursery,
    anvil: AnvilProcess,
    wallets: Wallets,
    *,
    rpc_url: str | None = None,
    **settings: Any,
) -> World:
    admin_rpc = client_of(anvil.url, 10)
    admin_key = anvil.private_keys[0]
    chain = await setup_world(
        admin_rpc,
        admin_key,
        node_wallets=[(wallets.node.wallet, "http://127.0.0.1:1")],
        app_wallets=[wallets.app1.wallet, wallets.app2.wallet],
    )
    reader = RegistryReader(
        client_of(rpc_url or anvil.url, 1.0),
        nova_app_registry=chain.nova_app_registry,
        kms_registry=chain.kms_registry,
    )
    source = ChainAuthorizationSource(reader, ChainSettings(poll_interval=POLL, **settings))
    config = ServerConfig(listen=("tcp://127.0.0.1:0",), limits=Limits())
    node = build_node(
        config=config,
        signer=wallets.node,
        registry=source,
        membership=source,
        secret=MASTER_SECRET,
    )
    [address] = await nursery.start(serve, node, config)
    with trio.fail_after(10):
        await source.ready.wait()
    return World(
        anvil=anvil,
        admin=TxSender(admin_rpc, admin_key),
        chain=chain,
        source=source,
        address=address,
    )


async def enforced_within_one_poll(world: World, check: Callable[[], Any], what: str) -> float:
    """Wait until ``check`` raises Forbidden; return the latency; assert it took at most the
    poll that was running when the block was mined plus the next one."""
    polls_at_block = world.source.polls
    start = trio.current_time()
    with trio.fail_after(20 * POLL + 10):
        while True:
            try:
                await check()
            except Forbidden:
                break
            await trio.sleep(0.01)
    latency = trio.current_time() - start
    took, interval = f"{latency * 1000:.0f} ms", f"{POLL * 1000:.0f} ms"
    print(f"\n{what}: enforced {took} after the block (poll interval {interval})")
    assert world.source.polls <= polls_at_block + 2, "enforced later than one poll interval"
    return latency


async def test_revocations_are_enforced_within_one_poll(
    nursery: trio.Nursery, anvil: AnvilProcess, wallets: Wallets
) -> None:
    world = await start_world(nursery, anvil, wallets)
    nova = abi.nova_app_registry()
    async with (
        await Client.connect(world.address, signer=wallets.app1) as app1,
        await Client.connect(world.address, signer=wallets.app2) as app2,
    ):
        assert (await app1.derive("k")).app_id == 1
        assert (await app2.derive("k")).app_id == 2

        await world.admin.send(
            world.chain.nova_app_registry, nova.encode_call("revokeVersion", 1, 1)
        )
        await enforced_within_one_poll(world, lambda: app1.derive("k"), "version revoked")

        await world.admin.send(
            world.chain.nova_app_registry, nova.encode_call("updateAppStatus", 2, 1)
        )
        await enforced_within_one_poll(world, lambda: app2.derive("k"), "app deactivated")
        with pytest.raises(Forbidden) as info:
            await app2.derive("k")
        assert info.value.details["reason"] == "app_not_active"


async def test_stopped_instance_and_removed_operator(
    nursery: trio.Nursery, anvil: AnvilProcess, wallets: Wallets
) -> None:
    world = await start_world(nursery, anvil, wallets)
    nova = abi.nova_app_registry()
    peer: Identity = await world.source.authorize_peer(wallets.node.wallet)
    assert peer.app_id == world.chain.kms_app_id and peer.role == "peer"
    async with await Client.connect(world.address, signer=wallets.app1) as app1:
        await app1.derive("k")
        await world.admin.send(
            world.chain.nova_app_registry, nova.encode_call("updateInstanceStatus", 1, 1)
        )
        await enforced_within_one_poll(world, lambda: app1.derive("k"), "instance stopped")
    # The KMS node's own instance (id 3): stopping it removes it from KMSRegistry's operators.
    await world.admin.send(
        world.chain.nova_app_registry, nova.encode_call("updateInstanceStatus", 3, 2)
    )
    await enforced_within_one_poll(
        world, lambda: world.source.authorize_peer(wallets.node.wallet), "operator removed"
    )
    assert wallets.node.wallet not in (world.source.cache.operators or set())


async def test_new_instance_is_accepted_on_its_first_request(
    nursery: trio.Nursery, anvil: AnvilProcess, wallets: Wallets
) -> None:
    world = await start_world(nursery, anvil, wallets)
    # Unknown first (and remembered as unknown for a short while)…
    async with await Client.connect(world.address, signer=wallets.stranger) as stranger:
        with pytest.raises(Forbidden):
            await stranger.derive("k")
        await register_instance(
            world.admin, world.chain.nova_app_registry, 1, wallets.stranger.wallet, "https://x"
        )
        # …until the InstanceRegistered event clears that; no waiting for the negative TTL.
        with trio.fail_after(10):
            while True:
                try:
                    assert (await stranger.derive("k")).app_id == 1
                    break
                except Forbidden:
                    await trio.sleep(0.01)
    # A wallet registered before it ever asked is accepted on its very first request.
    await register_instance(
        world.admin,
        world.chain.nova_app_registry,
        2,
        wallets.deprecated_version.wallet,
        "https://y",
    )
    async with await Client.connect(world.address, signer=wallets.deprecated_version) as fresh:
        assert (await fresh.derive("k")).app_id == 2


async def test_concurrent_lookups_of_one_wallet_share_one_fetch(
    nursery: trio.Nursery, anvil: AnvilProcess, wallets: Wallets
) -> None:
    world = await start_world(nursery, anvil, wallets)
    calls = 0
    original = world.source.reader.instance_by_wallet

    async def counting(wallet: str) -> Any:
        nonlocal calls
        if wallet == wallets.app2.wallet:  # the node also looks up its peers' wallets
            calls += 1
        return await original(wallet)

    world.source.reader.instance_by_wallet = counting  # type: ignore[method-assign]
    results: list[Identity] = []

    async def one() -> None:
        results.append(await world.source.authorize_app(wallets.app2.wallet))

    async with trio.open_nursery() as group:
        for _ in range(20):
            group.start_soon(one)
    assert calls == 1 and len(results) == 20 and {r.app_id for r in results} == {2}


async def test_a_peer_authorized_while_the_operator_set_is_read_is_not_refused(
    nursery: trio.Nursery, anvil: AnvilProcess, wallets: Wallets
) -> None:
    """Two peers authorized at once on a cold cache: the second arrives when the operator set
    has been read and the KMS app id has not. It must wait for both, not be refused as "not the
    KMS app (not configured)" (seen in CI as a peer refused during a node's start)."""
    world = await start_world(nursery, anvil, wallets)
    reader = RegistryReader(
        client_of(anvil.url, 10),
        nova_app_registry=world.chain.nova_app_registry,
        kms_registry=world.chain.kms_registry,
    )
    reading, release = trio.Event(), trio.Event()
    original = reader.kms_app_id

    async def held() -> int:
        reading.set()
        await release.wait()
        return await original()

    reader.kms_app_id = held  # type: ignore[method-assign]
    source = ChainAuthorizationSource(reader, ChainSettings(poll_interval=POLL))
    outcomes: list[Identity | NovaKMSError] = []

    async def authorize() -> None:
        try:
            outcomes.append(await source.authorize_peer(wallets.node.wallet))
        except NovaKMSError as exc:
            outcomes.append(exc)

    async with trio.open_nursery() as group:
        group.start_soon(authorize)
        with trio.fail_after(10):
            await reading.wait()  # the operator set is read; the KMS app id is being read
        group.start_soon(authorize)
        await trio.testing.wait_all_tasks_blocked()
        release.set()
    assert len(outcomes) == 2
    for outcome in outcomes:
        assert isinstance(outcome, Identity), outcome
        assert outcome.role == "peer" and outcome.app_id == world.chain.kms_app_id


@pytest.fixture
async def proxied_world(
    nursery: trio.Nursery, anvil: AnvilProcess, wallets: Wallets
) -> AsyncIterator[tuple[World, Any]]:
    async with fault_proxy(anvil.url) as proxy:
        world = await start_world(
            nursery, anvil, wallets, rpc_url=proxy.url, ttl=3.0, negative_ttl=1.0
        )
        yield world, proxy


@pytest.mark.parametrize(
    "fault", [ProxyMode.REFUSE, ProxyMode.BLACKHOLE, ProxyMode.GARBAGE, ProxyMode.HTTP_ERROR]
)
async def test_rpc_outage_keeps_cached_identities_then_fails_closed_and_recovers(
    proxied_world: tuple[World, Any], wallets: Wallets, fault: ProxyMode
) -> None:
    world, proxy = proxied_world
    async with await Client.connect(world.address, signer=wallets.app1) as app1:
        await app1.derive("k")  # app1's records are now cached
        proxy.mode = fault
        # Cached and still valid: served without the chain.
        assert (await app1.derive("k")).app_id == 1
        # Never seen: the node cannot decide, and says so.
        async with await Client.connect(world.address, signer=wallets.app2) as app2:
            with pytest.raises(Unavailable) as info:
                await app2.derive("k")
            assert info.value.reason == "auth_source"
            status = await app2.call("status")
        with trio.fail_after(10):
            while world.source.last_error is None:
                await trio.sleep(0.05)
        # Past the backstop TTL, the cached identity fails closed too (never authorized blindly).
        with trio.fail_after(15):
            while True:
                try:
                    await app1.derive("k")
                except Unavailable:
                    break
                await trio.sleep(0.1)
        proxy.mode = ProxyMode.PASS
        with trio.fail_after(15):
            while True:
                try:
                    assert (await app1.derive("k")).app_id == 1
                    break
                except Unavailable:
                    await trio.sleep(0.05)
        with trio.fail_after(15):  # and the poller itself recovers
            while world.source.last_error is not None:
                await trio.sleep(0.05)
    assert status["auth"]["source"] == "chain"


async def test_status_and_nodes_report_chain_state(
    nursery: trio.Nursery, anvil: AnvilProcess, wallets: Wallets
) -> None:
    world = await start_world(nursery, anvil, wallets)
    async with await Client.connect(world.address) as kms:
        status = await kms.call("status")
        nodes = await kms.call("nodes")
    auth = status["auth"]
    assert auth["source"] == "chain" and auth["block_tag"] == "finalized"
    assert auth["last_block"] >= 1 and auth["lag_blocks"] == 0 and auth["error"] is None
    [entry] = nodes["nodes"]
    assert (
        entry["wallet"] == wallets.node.wallet
        and entry["status"] == "ACTIVE"
        and entry["zk_verified"] is True
    )
    assert entry["instance_id"] == 3
    # The registered URL, and the address a client dials for it.
    assert entry["instance_url"] == "http://127.0.0.1:1" and entry["address"] == "127.0.0.1:1"


async def test_garbage_registry_answers_are_unavailable_not_authorized(
    nursery: trio.Nursery, anvil: AnvilProcess, wallets: Wallets
) -> None:
    async with fault_proxy(anvil.url) as proxy:
        world = await start_world(nursery, anvil, wallets, rpc_url=proxy.url)
        # A syntactically valid JSON-RPC answer whose data is not a RuntimeInstance.
        proxy.override(
            "eth_call", lambda request: {"jsonrpc": "2.0", "id": request["id"], "result": "0x1234"}
        )
        with pytest.raises(NovaKMSError) as info:
            await world.source.authorize_app(wallets.app1.wallet)
        assert isinstance(info.value, Unavailable)
