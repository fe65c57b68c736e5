"""The client package splits along trio: the blocking client and the results load no event loop.

A program that only uses :class:`~novakms.client.blocking.BlockingClient` must not pay for (or
depend on) trio; the split is checked in a fresh interpreter, and then proven end to end with
both clients against one real server.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import trio

from novakms.client.aio import Client
from novakms.client.blocking import BlockingClient
from novakms.client.results import DeriveResult, KVItem, parse_derive_result, parse_kv_item
from novakms.errors import ProtocolError
from tests.conftest import Wallets

# What the blocking side may never load: trio, and the trio client and its socket glue.
TRIO_SIDE = ["trio", "novakms.client.aio", "novakms.net.dial", "novakms.net.sockets"]
TRIO_SIDE += ["novakms.net.proxy"]


def _loaded_after_import(module: str) -> list[str]:
    code = (
        "import sys, importlib; importlib.import_module(sys.argv[1]);"
        f"print(','.join(m for m in {TRIO_SIDE!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, module], capture_output=True, text=True, check=True
    )
    return [name for name in out.stdout.strip().split(",") if name]


@pytest.mark.parametrize(
    "module",
    [
        "novakms.client",
        "novakms.client.results",
        "novakms.client.blocking",
        "novakms.client.cluster_core",
        "novakms.client.blocking_cluster",
        "novakms.chain.blocking_rpc",
    ],
)
def test_the_blocking_side_loads_no_trio(module: str) -> None:
    assert _loaded_after_import(module) == []


def test_the_package_exports_both_clients_lazily() -> None:
    code = (
        "import sys; from novakms.client import BlockingClient, KVItem;"
        "assert 'trio' not in sys.modules;"
        "from novakms.client import Client; assert 'trio' in sys.modules;"
        "import novakms.client.aio as aio; assert Client is aio.Client"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_results_parse_and_never_show_secrets() -> None:
    derived = parse_derive_result({"app_id": 1, "path": "p", "key": b"\x01" * 32, "length": 32})
    assert derived == DeriveResult(app_id=1, path="p", key=b"\x01" * 32, length=32)
    assert "\\x01" not in repr(derived)
    item = parse_kv_item(
        {"key": "k", "value": b"secret", "version": "v1", "updated_at_ms": 5, "expires_at_ms": None}
    )
    assert item == KVItem(
        key="k", value=b"secret", version="v1", updated_at_ms=5, expires_at_ms=None
    )
    assert "secret" not in repr(item)
    with pytest.raises(ProtocolError):
        parse_derive_result({"app_id": 1, "path": "p", "key": "not bytes", "length": 32})
    with pytest.raises(ProtocolError):
        parse_kv_item({"key": "k", "version": "v1", "updated_at_ms": 5})


async def test_both_clients_agree_against_one_real_server(
    start_server: Any, wallets: Wallets
) -> None:
    srv = await start_server()
    async with await Client.connect(
        srv.tcp, signer=wallets.app1, expect_wallet=wallets.node.wallet
    ) as kms:
        trio_key = await kms.derive("client/split", length=48)
        await kms.kv_put("client/k", b"v")

    def blocking_side() -> tuple[DeriveResult, KVItem]:  # a worker thread: the server runs here
        with BlockingClient.connect(
            srv.tcp, signer=wallets.app1, expect_wallet=wallets.node.wallet
        ) as blocking:
            return blocking.derive("client/split", length=48), blocking.kv_get("client/k")

    derived, item = await trio.to_thread.run_sync(blocking_side)
    assert derived == trio_key and derived.app_id == 1 and len(derived.key) == 48
    assert item.key == "client/k" and item.value == b"v"
