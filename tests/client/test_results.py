"""Every operation's answer becomes a typed result, checked field by field.

A server (or anything in the middle) that answers with a missing field, a wrong type, or a
``true`` where a number belongs gets a :class:`~novakms.errors.ProtocolError`, never a wrong
value in the app. The same results come back from both clients against a real server, and a
downstream ``mypy --strict`` sees them (the package ships ``py.typed``).
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
import trio

import novakms
from novakms.client import results as r
from novakms.client.aio import Client
from novakms.client.blocking import BlockingClient
from novakms.errors import ProtocolError
from tests.conftest import Wallets

STATUS: dict[str, Any] = {
    "node": {"wallet": "0x" + "11" * 20, "version": "0.1.0", "mode": "development"},
    "ready": True,
    "reason": None,
    "syncing": False,
    "degraded": None,
    "catch_up": {"state": "serving", "reason": None, "unreachable": []},
    "safe_to_stop": False,
    "safe_to_stop_reason": "unconfirmed",
    "unconfirmed": 3,
    "secret": {
        "initialized": True,
        "fingerprint": "ab" * 8,
        "matches_pin": True,
        "pinned": False,
        "pin_required": False,
    },
    "store": {"apps": 1, "live": 3, "tombstones": 0, "used_bytes": 1200},
    "auth": {"source": "static"},
}
NODES: dict[str, Any] = {
    "self": "0x" + "11" * 20,
    "nodes": [
        {
            "wallet": "0x" + "11" * 20,
            "authorized": True,
            "reason": None,
            "instance_id": 1,
            "instance_url": "http://127.0.0.1:7400",
            "address": "127.0.0.1:7400",
            "status": "ACTIVE",
            "zk_verified": True,
            "version_id": 1,
            "probe": None,
        },
        {
            "wallet": "0x" + "22" * 20,
            "authorized": False,
            "reason": "not_operator",
            "instance_id": None,
            "instance_url": None,
            "address": None,
            "status": None,
            "zk_verified": None,
            "version_id": None,
            "probe": {"connected": False, "last_ok_ms": None, "error": "refused"},
        },
    ],
}
# (parser, a valid answer, one field of it: (path to the map holding it, name))
CASES: list[tuple[Callable[[Mapping[str, Any]], Any], dict[str, Any], tuple[str, ...]]] = [
    (r.parse_health, {"status": "ok"}, ("status",)),
    (r.parse_status, STATUS, ("ready",)),
    (r.parse_status, STATUS, ("unconfirmed",)),
    (r.parse_status, STATUS, ("secret", "initialized")),
    (r.parse_status, STATUS, ("store", "live")),
    (r.parse_status, STATUS, ("catch_up", "unreachable")),
    (r.parse_nodes, NODES, ("self",)),
    (r.parse_derive_result, {"app_id": 1, "path": "p", "key": b"k" * 32, "length": 32}, ("key",)),
    (
        r.parse_kv_item,
        {"key": "k", "value": b"v", "version": "v1", "updated_at_ms": 5, "expires_at_ms": None},
        ("updated_at_ms",),
    ),
    (
        r.parse_put_result,
        {"key": "k", "version": "v1", "updated_at_ms": 5, "expires_at_ms": 9, "acked": 0},
        ("acked",),
    ),
    (r.parse_delete_result, {"key": "k", "deleted": True, "updated_at_ms": 5}, ("deleted",)),
    (r.parse_kv_page, {"keys": ["a", "b"], "cursor": None}, ("keys",)),
    (r.parse_cert_ca, {"app_id": 1, "certificate": "PEM"}, ("certificate",)),
    (
        r.parse_cert_issued,
        {
            "app_id": 1,
            "certificate": "PEM",
            "ca": "CA",
            "serial": "0a",
            "not_before_ms": 1,
            "not_after_ms": 2,
        },
        ("not_after_ms",),
    ),
    (
        r.parse_guardian_share,
        {
            "share": b"sealed",
            "set_version": 1,
            "x": 1,
            "threshold": 2,
            "count": 3,
            "fingerprint": "ab",
        },
        ("share",),
    ),
    (r.parse_restore_result, {"recovered": False, "received": 1, "threshold": 2}, ("received",)),
]


def _with(document: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """A deep copy of ``document`` with the field at ``path`` set to ``value`` (or removed)."""
    copy: dict[str, Any] = {**document}
    holder = copy
    for part in path[:-1]:
        holder[part] = {**holder[part]}
        holder = holder[part]
    if value is _MISSING:
        del holder[path[-1]]
    else:
        holder[path[-1]] = value
    return copy


_MISSING = object()
# A value of a type no field accepts (a map), and the look-alikes that must not pass.
WRONG = [_MISSING, {"x": 1}, True, 1, "1", b"1", [1]]


@pytest.mark.parametrize(("parse", "document", "path"), CASES)
def test_valid_answers_parse_and_every_wrong_field_is_refused(
    parse: Callable[[Mapping[str, Any]], Any], document: dict[str, Any], path: tuple[str, ...]
) -> None:
    assert parse(document) is not None
    good = document
    for part in path:
        good = good[part]
    for wrong in WRONG:
        if type(wrong) is type(good) or (isinstance(good, list) and wrong == [1] and not good):
            continue
        with pytest.raises(ProtocolError):
            parse(_with(document, path, wrong))


def test_typed_fields_read_what_the_server_said() -> None:
    status = r.parse_status(STATUS)
    assert status.ready is True and status.node.mode == "development"
    assert status.secret.fingerprint == "ab" * 8 and status.store.live == 3
    assert status.catch_up == r.CatchUp(state="serving", reason=None, unreachable=())
    assert status.document["auth"] == {"source": "static"}  # the rest, as sent
    nodes = r.parse_nodes(NODES)
    assert [n.address for n in nodes.nodes] == ["127.0.0.1:7400", None]
    assert nodes.nodes[1].probe == r.PeerProbe(connected=False, last_ok_ms=None, error="refused")
    page = r.parse_kv_page({"keys": ["a"], "cursor": "c"})
    assert page == r.KVPage(keys=("a",), cursor="c")
    with pytest.raises(ProtocolError):
        r.parse_kv_page({"keys": ["a", 2], "cursor": None})


def test_results_with_secrets_never_show_them() -> None:
    share = r.parse_guardian_share(CASES[-2][1])
    assert "sealed" not in repr(share)
    item = r.parse_kv_item(
        {"key": "k", "value": b"hush", "version": "v", "updated_at_ms": 1, "expires_at_ms": None}
    )
    assert "hush" not in repr(item)


async def test_both_clients_return_the_same_typed_results(
    start_server: Any, wallets: Wallets
) -> None:
    srv = await start_server()
    async with await Client.connect(
        srv.tcp, signer=wallets.app1, expect_wallet=wallets.node.wallet
    ) as kms:
        health = await kms.health()
        nodes = await kms.nodes()
        put = await kms.kv_put("typed/k", b"v")
        page = await kms.kv_list(prefix="typed/")
        status = await kms.status()
        deleted = await kms.kv_delete("typed/k", if_version=put.version)

    def blocking_side() -> tuple[r.Health, r.Nodes, r.KVPage, r.Status]:
        with BlockingClient.connect(
            srv.tcp, signer=wallets.app1, expect_wallet=wallets.node.wallet
        ) as blocking:
            return blocking.health(), blocking.nodes(), blocking.kv_list(), blocking.status()

    b_health, b_nodes, b_page, b_status = await trio.to_thread.run_sync(blocking_side)
    assert health == b_health == r.Health(status="ok")
    assert nodes == b_nodes and nodes.self_wallet == wallets.node.wallet
    assert page.keys == ("typed/k",) and b_page.keys == ()
    assert deleted.deleted is True and deleted.key == "typed/k"
    assert status.ready is True and status.node.wallet == wallets.node.wallet
    assert b_status.store.live == 0  # the delete is a tombstone now
    # The test registry lists the node as an operator without an instance: nothing to dial.
    [entry] = nodes.nodes
    assert entry.wallet == wallets.node.wallet and entry.address is None


def test_downstream_mypy_strict_sees_the_types(tmp_path: Path) -> None:
    # An app's environment with novakms installed in its site-packages (a bare venv whose
    # site-packages links to this package): there mypy applies PEP 561 and reads the
    # package's types only if it ships ``py.typed``.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    [site] = venv.glob("lib/python*/site-packages")
    (site / "novakms").symlink_to(Path(novakms.__file__).parent, target_is_directory=True)
    app = tmp_path / "app.py"
    app.write_text(
        textwrap.dedent(
            """
            from novakms.client import BlockingClient, KVPage

            def keys(kms: BlockingClient) -> KVPage:
                page = kms.kv_list(prefix="a/")
                reveal_type(page.cursor)
                return page

            def wrong(kms: BlockingClient) -> int:
                return kms.derive("p").key
            """
        )
    )
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--python-executable",
            str(venv / "bin" / "python"),
            str(app),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    # The types reach the app: the revealed type is the declared one, and a misuse is caught.
    assert re.search(r'Revealed type is "(builtins\.)?str \| None"', out.stdout), out.stdout
    assert 'Incompatible return value type (got "bytes", expected "int")' in out.stdout, out.stdout
