"""``novakms admin`` against a real anvil, in process through ``novakms.cli.main.main``: a
registry's refusal is decoded by name and reported with the code it means (exit 1), and a call
to an address without code is refused before anything is sent. Also the revert decoder of
:mod:`novakms.chain.abi` and the refusal table of :mod:`novakms.admin.refusals`."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
from eth_abi.abi import encode as abi_encode

from novakms.admin.refusals import REVERT_CODES, refusal_error
from novakms.admin.tx import TxSender, decode_revert_reason
from novakms.chain import abi
from novakms.chain.rpc import JsonRpcClient
from novakms.cli.main import main
from novakms.crypto.eth import keccak256
from novakms.dev.anvil import AnvilProcess
from novakms.dev.world import deploy_registries
from novakms.errors import (
    BadRequest,
    ChainError,
    Conflict,
    Forbidden,
    NotFound,
    TransactionFailed,
)

_CONTRACTS = Path(__file__).resolve().parents[2] / "contracts" / "src"
EMPTY = "0x" + "12" * 20  # no code on a fresh anvil
WALLET = "0x" + "Ab" * 20


def revert(signature: str, types: list[str], values: list[Any]) -> bytes:
    return keccak256(signature.encode())[:4] + abi_encode(types, values)


# -- the decoder (pure) -------------------------------------------------------------------------


def test_decode_revert_names_custom_errors_of_every_packaged_abi() -> None:
    decoded = abi.decode_revert(
        revert("InvalidStatusTransition(uint8,uint8)", ["uint8"] * 2, [2, 1])
    )
    assert decoded is not None
    assert (decoded.name, decoded.args, decoded.contracts) == (
        "InvalidStatusTransition",
        (2, 1),
        ("DevNovaAppRegistry",),
    )
    assert decoded.signature == "InvalidStatusTransition(uint8,uint8)" and decoded.is_custom
    assert str(decoded) == "InvalidStatusTransition(2, 1)"
    assert keccak256(decoded.signature.encode())[:4].hex() == "e3962ba3"

    wallet = abi.decode_revert(
        revert("WalletAlreadyRegistered(address,uint256)", ["address", "uint256"], [WALLET, 3])
    )
    assert wallet is not None and wallet.args == (WALLET.lower(), 3)
    assert str(wallet) == f"WalletAlreadyRegistered({WALLET.lower()}, 3)"

    mismatch = abi.decode_revert(
        revert(
            "CodeMeasurementMismatch(bytes32,bytes32)",
            ["bytes32"] * 2,
            [b"\x01" * 32, b"\x02" * 32],
        )
    )
    assert mismatch is not None and mismatch.args == (b"\x01" * 32, b"\x02" * 32)
    assert str(mismatch) == f"CodeMeasurementMismatch(0x{'01' * 32}, 0x{'02' * 32})"

    owner = abi.decode_revert(revert("NotOwner()", [], []))
    assert owner is not None and str(owner) == "NotOwner()" and owner.contracts == ("KMSRegistry",)
    shared = abi.decode_revert(revert("ZeroAddress()", [], []))
    assert shared is not None and set(shared.contracts) == {"KMSRegistry", "DevNovaAppRegistry"}


def test_decode_revert_handles_error_and_panic_and_refuses_garbage() -> None:
    error = abi.decode_revert(revert("Error(string)", ["string"], ['say "no"']))
    assert error is not None and (error.name, error.args, error.is_custom) == (
        "Error",
        ('say "no"',),
        False,
    )
    assert str(error) == 'Error("say \\"no\\"")'
    panic = abi.decode_revert(revert("Panic(uint256)", ["uint256"], [0x11]))
    assert panic is not None and (panic.name, panic.args) == ("Panic", (0x11,))
    assert str(panic) == "Panic(17)"

    assert abi.decode_revert(None) is None
    assert abi.decode_revert(b"") is None
    assert abi.decode_revert(b"\x08\xc3\x79") is None
    assert abi.decode_revert(bytes.fromhex("deadbeef")) is None  # no packaged ABI declares it
    assert abi.decode_revert(keccak256(b"DuplicateGuardian(address)")[:4]) is None  # no argument
    assert abi.decode_revert(bytes.fromhex("08c379a0") + b"\x00" * 5) is None

    # TxSender's reasons come from the same decoder.
    data = revert("InvalidStatusTransition(uint8,uint8)", ["uint8"] * 2, [0, 0])
    assert decode_revert_reason(data) == "InvalidStatusTransition(0, 0)"
    assert decode_revert_reason(revert("Error(string)", ["string"], ["nope"])) == "nope"
    assert decode_revert_reason(revert("Panic(uint256)", ["uint256"], [1])) == "panic 0x01"
    assert decode_revert_reason(bytes.fromhex("deadbeef")) == "custom error 0xdeadbeef"


def test_every_contract_error_is_mapped_explicitly() -> None:
    packaged = {
        name
        for contract in (abi.kms_registry(), abi.nova_app_registry())
        for name, _ in contract.errors.values()
    }
    declared = {
        m.group(1)
        for source in _CONTRACTS.glob("*.sol")
        for m in re.finditer(r"^\s*error\s+(\w+)\s*\(", source.read_text(), re.MULTILINE)
    }
    assert packaged == declared  # the artifacts are those of the sources
    assert set(REVERT_CODES) == packaged


def test_refusal_error_keeps_the_code_the_error_means() -> None:
    def failed(data: bytes | None, tx_hash: str | None = None) -> TransactionFailed:
        return TransactionFailed("it reverted", tx_hash=tx_hash, revert_data=data)

    mined = refusal_error(failed(revert("NotOwner()", [], []), "0x" + "ab" * 32))
    assert isinstance(mined, Forbidden) and mined.code == "forbidden"
    assert mined.details == {"revert": "NotOwner()", "tx": "0x" + "ab" * 32}
    for signature, cls in (
        ("KmsAppIdAlreadySet()", Conflict),
        ("DuplicateGuardian(address)", Conflict),
        ("AppNotFound(uint256)", NotFound),
        ("ZeroHash()", BadRequest),
    ):
        name, _, rest = signature.partition("(")
        types = [t for t in rest.rstrip(")").split(",") if t]
        values = [WALLET if t == "address" else 1 for t in types]
        assert type(refusal_error(failed(revert(signature, types, values)))) is cls, signature
    # Solidity's own errors and the gas-bound error stay unavailable, still named.
    for data in (
        revert("Error(string)", ["string"], ["nope"]),
        revert("Panic(uint256)", ["uint256"], [1]),
        revert("InsufficientGasForCallback()", [], []),
    ):
        error = refusal_error(failed(data))
        assert (
            type(error) is ChainError and error.code == "unavailable" and "revert" in error.details
        )
    unknown = failed(bytes.fromhex("deadbeef"))
    assert refusal_error(unknown) is unknown
    assert refusal_error(failed(None)).code == "unavailable"


# -- the CLI on a real chain --------------------------------------------------------------------


@dataclass
class World:
    anvil: AnvilProcess
    owner_key: Path
    stranger_key: Path
    nova: str
    kms: str

    def admin(self, key: Path | None = None) -> list[str]:
        return ["admin", "--rpc", self.anvil.url, "--key", str(key or self.owner_key)]

    def nonce(self, index: int = 0) -> tuple[int, int]:
        """The account's transaction count at ``latest`` and ``pending``."""

        async def read() -> tuple[int, int]:
            async with JsonRpcClient(self.anvil.url, timeout=5.0) as rpc:
                account = self.anvil.accounts[index]
                counts = [
                    await rpc.call("eth_getTransactionCount", [account, tag])
                    for tag in ("latest", "pending")
                ]
            return int(counts[0], 16), int(counts[1], 16)

        return trio.run(read)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """main() installs its own root handler (on the captured stderr): put pytest's back."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def world(anvil: AnvilProcess, tmp_path: Path, restore_logging: None) -> World:
    owner_key = tmp_path / "owner.key"
    owner_key.write_text("0x" + anvil.private_keys[0].hex())
    stranger_key = tmp_path / "stranger.key"
    stranger_key.write_text("0x" + anvil.private_keys[1].hex())

    async def deploy() -> tuple[str, str]:
        async with JsonRpcClient(anvil.url, timeout=5.0) as rpc:
            sender = TxSender(rpc, anvil.private_keys[0])
            nova, kms = await deploy_registries(sender)
            call = abi.nova_app_registry().encode_call(
                "createApp", b"\x00" * 32, "0x" + "11" * 20, "https://example.invalid/app"
            )
            await sender.send(nova, call)  # app 1, ACTIVE, owned by account 0
            return nova, kms

    nova, kms = trio.run(deploy)
    return World(anvil, owner_key, stranger_key, nova, kms)


Run = Callable[..., tuple[int, dict[str, Any]]]


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    """``novakms ARGS`` in process: (exit code, the JSON line it printed)."""

    def run(*args: str) -> tuple[int, dict[str, Any]]:
        capsys.readouterr()
        try:
            code = main(list(args))
        except SystemExit as exit_:
            code = int(exit_.code or 0)
        out = capsys.readouterr()
        lines = out.out.strip().splitlines()
        assert len(lines) == 1, out
        assert "Traceback" not in out.err
        result: dict[str, Any] = json.loads(lines[0])
        return code, result

    return run


def test_a_refusal_is_named_and_mapped_to_its_code(world: World, run: Run) -> None:
    nova, kms = ["--registry", world.nova], ["--kms-registry", world.kms]
    code, out = run(*world.admin(), "set-app-id", *kms, "--app-id", "5")
    assert code == 0 and set(out) == {"tx", "block"}, out
    before = world.nonce(0), world.nonce(1)

    cases = [
        # ACTIVE -> ACTIVE: the selector 0xe3962ba3, decoded with its arguments
        (world.admin(), ["app-status", *nova, "--app-id", "1", "--status", "ACTIVE"],
         "bad_request", "InvalidStatusTransition(0, 0)"),
        (world.admin(), ["app-status", *nova, "--app-id", "7", "--status", "INACTIVE"],
         "not_found", "AppNotFound(7)"),
        (world.admin(world.stranger_key), ["app-status", *nova, "--app-id", "1", "--status",
         "INACTIVE"], "forbidden", "NotAuthorized()"),
        (world.admin(world.stranger_key), ["reset-pin", *kms], "forbidden", "NotOwner()"),
        (world.admin(), ["set-app-id", *kms, "--app-id", "6"], "conflict", "KmsAppIdAlreadySet()"),
    ]  # fmt: skip
    for admin, op, expected_code, name in cases:
        code, out = run(*admin, *op)
        assert code == 1, out
        error = out["error"]
        assert error["code"] == expected_code and error["revert"] == name, error
        assert name in error["message"] and "0x" + "e3962ba3" not in error["message"], error
        assert "unavailable" not in json.dumps(out)
    # Refused at estimation: nothing was sent by either key.
    assert (world.nonce(0), world.nonce(1)) == before


def test_a_call_to_an_address_without_code_sends_nothing(world: World, run: Run) -> None:
    before = world.nonce(0)
    for op in (
        ["reset-pin", "--kms-registry", EMPTY],
        ["pin-secret", "--kms-registry", EMPTY, "--fingerprint", "0x" + "77" * 32],
        ["app-status", "--registry", EMPTY, "--app-id", "1", "--status", "INACTIVE"],
    ):
        code, out = run(*world.admin(), *op)
        assert code == 1, out
        assert out["error"]["code"] == "bad_request", out
        assert out["error"]["message"] == f"no contract at {EMPTY}: nothing was sent", out
        assert world.nonce(0) == before  # neither mined nor pending

    # The same command against the real registry goes through.
    code, out = run(*world.admin(), "reset-pin", "--kms-registry", world.kms)
    assert code == 0 and set(out) == {"tx", "block"}, out
    assert world.nonce(0)[0] == before[0] + 1


async def test_tx_sender_checks_code_only_for_calls(
    anvil: AnvilProcess, rpc: JsonRpcClient
) -> None:
    sender = TxSender(rpc, anvil.private_keys[2])
    with pytest.raises(BadRequest, match="no contract at") as caught:
        await sender.send(EMPTY, b"\x01\x02\x03\x04")
    assert caught.value.details == {"address": EMPTY}
    assert await rpc.call("eth_getTransactionCount", [sender.address, "pending"]) == "0x0"
    # A plain value transfer (no calldata) to an account is still allowed.
    receipt = await sender.send(EMPTY, b"", value=1)
    assert receipt["status"] == "0x1"
