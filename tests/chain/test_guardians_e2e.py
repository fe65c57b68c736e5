"""The guardian set on a real anvil: KMSRegistry's rules, RegistryReader, and the chain source
(first read at the block tag, then kept current by the events the poller applies)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import trio
from eth_abi.abi import encode as abi_encode

from novakms.admin.tx import TxSender
from novakms.auth.guardians import GuardianSet, no_guardians
from novakms.chain import abi
from novakms.chain.registry import RegistryReader
from novakms.chain.rpc import JsonRpcClient
from novakms.chain.source import ChainAuthorizationSource, ChainSettings
from novakms.crypto.eth import keccak256
from novakms.dev.anvil import AnvilProcess
from novakms.dev.world import clear_guardians, deploy_registries, set_guardians
from novakms.errors import ChainUnavailable, TransactionFailed, Unavailable
from tests.chain.faultproxy import fault_proxy

POLL = 0.2
W1, W2, W3 = ("0x" + c * 40 for c in "abc")
K1, K2, K3 = (bytes([i]) * 32 for i in (1, 2, 3))


def selector(signature: str) -> bytes:
    return keccak256(signature.encode())[:4]


async def until(predicate: Callable[[], Any], seconds: float = 20) -> None:
    """Wait for a condition (a liveness bound, never a speed check)."""
    with trio.fail_after(seconds):
        while not await predicate():
            await trio.sleep(0.02)


class Chain:
    def __init__(self, anvil: AnvilProcess, rpc: JsonRpcClient) -> None:
        self.anvil = anvil
        self.rpc = rpc
        self.owner = TxSender(rpc, anvil.private_keys[0])
        self.nova = ""
        self.kms = ""

    def reader(self, rpc: JsonRpcClient | None = None, block_tag: str = "finalized") -> Any:
        return RegistryReader(
            rpc or self.rpc,
            nova_app_registry=self.nova,
            kms_registry=self.kms,
            block_tag=block_tag,
        )

    async def is_guardian(self, wallet: str) -> bool:
        kms = abi.kms_registry()
        data = await self.rpc.eth_call(self.kms, kms.encode_call("isGuardian", wallet), "latest")
        return bool(kms.decode_result("isGuardian", data)[0])


@pytest.fixture
async def chain(anvil: AnvilProcess, rpc: JsonRpcClient) -> Chain:
    world = Chain(anvil, rpc)
    world.nova, world.kms = await deploy_registries(world.owner)
    return world


async def test_set_replace_clear_read_back(chain: Chain) -> None:
    reader = chain.reader()
    assert await reader.guardians() == no_guardians(0)
    checksummed = "0x" + "AbCd" * 10
    receipt = await set_guardians(chain.owner, chain.kms, [W1, checksummed, W3], [K1, K2, K3], 2)
    assert receipt["status"] == "0x1"
    first = await reader.guardians()
    assert first == GuardianSet(
        wallets=(W1, "0x" + "abcd" * 10, W3), enc_keys=(K1, K2, K3), threshold=2, version=1
    )
    assert await chain.is_guardian(W3) and not await chain.is_guardian(W2)

    await set_guardians(chain.owner, chain.kms, [W2], [K3], 1)
    assert await reader.guardians() == GuardianSet(
        wallets=(W2,), enc_keys=(K3,), threshold=1, version=2
    )
    assert await chain.is_guardian(W2) and not await chain.is_guardian(W1)

    await clear_guardians(chain.owner, chain.kms)
    assert await reader.guardians() == no_guardians(3)
    assert not await chain.is_guardian(W2)
    await set_guardians(chain.owner, chain.kms, [W1, W2], [K1, K2], 2)
    assert (await reader.guardians()).version == 4


async def test_the_reader_reads_at_its_block_tag(
    start_anvil: Callable[..., AnvilProcess],
) -> None:
    node = start_anvil(slots_in_an_epoch=1)  # finalized = latest - 2
    async with node.rpc() as rpc:
        chain = Chain(node, rpc)
        chain.nova, chain.kms = await deploy_registries(chain.owner)
        await rpc.call("anvil_mine", ["0x2"])  # the registries are finalized
        await set_guardians(chain.owner, chain.kms, [W1], [K1], 1)
        assert (await chain.reader(block_tag="latest").guardians()).version == 1
        assert await chain.reader(block_tag="finalized").guardians() == no_guardians(0)
        await rpc.call("anvil_mine", ["0x2"])
        assert (await chain.reader(block_tag="finalized").guardians()).version == 1


@pytest.mark.parametrize(
    ("wallets", "keys", "threshold", "error"),
    [
        ([W1, W2], [K1], 1, ("GuardianLengthMismatch(uint256,uint256)", [2, 1])),
        ([], [], 0, ("GuardianCountOutOfRange(uint256,uint256)", [0, 16])),
        (
            ["0x" + f"{i + 1:040x}" for i in range(17)],
            [K1] * 17,
            1,
            ("GuardianCountOutOfRange(uint256,uint256)", [17, 16]),
        ),
        ([W1, W2], [K1, K2], 0, ("ThresholdOutOfRange(uint8,uint256)", [0, 2])),
        ([W1, W2], [K1, K2], 3, ("ThresholdOutOfRange(uint8,uint256)", [3, 2])),
        ([W1, "0x" + "00" * 20], [K1, K2], 1, ("ZeroGuardianWallet(uint256)", [1])),
        ([W1, W2], [bytes(32), K2], 1, ("ZeroGuardianEncKey(uint256)", [0])),
        ([W1, W2, W1], [K1, K2, K3], 1, ("DuplicateGuardian(address)", [W1])),
    ],
)
async def test_the_contract_refuses_bad_sets(
    chain: Chain, wallets: list[str], keys: list[bytes], threshold: int, error: tuple[str, Any]
) -> None:
    await set_guardians(chain.owner, chain.kms, [W3], [K3], 1)
    signature, values = error
    types = signature[signature.index("(") + 1 : -1].split(",")
    with pytest.raises(TransactionFailed) as info:
        await set_guardians(chain.owner, chain.kms, wallets, keys, threshold)
    assert info.value.revert_data == selector(signature) + abi_encode(types, values)
    assert (await chain.reader().guardians()).wallets == (W3,)  # unchanged, same version
    assert (await chain.reader().guardians()).version == 1


async def test_only_the_owner_sets_or_clears(chain: Chain) -> None:
    stranger = TxSender(chain.rpc, chain.anvil.private_keys[1])
    for attempt in (
        set_guardians(stranger, chain.kms, [W1], [K1], 1),
        clear_guardians(stranger, chain.kms),
    ):
        with pytest.raises(TransactionFailed) as info:
            await attempt
        assert info.value.revert_data == selector("NotOwner()")
    assert await chain.reader().guardians() == no_guardians(0)


@pytest.fixture
async def polling(
    nursery: trio.Nursery, chain: Chain
) -> AsyncIterator[tuple[ChainAuthorizationSource, list[int]]]:
    """A polling chain source; the list counts its reader's ``guardians()`` reads."""
    async with JsonRpcClient(chain.anvil.url, timeout=5.0) as rpc:
        reader = chain.reader(rpc)
        reads = [0]
        original = reader.guardians

        async def counting() -> GuardianSet:
            reads[0] += 1
            result: GuardianSet = await original()
            return result

        reader.guardians = counting
        source = ChainAuthorizationSource(reader, ChainSettings(poll_interval=POLL))
        nursery.start_soon(source.run)
        with trio.fail_after(10):
            await source.ready.wait()
        yield source, reads
        nursery.cancel_scope.cancel()


async def test_the_chain_source_reads_once_then_follows_the_events(
    chain: Chain, polling: tuple[ChainAuthorizationSource, list[int]]
) -> None:
    source, reads = polling
    assert source.describe()["guardian_set_version"] is None  # not read yet
    async with trio.open_nursery() as group:  # concurrent first uses share one read
        for _ in range(10):
            group.start_soon(source.guardian_set)
    assert reads == [1]
    assert await source.guardian_set() == no_guardians(0)
    assert source.describe()["guardian_set_version"] == 0

    await set_guardians(chain.owner, chain.kms, [W1, W2, W3], [K1, K2, K3], 2)

    async def version_is(v: int) -> bool:
        return (await source.guardian_set()).version == v

    await until(lambda: version_is(1))
    assert await source.guardian_set() == await chain.reader().guardians()
    assert source.describe()["guardian_set_version"] == 1

    await set_guardians(chain.owner, chain.kms, [W3], [K1], 1)
    await until(lambda: version_is(2))
    assert (await source.guardian_set()).wallets == (W3,)

    await clear_guardians(chain.owner, chain.kms)
    await until(lambda: version_is(3))
    assert await source.guardian_set() == no_guardians(3)
    assert reads == [1], "refreshes came from the events, not from re-reading the chain"


async def test_events_before_the_first_read_fill_the_cache(
    chain: Chain, polling: tuple[ChainAuthorizationSource, list[int]]
) -> None:
    source, reads = polling
    await set_guardians(chain.owner, chain.kms, [W2], [K2], 1)

    async def announced() -> bool:
        return source.describe()["guardian_set_version"] == 1

    await until(announced)
    assert await source.guardian_set() == GuardianSet(
        wallets=(W2,), enc_keys=(K2,), threshold=1, version=1
    )
    assert reads == [0]


def _answer(result: bytes) -> Callable[[Any], Any]:
    def answer(request: Any) -> Any:
        return {"jsonrpc": "2.0", "id": request["id"], "result": "0x" + result.hex()}

    return answer


@pytest.mark.parametrize(
    "returned",
    [
        b"\x12\x34",  # not ABI at all
        # decodes, but as a set the contract could never hold
        abi_encode(["address[]", "bytes32[]", "uint8", "uint256"], [[W1, W2], [K1], 1, 1]),
        abi_encode(["address[]", "bytes32[]", "uint8", "uint256"], [[W1, W2], [K1, K2], 3, 1]),
        abi_encode(["address[]", "bytes32[]", "uint8", "uint256"], [[W1, W1], [K1, K2], 1, 1]),
        abi_encode(["address[]", "bytes32[]", "uint8", "uint256"], [[W1], [bytes(32)], 1, 1]),
        abi_encode(["address[]", "bytes32[]", "uint8", "uint256"], [[W1], [K1], 1, 0]),
        abi_encode(["address[]", "bytes32[]", "uint8", "uint256"], [[], [], 1, 4]),
    ],
)
async def test_an_invalid_guardians_answer_is_unavailable(chain: Chain, returned: bytes) -> None:
    async with fault_proxy(chain.anvil.url) as proxy, JsonRpcClient(proxy.url) as rpc:
        proxy.override("eth_call", _answer(returned))
        with pytest.raises(ChainUnavailable):
            await chain.reader(rpc).guardians()
        source = ChainAuthorizationSource(chain.reader(rpc))
        with pytest.raises(Unavailable) as info:
            await source.guardian_set()
        assert info.value.reason == "auth_source"
        assert source.cache.guardians is None  # nothing cached from a bad answer


async def test_a_malformed_guardians_event_fails_the_poll_typed(chain: Chain) -> None:
    kms = abi.kms_registry()
    [topic] = kms.topics("GuardiansSet")
    log = {
        "address": chain.kms,
        "topics": ["0x" + topic.hex(), "0x" + (1).to_bytes(32, "big").hex()],
        "data": "0x"
        + abi_encode(["address[]", "bytes32[]", "uint8"], [[W1, W1], [K1, K2], 1]).hex(),
        "blockNumber": "0x1",
        "blockHash": "0x" + "11" * 32,
        "transactionHash": "0x" + "22" * 32,
        "transactionIndex": "0x0",
        "logIndex": "0x0",
    }
    async with fault_proxy(chain.anvil.url) as proxy, JsonRpcClient(proxy.url) as rpc:
        proxy.override(
            "eth_getLogs", lambda request: {"jsonrpc": "2.0", "id": request["id"], "result": [log]}
        )
        with pytest.raises(ChainUnavailable, match="duplicate guardian"):
            await chain.reader(rpc).events(1, 1)
        # the poller: a typed chain error (reported, retried), nothing applied or skipped
        source = ChainAuthorizationSource(chain.reader(rpc))
        source.last_block = 0
        with pytest.raises(ChainUnavailable):
            await source.poll_once()
        assert source.last_block == 0 and source.cache.guardians is None
