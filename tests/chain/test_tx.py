"""TxSender against a real anvil (and, for the fee fallback, through the fault proxy)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import trio
from eth_abi.abi import encode as abi_encode

from novakms.admin.tx import TxSender, decode_revert_reason
from novakms.chain.rpc import JsonRpcClient, parse_quantity
from novakms.dev.anvil import AnvilProcess
from novakms.errors import ChainError, RpcError, TransactionFailed, TransactionTimeout
from tests.chain import FORTY_TWO, NOPE_REVERT, TEST_CONTRACT
from tests.chain.faultproxy import fault_proxy

StartAnvil = Callable[..., AnvilProcess]


async def tx_by_hash(rpc: JsonRpcClient, tx_hash: str) -> dict[str, Any]:
    tx = await rpc.call("eth_getTransactionByHash", [tx_hash])
    assert isinstance(tx, dict)
    return tx


def test_address_and_repr_hide_the_key(anvil: AnvilProcess) -> None:
    rpc = JsonRpcClient(anvil.url)
    key = anvil.private_keys[3]
    sender = TxSender(rpc, key)
    assert sender.address == anvil.accounts[3]
    assert key.hex() not in repr(sender)
    with pytest.raises(ValueError, match="invalid private key") as caught:
        TxSender(rpc, b"\x00" * 32)
    assert "00" * 32 not in str(caught.value)
    with pytest.raises(ValueError):
        TxSender(rpc, b"\x01" * 31)


async def test_value_transfer(anvil: AnvilProcess, rpc: JsonRpcClient) -> None:
    sender = TxSender(rpc, anvil.private_keys[1])
    recipient = "0x" + "42" * 20
    receipt = await sender.send(recipient, b"", value=12345)
    assert receipt["status"] == "0x1" and receipt["to"] == recipient
    assert await rpc.get_balance(recipient, "latest") == 12345
    tx = await tx_by_hash(rpc, receipt["transactionHash"])
    assert tx["type"] == "0x2" and tx["from"] == sender.address
    assert int(tx["gas"], 16) == 21000 * 6 // 5  # estimated, plus 20 %


async def test_deploy_and_call(anvil: AnvilProcess, rpc: JsonRpcClient) -> None:
    sender = TxSender(rpc, anvil.private_keys[0])
    address = await sender.deploy(TEST_CONTRACT)
    assert address == address.lower() and len(address) == 42
    assert await rpc.eth_call(address, b"") == FORTY_TWO
    # Constructor arguments are appended to the creation code.
    args = abi_encode(["uint256"], [7])
    second = await sender.deploy(TEST_CONTRACT, args)
    assert second != address
    assert await rpc.eth_call(second, b"") == FORTY_TWO
    creation = await rpc.call("eth_getTransactionByBlockNumberAndIndex", ["latest", "0x0"])
    assert creation["input"] == "0x" + (TEST_CONTRACT + args).hex()
    # A call that emits a log returns its receipt with the log.
    receipt = await sender.send(address, b"\xee" + b"\x05" * 31)
    assert len(receipt["logs"]) == 1 and receipt["logs"][0]["address"] == address


async def test_revert_at_estimation(anvil: AnvilProcess, rpc: JsonRpcClient) -> None:
    sender = TxSender(rpc, anvil.private_keys[0])
    contract = await sender.deploy(TEST_CONTRACT)
    before = await rpc.block_number()
    with pytest.raises(TransactionFailed) as caught:
        await sender.send(contract, b"\xff")
    error = caught.value
    assert error.tx_hash is None and error.receipt is None
    assert error.revert_data == NOPE_REVERT and error.reason == "nope"
    assert "would revert: nope" in str(error)
    assert isinstance(error, ChainError)
    assert await rpc.block_number() == before  # nothing was sent
    # The nonce was not consumed.
    receipt = await sender.send(contract, b"\x01")
    assert (await tx_by_hash(rpc, receipt["transactionHash"]))["nonce"] == "0x1"


async def test_mined_revert_raises_with_revert_data(
    anvil: AnvilProcess, rpc: JsonRpcClient
) -> None:
    sender = TxSender(rpc, anvil.private_keys[0])
    contract = await sender.deploy(TEST_CONTRACT)
    with pytest.raises(TransactionFailed) as caught:
        await sender.send(contract, b"\xff", gas=100_000)  # no estimate: it is mined
    error = caught.value
    assert error.tx_hash is not None and error.receipt is not None
    assert error.receipt["status"] == "0x0"
    assert error.revert_data == NOPE_REVERT and error.reason == "nope"
    assert error.tx_hash in str(error) and "nope" in str(error)
    # A failed transaction still uses its nonce: the next one follows it.
    receipt = await sender.send(contract, b"")
    assert (await tx_by_hash(rpc, receipt["transactionHash"]))["nonce"] == "0x2"


async def test_out_of_gas_has_no_revert_data(anvil: AnvilProcess, rpc: JsonRpcClient) -> None:
    sender = TxSender(rpc, anvil.private_keys[0])
    contract = await sender.deploy(TEST_CONTRACT)
    with pytest.raises(TransactionFailed) as caught:
        await sender.send(contract, b"\xee" + b"\x00" * 31, gas=21_700)
    assert caught.value.receipt is not None and caught.value.reason is None
    assert "no reason given" in str(caught.value)


async def test_nonces_advance_over_several_sends(anvil: AnvilProcess, rpc: JsonRpcClient) -> None:
    sender = TxSender(rpc, anvil.private_keys[2])
    hashes = []
    for i in range(5):
        receipt = await sender.send(anvil.accounts[3], b"", value=i + 1)
        hashes.append(receipt["transactionHash"])
    nonces = [parse_quantity((await tx_by_hash(rpc, h))["nonce"], what="n") for h in hashes]
    assert nonces == [0, 1, 2, 3, 4]
    count = await rpc.call("eth_getTransactionCount", [sender.address, "latest"])
    assert count == "0x5"


async def test_concurrent_sends_get_distinct_nonces(
    anvil: AnvilProcess, rpc: JsonRpcClient
) -> None:
    sender = TxSender(rpc, anvil.private_keys[4])
    receipts: list[dict[str, Any]] = []

    async def one(value: int) -> None:
        receipts.append(await sender.send(anvil.accounts[5], b"", value=value))

    async with trio.open_nursery() as nursery:
        for value in range(1, 7):
            nursery.start_soon(one, value)
    nonces = sorted(
        [
            parse_quantity((await tx_by_hash(rpc, r["transactionHash"]))["nonce"], what="n")
            for r in receipts
        ]
    )
    assert nonces == list(range(6))


async def test_stale_nonce_recovers_on_the_next_send(
    anvil: AnvilProcess, rpc: JsonRpcClient
) -> None:
    key = anvil.private_keys[6]
    first, second = TxSender(rpc, key), TxSender(rpc, key)
    await first.send(anvil.accounts[0], b"", value=1)
    await second.send(anvil.accounts[0], b"", value=1)  # first's tracked nonce is now stale
    with pytest.raises(RpcError, match="nonce"):
        await first.send(anvil.accounts[0], b"", value=1, gas=21_000)
    await first.send(anvil.accounts[0], b"", value=1)  # re-read from the node
    assert await rpc.call("eth_getTransactionCount", [first.address, "latest"]) == "0x3"


async def test_legacy_fees_without_fee_history(anvil: AnvilProcess) -> None:
    async with fault_proxy(anvil.url) as proxy:
        proxy.override(
            "eth_feeHistory",
            lambda request: {
                "jsonrpc": "2.0",
                "id": request["id"],
                "error": {"code": -32601, "message": "Method not found"},
            },
        )
        async with JsonRpcClient(proxy.url) as rpc:
            sender = TxSender(rpc, anvil.private_keys[7], chain_id=31337)
            receipt = await sender.send(anvil.accounts[0], b"", value=5)
            tx = await tx_by_hash(rpc, receipt["transactionHash"])
    assert tx["type"] == "0x0" and int(tx["gasPrice"], 16) > 0


async def test_receipt_timeout(start_anvil: StartAnvil) -> None:
    node = start_anvil(extra_args=["--no-mining"])
    async with node.rpc() as rpc:
        sender = TxSender(rpc, node.private_keys[0], receipt_timeout=0.3, poll_interval=0.05)
        start = trio.current_time()
        with pytest.raises(TransactionTimeout) as caught:
            await sender.send(node.accounts[1], b"", value=1)
        assert 0.3 <= trio.current_time() - start < 1.0
        tx_hash = caught.value.tx_hash
        assert tx_hash in str(caught.value)
        # Once mined, the transaction is there and the nonce moved on.
        await rpc.call("evm_mine", [])
        receipt = await rpc.call("eth_getTransactionReceipt", [tx_hash])
        assert receipt["status"] == "0x1"


async def test_send_validates_arguments(anvil: AnvilProcess, rpc: JsonRpcClient) -> None:
    sender = TxSender(rpc, anvil.private_keys[0])
    with pytest.raises(ValueError):
        await sender.send("0x1234", b"")
    with pytest.raises(ValueError):
        await sender.send(anvil.accounts[1], b"", value=-1)


def test_decode_revert_reason() -> None:
    assert decode_revert_reason(NOPE_REVERT) == "nope"
    panic = bytes.fromhex("4e487b71") + abi_encode(["uint256"], [0x11])
    assert decode_revert_reason(panic) == "panic 0x11"
    assert decode_revert_reason(bytes.fromhex("deadbeef")) == "custom error 0xdeadbeef"
    assert decode_revert_reason(bytes.fromhex("08c379a0") + b"\x00" * 5) == (
        "custom error 0x08c379a0"
    )
    assert decode_revert_reason(b"") is None
    assert decode_revert_reason(b"\x01\x02") is None
