"""AnvilProcess and find_anvil against the real anvil binary."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
from eth_account import Account

from novakms.chain.rpc import JsonRpcClient
from novakms.dev.anvil import ANVIL_ENV, DEFAULT_MNEMONIC, AnvilProcess, find_anvil
from novakms.errors import AnvilError, AnvilNotFound, RpcError
from tests.chain import FORTY_TWO, PING_TOPIC, deploy_unsigned, send_unsigned

StartAnvil = Callable[..., AnvilProcess]


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_find_anvil(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ANVIL_ENV, raising=False)
    found = find_anvil()
    assert found.is_file() and os.access(found, os.X_OK)
    assert "node_modules" in found.parts
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(AnvilNotFound, match=r"scripts/setup.*PATH.*NOVAKMS_ANVIL") as caught:
        find_anvil(tmp_path)
    assert isinstance(caught.value, FileNotFoundError)
    # Outside a checkout: anvil on PATH (e.g. Foundry's own install).
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    on_path = bin_dir / "anvil"
    on_path.write_text("#!/bin/sh\n")
    on_path.chmod(on_path.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", str(bin_dir))
    assert find_anvil(tmp_path) == on_path
    # The Node wrapper is found when the platform package is missing.
    wrapper = tmp_path / "node_modules" / ".bin" / "anvil"
    wrapper.parent.mkdir(parents=True)
    wrapper.write_text("#!/bin/sh\n")
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    assert find_anvil(tmp_path) == wrapper
    # $NOVAKMS_ANVIL wins, and must name an executable.
    monkeypatch.setenv(ANVIL_ENV, str(found))
    assert find_anvil(tmp_path) == found
    monkeypatch.setenv(ANVIL_ENV, str(tmp_path / "missing"))
    with pytest.raises(AnvilNotFound, match=ANVIL_ENV):
        find_anvil()


async def test_start_reports_port_accounts_and_chain(anvil: AnvilProcess) -> None:
    assert anvil.running and anvil.pid is not None
    assert anvil.port > 0 and anvil.url == f"http://127.0.0.1:{anvil.port}"
    assert anvil.chain_id == 31337
    assert len(anvil.accounts) == len(anvil.private_keys) == 10
    assert anvil.accounts[0] == "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266"
    for address, key in zip(anvil.accounts, anvil.private_keys, strict=True):
        assert Account.from_key(key).address.lower() == address
    Account.enable_unaudited_hdwallet_features()
    first = Account.from_mnemonic(DEFAULT_MNEMONIC, account_path="m/44'/60'/0'/0/0")
    assert bytes(first.key) == anvil.private_keys[0]
    async with anvil.rpc() as rpc:
        assert await rpc.get_balance(anvil.accounts[9]) == 10_000 * 10**18
    assert "running" in repr(anvil)


async def test_chain_id_option(start_anvil: StartAnvil) -> None:
    node = start_anvil(chain_id=4242)
    assert node.chain_id == 4242
    async with node.rpc() as rpc:
        assert await rpc.chain_id() == 4242


async def finalized_and_latest(rpc: JsonRpcClient) -> tuple[int, int]:
    finalized = await rpc.get_block("finalized")
    latest = await rpc.get_block("latest")
    assert finalized is not None and latest is not None
    return int(finalized["number"], 16), int(latest["number"], 16)


@pytest.mark.parametrize(
    ("slots", "expected"),
    [
        (0, [(0, 0), (1, 1), (10, 10)]),  # the default: finalized == latest
        (1, [(0, 0), (0, 1), (8, 10)]),  # finalized = latest - 2 * slots
        (None, [(0, 0), (0, 1), (0, 10)]),  # anvil's own default: 32 slots, 64 blocks of lag
    ],
)
async def test_finalized_tag(
    start_anvil: StartAnvil, slots: int | None, expected: list[tuple[int, int]]
) -> None:
    node = start_anvil(slots_in_an_epoch=slots)
    async with node.rpc() as rpc:
        seen = [await finalized_and_latest(rpc)]
        await rpc.call("anvil_mine", ["0x1"])
        seen.append(await finalized_and_latest(rpc))
        await rpc.call("anvil_mine", ["0x9"])
        seen.append(await finalized_and_latest(rpc))
    assert seen == expected


async def test_state_survives_restart_on_the_same_port(
    start_anvil: StartAnvil, tmp_path: Path
) -> None:
    state = tmp_path / "chain-state.json"
    node = start_anvil(state_file=state)
    port, url = node.port, node.url
    async with node.rpc() as rpc:
        contract = await deploy_unsigned(rpc, node.accounts[0])
        receipt = await send_unsigned(rpc, node.accounts[0], contract, b"\xee" + b"\x01" * 31)
        await rpc.call("anvil_mine", ["0x5"])
        head = await rpc.get_block("latest")
        assert head is not None
        deploy_block = 1
        logs = await rpc.get_logs(contract, 0, "latest", [PING_TOPIC])
        assert len(logs) == 1
    assert not state.exists()  # dumped on exit, not before

    assert node.stop() == 0
    assert not node.running and not port_open(port)
    assert state.stat().st_size > 0

    node.restart()
    assert node.running and node.port == port and node.url == url
    async with node.rpc() as rpc:
        assert await rpc.block_number() == int(head["number"], 16)
        again = await rpc.get_block("latest")
        assert again is not None and again["hash"] == head["hash"]
        assert await rpc.eth_call(contract, b"") == FORTY_TWO
        # State at older blocks is kept too (--preserve-historical-states).
        assert await rpc.eth_call(contract, b"", deploy_block) == FORTY_TWO
        assert await rpc.get_code(contract, 0) == b""
        assert await rpc.get_logs(contract, 0, "latest", [PING_TOPIC]) == logs
        assert logs[0]["transactionHash"] == receipt["transactionHash"]
        # The chain goes on from there.
        await send_unsigned(rpc, node.accounts[0], contract, b"\xee" + b"\x02" * 31)
        assert await rpc.block_number() == int(head["number"], 16) + 1
    node.stop()

    # A third life sees the second one's work.
    node.restart(port=0)
    async with node.rpc() as rpc:
        assert await rpc.block_number() == int(head["number"], 16) + 1
        assert len(await rpc.get_logs(contract, 0, "latest")) == 2


async def test_without_state_file_a_restart_is_a_fresh_chain(anvil: AnvilProcess) -> None:
    async with anvil.rpc() as rpc:
        await rpc.call("anvil_mine", ["0x3"])
    anvil.restart()
    async with anvil.rpc() as rpc:
        assert await rpc.block_number() == 0


async def test_block_time(start_anvil: StartAnvil) -> None:
    node = start_anvil(block_time=0.1)
    async with node.rpc() as rpc:
        with trio.fail_after(3):
            while await rpc.block_number() < 2:
                await trio.sleep(0.05)


async def test_stop_is_idempotent_and_closes_the_port(anvil: AnvilProcess) -> None:
    port = anvil.port
    assert port_open(port)
    assert anvil.stop() == 0
    assert anvil.stop() is None
    assert not anvil.running and anvil.pid is None
    assert not port_open(port)
    assert "stopped" in repr(anvil)


def test_context_manager_starts_and_stops() -> None:
    with AnvilProcess() as node:
        assert node.running
        port = node.port
        assert port_open(port)
    assert not node.running
    assert not port_open(port)


def test_start_twice_is_an_error(anvil: AnvilProcess) -> None:
    with pytest.raises(AnvilError, match="already running"):
        anvil.start()


def test_bad_arguments_report_anvil_output() -> None:
    node = AnvilProcess()
    with pytest.raises(AnvilError, match="exited with status") as caught:
        node.start(extra_args=["--no-such-flag"])
    assert "no-such-flag" in str(caught.value)
    assert not node.running


def test_port_in_use_is_reported(anvil: AnvilProcess) -> None:
    other = AnvilProcess()
    with pytest.raises(AnvilError, match="exited"):
        other.start(port=anvil.port)
    assert anvil.running


def test_url_before_start() -> None:
    with pytest.raises(AnvilError, match="not been started"):
        _ = AnvilProcess().url
    with pytest.raises(AnvilError, match="not been started"):
        AnvilProcess().restart()


async def test_anvil_specific_methods_are_rpc_errors_elsewhere(anvil: AnvilProcess) -> None:
    # Sanity check of the error path on a real node: wrong parameters.
    async with anvil.rpc() as rpc:
        with pytest.raises(RpcError):
            await rpc.call("eth_getBlockByNumber", ["not-a-tag", False])
