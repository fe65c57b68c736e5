"""A transaction signed by a named key through ``sign --digest`` is accepted by anvil."""

from __future__ import annotations

from typing import Any

import trio
from Crypto.Hash import keccak

from novakms.chain.rpc import JsonRpcClient
from novakms.client.aio import Client
from tests.harness.registry import Wallets


def rlp(item: bytes | int | list[Any]) -> bytes:
    """Recursive-length-prefix encoding (the Ethereum yellow paper, appendix B)."""
    if isinstance(item, int):
        item = item.to_bytes((item.bit_length() + 7) // 8, "big")
    if isinstance(item, bytes):
        if len(item) == 1 and item[0] < 0x80:
            return item
        return _length(len(item), 0x80) + item
    payload = b"".join(rlp(part) for part in item)
    return _length(len(payload), 0xC0) + payload


def _length(size: int, offset: int) -> bytes:
    if size < 56:
        return bytes([offset + size])
    encoded = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([offset + 55 + len(encoded)]) + encoded


def keccak256(data: bytes) -> bytes:
    return keccak.new(digest_bits=256, data=data).digest()


async def test_an_eip1559_transaction_signed_by_digest_is_accepted_by_anvil(
    start_server: Any, wallets: Wallets, rpc: JsonRpcClient
) -> None:
    srv = await start_server()
    async with await Client.connect(srv.tcp, signer=wallets.app1) as kms:
        sender = (await kms.keys_public("wallet", "secp256k1")).address
        assert sender is not None
        await rpc.call("anvil_setBalance", [sender, hex(10**18)])
        recipient = bytes.fromhex("22" * 20)
        fields: list[Any] = [
            await rpc.chain_id(),
            0,  # nonce
            10**9,  # max priority fee per gas
            100 * 10**9,  # max fee per gas
            21_000,
            recipient,
            12_345,  # value, wei
            b"",  # data
            [],  # access list
        ]
        digest = keccak256(b"\x02" + rlp(fields))
        signed = await kms.sign("wallet", "secp256k1", digest=digest)
    signature = signed.signature
    y_parity, r, s = signature[64] - 27, signature[:32], signature[32:64]
    raw = b"\x02" + rlp([*fields, y_parity, int.from_bytes(r), int.from_bytes(s)])
    tx_hash = await rpc.call("eth_sendRawTransaction", ["0x" + raw.hex()])
    with trio.fail_after(10):  # mined at once, its receipt ready a moment later
        while (receipt := await rpc.call("eth_getTransactionReceipt", [tx_hash])) is None:
            await trio.sleep(0.05)
    assert receipt["status"] == "0x1"
    assert receipt["from"].lower() == sender
    balance = await rpc.get_balance("0x" + recipient.hex(), "latest")
    assert balance == 12_345
