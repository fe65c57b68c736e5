"""JsonRpcClient against a real anvil, and through a fault-injecting proxy."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from novakms.chain.rpc import JsonRpcClient, block_param, parse_data, parse_quantity
from novakms.dev.anvil import AnvilProcess
from novakms.errors import ChainError, ChainUnavailable, NovaKMSError, RpcError
from tests.chain import (
    FORTY_TWO,
    IDENTITY_PRECOMPILE,
    NOPE_REVERT,
    PING_TOPIC,
    deploy_unsigned,
    send_unsigned,
)
from tests.chain.faultproxy import FaultProxy, Mode, fault_proxy

TIMEOUT = 0.4


@pytest.fixture
async def proxy(anvil: AnvilProcess) -> AsyncIterator[FaultProxy]:
    async with fault_proxy(anvil.url) as running:
        yield running


@pytest.fixture
async def proxied(proxy: FaultProxy) -> AsyncIterator[JsonRpcClient]:
    """A client with a short timeout, talking to anvil through the proxy."""
    async with JsonRpcClient(proxy.url, timeout=TIMEOUT) as client:
        yield client


def echo_id(result: Any) -> Any:
    """A canned answer: a valid response carrying ``result`` with the request's id."""
    return lambda request: {"jsonrpc": "2.0", "id": request["id"], "result": result}


# -- against anvil ------------------------------------------------------------------------


async def test_chain_id_and_block_number(anvil: AnvilProcess, rpc: JsonRpcClient) -> None:
    assert await rpc.chain_id() == 31337 == anvil.chain_id
    assert await rpc.block_number() == 0
    await rpc.call("anvil_mine", ["0x3"])
    assert await rpc.block_number() == 3


async def test_get_block_tags_and_numbers(rpc: JsonRpcClient) -> None:
    genesis = await rpc.get_block(0)
    assert genesis is not None and genesis["number"] == "0x0"
    await rpc.call("anvil_mine", ["0x2"])
    latest = await rpc.get_block("latest")
    finalized = await rpc.get_block()  # the default tag is "finalized"
    assert latest is not None and finalized is not None
    assert latest["number"] == "0x2"
    assert finalized["hash"] == latest["hash"]  # the fixture's anvil finalizes at once
    one = await rpc.get_block(1)
    assert one is not None and one["hash"] == latest["parentHash"]
    assert await rpc.get_block(99) is None
    full = await rpc.get_block("latest", full_transactions=True)
    assert full is not None and full["transactions"] == []


async def test_eth_call_identity_precompile(rpc: JsonRpcClient) -> None:
    assert await rpc.eth_call(IDENTITY_PRECOMPILE, b"hello") == b"hello"
    assert await rpc.eth_call(IDENTITY_PRECOMPILE, b"", "latest") == b""
    assert await rpc.eth_call(IDENTITY_PRECOMPILE, b"\x00\x01", 0) == b"\x00\x01"


async def test_eth_call_contract_and_revert(anvil: AnvilProcess, rpc: JsonRpcClient) -> None:
    contract = await deploy_unsigned(rpc, anvil.accounts[0])
    assert await rpc.eth_call(contract, b"") == FORTY_TWO
    assert await rpc.eth_call(contract.upper().replace("0X", "0x"), b"\x01") == FORTY_TWO
    assert await rpc.eth_call(contract, b"", 0) == b""  # no code at genesis: empty return
    assert await rpc.get_code(contract) != b""
    assert await rpc.get_code(contract, 0) == b""
    with pytest.raises(RpcError) as caught:
        await rpc.eth_call(contract, b"\xff")
    error = caught.value
    assert error.is_revert and error.rpc_code == 3
    assert error.revert_data == NOPE_REVERT
    assert "nope" in error.message and "eth_call" in str(error)
    assert isinstance(error, ChainError) and isinstance(error, NovaKMSError)
    assert error.code == "unavailable"


async def test_get_balance(anvil: AnvilProcess, rpc: JsonRpcClient) -> None:
    assert await rpc.get_balance(anvil.accounts[0]) == 10_000 * 10**18
    assert await rpc.get_balance("0x" + "00" * 19 + "99") == 0


async def test_get_logs(anvil: AnvilProcess, rpc: JsonRpcClient) -> None:
    sender = anvil.accounts[0]
    first = await deploy_unsigned(rpc, sender)
    second = await deploy_unsigned(rpc, sender)
    word_a, word_b = b"\xee" + b"\xaa" * 31, b"\xee" + b"\xbb" * 31
    receipt_a = await send_unsigned(rpc, sender, first, word_a + b"tail")
    await send_unsigned(rpc, sender, second, word_b)
    await send_unsigned(rpc, sender, first, b"\x01")  # no log
    head = await rpc.block_number()

    logs = await rpc.get_logs(first, 0, head)
    assert len(logs) == 1
    (log,) = logs
    assert log["address"] == first
    assert log["topics"] == ["0x" + PING_TOPIC.hex(), "0x" + word_a.hex()]
    assert parse_data(log["data"], what="data") == word_a + b"tail"
    assert log["blockNumber"] == receipt_a["blockNumber"]
    assert log["transactionHash"] == receipt_a["transactionHash"]

    both = await rpc.get_logs([first, second], 0, "latest")
    assert [entry["address"] for entry in both] == [first, second]
    assert await rpc.get_logs([first, second], 0, "finalized") == both
    # Topic filters: bytes or hex, alternatives, wildcards.
    assert len(await rpc.get_logs([first, second], 0, head, [PING_TOPIC])) == 2
    only_b = await rpc.get_logs([first, second], 0, head, [None, "0x" + word_b.hex()])
    assert [entry["address"] for entry in only_b] == [second]
    assert len(await rpc.get_logs([first, second], 0, head, [None, [word_a, word_b]])) == 2
    assert await rpc.get_logs([first, second], 0, head, [b"\x00" * 32]) == []
    # Ranges are inclusive.
    block_a = parse_quantity(receipt_a["blockNumber"], what="n")
    assert len(await rpc.get_logs(first, block_a, block_a)) == 1
    assert await rpc.get_logs(first, block_a + 1, head) == []


async def test_rpc_error_object(rpc: JsonRpcClient) -> None:
    with pytest.raises(RpcError) as caught:
        await rpc.call("eth_noSuchMethod", [])
    assert caught.value.rpc_code == -32601
    assert not caught.value.is_revert and caught.value.revert_data is None
    # The client stays usable.
    assert await rpc.chain_id() == 31337


async def test_batch(rpc: JsonRpcClient) -> None:
    assert await rpc.batch([]) == []
    chain_id, number = await rpc.batch([("eth_chainId", []), ("eth_blockNumber", [])])
    assert (chain_id, number) == ("0x7a69", "0x0")
    with pytest.raises(RpcError) as caught:
        await rpc.batch([("eth_chainId", []), ("eth_noSuchMethod", [])])
    assert caught.value.rpc_code == -32601 and caught.value.method == "eth_noSuchMethod"


async def test_concurrent_calls_share_one_client(rpc: JsonRpcClient) -> None:
    results: list[int] = []

    async def one() -> None:
        results.append(await rpc.chain_id())

    async with trio.open_nursery() as nursery:
        for _ in range(25):
            nursery.start_soon(one)
    assert results == [31337] * 25


async def test_argument_validation(rpc: JsonRpcClient) -> None:
    with pytest.raises(ValueError):
        await rpc.eth_call("0x1234", b"")
    with pytest.raises(ValueError):
        await rpc.get_block("newest")
    with pytest.raises(ValueError):
        await rpc.get_block(-1)
    with pytest.raises(ValueError):
        await rpc.get_logs(IDENTITY_PRECOMPILE, 5, 4)
    with pytest.raises(ValueError):
        await rpc.get_logs([], 0, 1)
    with pytest.raises(ValueError):
        await rpc.get_logs(IDENTITY_PRECOMPILE, 0, 1, [b"short"])
    with pytest.raises(ValueError):
        await rpc.call("eth_call", [object()])
    assert block_param(7) == "0x7"
    with pytest.raises(ValueError):
        block_param(True)
    assert block_param("0x00ff") == "0xff"


def test_constructor_validation_and_repr() -> None:
    with pytest.raises(ValueError):
        JsonRpcClient("ftp://example.invalid")
    with pytest.raises(ValueError):
        JsonRpcClient("not a url")
    with pytest.raises(ValueError):
        JsonRpcClient("http://127.0.0.1:8545", timeout=0)
    with pytest.raises(ValueError):
        JsonRpcClient("http://127.0.0.1:8545", timeout=float("nan"))
    with pytest.raises(ValueError):
        JsonRpcClient("http://127.0.0.1:8545", max_response_bytes=0)
    client = JsonRpcClient("https://user:pw@rpc.example.invalid:8443/v3/SECRETKEY")
    assert "SECRETKEY" not in repr(client) and "pw" not in repr(client)
    assert client.endpoint == "https://rpc.example.invalid:8443"


def test_parse_helpers() -> None:
    assert parse_quantity("0x0", what="q") == 0
    assert parse_quantity("0x" + "f" * 64, what="q") == 2**256 - 1
    for bad in ["0x", "12", "0xg", 5, None, "0x" + "1" * 65, " 0x1"]:
        with pytest.raises(ChainUnavailable):
            parse_quantity(bad, what="q")
    assert parse_data("0x", what="d") == b""
    assert parse_data("0xABcd", what="d", size=2) == b"\xab\xcd"
    for bad_data in ["0xabc", "abcd", 12, None, "0xzz"]:
        with pytest.raises(ChainUnavailable):
            parse_data(bad_data, what="d")
    with pytest.raises(ChainUnavailable):
        parse_data("0xab", what="d", size=2)


# -- failures through the fault proxy ----------------------------------------------------


async def test_proxy_passes_through(proxy: FaultProxy, proxied: JsonRpcClient) -> None:
    assert await proxied.chain_id() == 31337
    assert await proxied.eth_call(IDENTITY_PRECOMPILE, b"abc") == b"abc"
    assert proxy.forwarded == 2


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (Mode.REFUSE, "eth_chainId: RemoteProtocolError"),
        (Mode.BLACKHOLE, "timed out after 0.4s"),
        (Mode.GARBAGE, "not JSON"),
        (Mode.HTTP_ERROR, "HTTP 500"),
        (Mode.TRUNCATE, "eth_chainId: RemoteProtocolError"),
    ],
)
async def test_fault_modes_map_to_unavailable_and_recover(
    proxy: FaultProxy, proxied: JsonRpcClient, mode: Mode, expected: str
) -> None:
    assert await proxied.chain_id() == 31337  # a keep-alive connection now exists
    proxy.mode = mode
    for _ in range(2):  # on the kept-alive connection, then on a fresh one
        start = trio.current_time()
        with pytest.raises(ChainUnavailable) as caught:
            await proxied.chain_id()
        elapsed = trio.current_time() - start
        assert elapsed < TIMEOUT + 0.3
        if mode is Mode.BLACKHOLE:
            assert elapsed >= TIMEOUT * 0.9
        assert expected in str(caught.value)
        assert caught.value.code == "unavailable"
    proxy.mode = Mode.PASS
    assert await proxied.chain_id() == 31337
    assert await proxied.block_number() == 0


async def test_refused_port_is_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with JsonRpcClient(f"http://127.0.0.1:{port}", timeout=TIMEOUT) as client:
        with pytest.raises(ChainUnavailable, match="ConnectError"):
            await client.block_number()


async def test_per_call_timeout(proxy: FaultProxy, proxied: JsonRpcClient) -> None:
    proxy.mode = Mode.BLACKHOLE
    start = trio.current_time()
    with pytest.raises(ChainUnavailable, match=r"timed out after 0\.1s"):
        await proxied.call("eth_chainId", [], timeout=0.1)
    assert trio.current_time() - start < 0.3


async def test_rpc_error_object_through_proxy(proxy: FaultProxy, proxied: JsonRpcClient) -> None:
    proxy.canned(
        lambda request: {
            "jsonrpc": "2.0",
            "id": request["id"],
            "error": {"code": -32005, "message": "limit exceeded", "data": {"retry": 1}},
        }
    )
    with pytest.raises(RpcError) as caught:
        await proxied.get_logs(IDENTITY_PRECOMPILE, 0, 10)
    assert (caught.value.rpc_code, caught.value.message) == (-32005, "limit exceeded")
    assert caught.value.data == {"retry": 1} and not caught.value.is_revert
    # A revert whose data is nested one level down (some providers).
    proxy.canned(
        lambda request: {
            "jsonrpc": "2.0",
            "id": request["id"],
            "error": {"code": -32000, "message": "execution reverted", "data": {"data": "0x1234"}},
        }
    )
    with pytest.raises(RpcError) as reverted:
        await proxied.eth_call(IDENTITY_PRECOMPILE, b"")
    assert reverted.value.revert_data == b"\x12\x34"
    proxy.mode = Mode.PASS
    assert await proxied.chain_id() == 31337


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (lambda r: {"jsonrpc": "2.0", "id": r["id"] + 1, "result": "0x1"}, "wrong id"),
        (lambda r: {"jsonrpc": "2.0", "id": str(r["id"]), "result": "0x1"}, "wrong id"),
        (lambda r: {"jsonrpc": "2.0", "result": "0x1"}, "wrong id"),
        (lambda r: {"jsonrpc": "1.0", "id": r["id"], "result": "0x1"}, "not JSON-RPC 2.0"),
        (lambda r: {"id": r["id"], "result": "0x1"}, "not JSON-RPC 2.0"),
        (lambda r: [{"jsonrpc": "2.0", "id": r["id"], "result": "0x1"}], "response object"),
        (lambda r: "0x1", "response object"),
        (lambda r: {"jsonrpc": "2.0", "id": r["id"]}, "exactly one"),
        (
            lambda r: {"jsonrpc": "2.0", "id": r["id"], "result": "0x1", "error": None},
            "exactly one",
        ),
        (lambda r: {"jsonrpc": "2.0", "id": r["id"], "error": "boom"}, "malformed error"),
        (
            lambda r: {"jsonrpc": "2.0", "id": r["id"], "error": {"code": "1", "message": "x"}},
            "malformed error",
        ),
        (lambda r: b'{"jsonrpc":"2.0","id":1,"result":NaN}', "not JSON"),
        (lambda r: b"", "not JSON"),
    ],
)
async def test_malformed_responses(
    proxy: FaultProxy, proxied: JsonRpcClient, answer: Any, message: str
) -> None:
    proxy.canned(answer)
    with pytest.raises(ChainUnavailable, match=message):
        await proxied.call("eth_chainId", [])


@pytest.mark.parametrize("bad", ["0x", "0xzz", 7, None, "7", "0x" + "1" * 65])
async def test_malformed_quantity_results(
    proxy: FaultProxy, proxied: JsonRpcClient, bad: Any
) -> None:
    proxy.canned(echo_id(bad))
    with pytest.raises(ChainUnavailable, match="hex quantity"):
        await proxied.block_number()
    with pytest.raises(ChainUnavailable, match="hex quantity"):
        await proxied.chain_id()


async def test_malformed_eth_call_result(proxy: FaultProxy, proxied: JsonRpcClient) -> None:
    for bad in ["0x123", "abcd", 1, None, {"data": "0x"}]:
        proxy.canned(echo_id(bad))
        with pytest.raises(ChainUnavailable, match="hex data"):
            await proxied.eth_call(IDENTITY_PRECOMPILE, b"")


async def test_malformed_blocks(proxy: FaultProxy, proxied: JsonRpcClient) -> None:
    good = {
        "number": "0x5",
        "hash": "0x" + "11" * 32,
        "parentHash": "0x" + "22" * 32,
        "timestamp": "0x10",
    }
    proxy.canned(echo_id(good))
    assert await proxied.get_block(5) == good
    with pytest.raises(ChainUnavailable, match="asked for block 6, got 5"):
        await proxied.get_block(6)
    for field, bad in [("number", "5"), ("hash", "0x11"), ("parentHash", None), ("timestamp", 1)]:
        proxy.canned(echo_id({**good, field: bad}))
        with pytest.raises(ChainUnavailable, match=field):
            await proxied.get_block("finalized")
    proxy.canned(echo_id(["not", "a", "block"]))
    with pytest.raises(ChainUnavailable, match="not an object"):
        await proxied.get_block("latest")


async def test_malformed_logs(proxy: FaultProxy, proxied: JsonRpcClient) -> None:
    address = "0x" + "ab" * 20
    good = {
        "address": address,
        "topics": ["0x" + PING_TOPIC.hex()],
        "data": "0x",
        "blockNumber": "0x5",
        "blockHash": "0x" + "11" * 32,
        "transactionHash": "0x" + "22" * 32,
        "transactionIndex": "0x0",
        "logIndex": "0x0",
        "removed": False,
    }
    proxy.canned(echo_id([good]))
    assert await proxied.get_logs(address, 0, 10, [PING_TOPIC]) == [good]
    cases: list[tuple[Any, str]] = [
        ({**good, "address": "0x" + "cd" * 20}, "not asked for"),
        ({**good, "blockNumber": "0xb"}, "outside the range"),
        ({**good, "topics": ["0x" + "00" * 32]}, "topic filter"),
        ({**good, "topics": []}, "topic filter"),
        ({**good, "topics": "0x"}, "malformed topics"),
        ({**good, "data": "0x1"}, "hex data"),
        ({**good, "logIndex": None}, "logIndex"),
        ({**good, "transactionHash": "0x22"}, "transactionHash"),
        ({**good, "removed": True}, "removed"),
        ("a log", "not an object"),
    ]
    for log, message in cases:
        proxy.canned(echo_id([log]))
        with pytest.raises(ChainUnavailable, match=message):
            await proxied.get_logs(address, 0, 10, [PING_TOPIC])
    proxy.canned(echo_id({"logs": []}))
    with pytest.raises(ChainUnavailable, match="not a list"):
        await proxied.get_logs(address, 0, 10)


async def test_response_size_limit(proxy: FaultProxy) -> None:
    async with JsonRpcClient(proxy.url, timeout=TIMEOUT, max_response_bytes=1024) as client:
        proxy.canned(echo_id("0x" + "00" * 400))
        assert len(await client.eth_call(IDENTITY_PRECOMPILE, b"")) == 400
        proxy.canned(echo_id("0x" + "00" * 1000))
        with pytest.raises(ChainUnavailable, match="larger than 1024 bytes"):
            await client.eth_call(IDENTITY_PRECOMPILE, b"")
        # Without a Content-Length, the body is cut off while it streams in.
        proxy.canned(echo_id("0x" + "00" * 400), chunked=True)
        assert len(await client.eth_call(IDENTITY_PRECOMPILE, b"")) == 400
        proxy.canned(echo_id("0x" + "00" * 100_000), chunked=True)
        with pytest.raises(ChainUnavailable, match="larger than 1024 bytes"):
            await client.eth_call(IDENTITY_PRECOMPILE, b"")
        proxy.mode = Mode.PASS
        assert await client.chain_id() == 31337


async def test_malformed_batches(proxy: FaultProxy, proxied: JsonRpcClient) -> None:
    calls: list[tuple[str, list[Any]]] = [("eth_chainId", []), ("eth_blockNumber", [])]
    assert await proxied.batch(calls) == ["0x7a69", "0x0"]

    def answers(request: Any) -> Any:
        return [{"jsonrpc": "2.0", "id": item["id"], "result": "0x1"} for item in request]

    proxy.canned(lambda request: answers(request)[::-1])  # out of order is fine
    assert await proxied.batch(calls) == ["0x1", "0x1"]
    proxy.canned(lambda request: answers(request)[:1])
    with pytest.raises(ChainUnavailable, match="list of 2"):
        await proxied.batch(calls)
    proxy.canned(lambda request: [answers(request)[0]] * 2)
    with pytest.raises(ChainUnavailable, match="do not match"):
        await proxied.batch(calls)
    proxy.canned(
        lambda request: {
            "jsonrpc": "2.0",
            "id": None,
            "error": {"code": -32600, "message": "batches disabled"},
        }
    )
    with pytest.raises(RpcError, match="batches disabled"):
        await proxied.batch(calls)
