"""Chain tests (real anvil, real sockets), and a tiny hand-assembled test contract.

The test contract (no compiler needed) behaves by the first calldata byte:

* empty calldata, or any other first byte: returns ``uint256(42)``;
* ``0xff``: reverts with ``Error("nope")``;
* ``0xee``: emits ``LOG2(topic0=PING_TOPIC, topic1=calldata[0:32], data=calldata)``.
"""

from __future__ import annotations

from typing import Any

import trio
from eth_abi.abi import encode as abi_encode

from novakms.chain.rpc import JsonRpcClient
from novakms.crypto.eth import keccak256

PING_TOPIC = keccak256(b"Ping(bytes32,bytes)")
NOPE_REVERT = bytes.fromhex("08c379a0") + abi_encode(["string"], ["nope"])
IDENTITY_PRECOMPILE = "0x0000000000000000000000000000000000000004"

_OPS = {
    "STOP": 0x00,
    "EQ": 0x14,
    "ISZERO": 0x15,
    "SHR": 0x1C,
    "CALLDATALOAD": 0x35,
    "CALLDATASIZE": 0x36,
    "CALLDATACOPY": 0x37,
    "CODECOPY": 0x39,
    "MSTORE": 0x52,
    "JUMPI": 0x57,
    "JUMPDEST": 0x5B,
    "DUP1": 0x80,
    "LOG2": 0xA2,
    "RETURN": 0xF3,
    "REVERT": 0xFD,
}


def assemble(program: list[Any]) -> bytes:
    """A two-pass assembler: opcode names, ``("push", value, size)``, ``("label", name)``,
    ``("ref", name)`` (PUSH2 of a label's offset) and raw ``bytes`` (data)."""

    def size(item: Any) -> int:
        if isinstance(item, str):
            return 1
        if isinstance(item, bytes):
            return len(item)
        if item[0] == "push":
            return 1 + int(item[2])
        return 0 if item[0] == "label" else 3

    labels: dict[str, int] = {}
    offset = 0
    for item in program:
        if isinstance(item, tuple) and item[0] == "label":
            labels[item[1]] = offset
        offset += size(item)
    code = bytearray()
    for item in program:
        if isinstance(item, str):
            code.append(_OPS[item])
        elif isinstance(item, bytes):
            code += item
        elif item[0] == "push":
            code.append(0x5F + item[2])
            code += int(item[1]).to_bytes(item[2], "big")
        elif item[0] == "ref":
            code.append(0x61)
            code += labels[item[1]].to_bytes(2, "big")
    return bytes(code)


def creation_code(runtime: bytes) -> bytes:
    """Init code that deploys ``runtime`` as is (15-byte prefix; appended data is ignored)."""
    n = len(runtime).to_bytes(2, "big")
    prefix = b"\x61" + n + b"\x61\x00\x0f" + b"\x60\x00\x39" + b"\x61" + n + b"\x60\x00\xf3"
    assert len(prefix) == 15
    return prefix + runtime


TEST_RUNTIME = assemble(
    [
        "CALLDATASIZE",
        "ISZERO",
        ("ref", "ret"),
        "JUMPI",
        ("push", 0, 1),
        "CALLDATALOAD",
        ("push", 0xF8, 1),
        "SHR",
        "DUP1",
        ("push", 0xFF, 1),
        "EQ",
        ("ref", "revert"),
        "JUMPI",
        ("push", 0xEE, 1),
        "EQ",
        ("ref", "emit"),
        "JUMPI",
        ("label", "ret"),
        "JUMPDEST",
        ("push", 42, 1),
        ("push", 0, 1),
        "MSTORE",
        ("push", 32, 1),
        ("push", 0, 1),
        "RETURN",
        ("label", "revert"),
        "JUMPDEST",
        ("push", len(NOPE_REVERT), 1),
        ("ref", "data"),
        ("push", 0, 1),
        "CODECOPY",
        ("push", len(NOPE_REVERT), 1),
        ("push", 0, 1),
        "REVERT",
        ("label", "emit"),
        "JUMPDEST",
        "CALLDATASIZE",
        ("push", 0, 1),
        ("push", 0, 1),
        "CALLDATACOPY",
        ("push", 0, 1),
        "CALLDATALOAD",
        ("push", int.from_bytes(PING_TOPIC, "big"), 32),
        "CALLDATASIZE",
        ("push", 0, 1),
        "LOG2",
        "STOP",
        ("label", "data"),
        NOPE_REVERT,
    ]
)
TEST_CONTRACT = creation_code(TEST_RUNTIME)
FORTY_TWO = (42).to_bytes(32, "big")


async def wait_receipt(rpc: JsonRpcClient, tx_hash: str) -> dict[str, Any]:
    """Poll until the transaction is mined (anvil automines: normally at once)."""
    with trio.fail_after(5):
        while True:
            receipt = await rpc.call("eth_getTransactionReceipt", [tx_hash])
            if receipt is not None:
                assert isinstance(receipt, dict)
                return receipt
            await trio.sleep(0.01)


async def send_unsigned(
    rpc: JsonRpcClient, sender: str, to: str | None, data: bytes = b"", value: int = 0
) -> dict[str, Any]:
    """Send through anvil's unlocked dev accounts (``eth_sendTransaction``); the receipt."""
    tx: dict[str, str] = {"from": sender, "data": "0x" + data.hex(), "value": hex(value)}
    if to is not None:
        tx["to"] = to
    tx_hash = await rpc.call("eth_sendTransaction", [tx])
    return await wait_receipt(rpc, tx_hash)


async def deploy_unsigned(rpc: JsonRpcClient, sender: str, code: bytes = TEST_CONTRACT) -> str:
    """Deploy through an unlocked dev account; the contract address (lowercase)."""
    receipt = await send_unsigned(rpc, sender, None, code)
    assert receipt["status"] == "0x1", receipt
    return str(receipt["contractAddress"]).lower()
