"""The KV store end to end: real server and sockets, both demo apps, isolation, CAS, TTL, quotas."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from novakms.client.aio import Client
from novakms.config import Limits
from novakms.errors import BadRequest, Conflict, NotFound, QuotaExceeded, TooLarge, Unauthenticated
from tests.harness.registry import Wallets


async def test_round_trip_for_both_apps(start_server: Any, wallets: Wallets) -> None:
    srv = await start_server()
    for signer, address in ((wallets.app1, srv.tcp), (wallets.app2, srv.unix)):
        async with await Client.connect(address, signer=signer) as kms:
            put = await kms.kv_put("db/password", b"s3cret-" + signer.wallet.encode())
            item = await kms.kv_get("db/password")
            assert item.value == b"s3cret-" + signer.wallet.encode()
            assert item.version == put.version and item.updated_at_ms == put.updated_at_ms
            assert item.expires_at_ms is None
            await kms.kv_put("db/user", b"admin")
            await kms.kv_put("other", b"x")
            assert (await kms.kv_list(prefix="db/")).keys == ("db/password", "db/user")
            assert (await kms.kv_delete("db/user")).deleted is True
            with pytest.raises(NotFound):
                await kms.kv_get("db/user")
            assert (await kms.kv_list()).keys == ("db/password", "other")
    # Stored values are sealed: no plaintext anywhere in the node's records.
    assert srv.node.store is not None
    for record in srv.node.store.records():
        assert record.sealed is None or b"s3cret" not in record.sealed


async def test_apps_are_isolated(start_server: Any, wallets: Wallets) -> None:
    srv = await start_server()
    async with (
        await Client.connect(srv.tcp, signer=wallets.app1) as a,
        await Client.connect(srv.tcp, signer=wallets.app2) as b,
    ):
        await a.kv_put("shared-name", b"A's secret")
        # B sees nothing of A: not by get, list or delete, and B's write does not touch A's.
        with pytest.raises(NotFound):
            await b.kv_get("shared-name")
        assert (await b.kv_list()).keys == ()
        with pytest.raises(NotFound):
            await b.kv_delete("shared-name")
        a_version = (await a.kv_get("shared-name")).version
        with pytest.raises(Conflict):  # A's version token means nothing in B's namespace
            await b.kv_put("shared-name", b"B", if_version=a_version)
        await b.kv_put("shared-name", b"B's secret")
        assert (await a.kv_get("shared-name")).value == b"A's secret"
        assert (await b.kv_get("shared-name")).value == b"B's secret"
        await b.kv_delete("shared-name")
        assert (await a.kv_get("shared-name")).value == b"A's secret"


async def test_compare_and_set(start_server: Any, wallets: Wallets) -> None:
    srv = await start_server()
    async with await Client.connect(srv.tcp, signer=wallets.app1) as kms:
        first = await kms.kv_put("counter", b"1", if_version="absent")
        with pytest.raises(Conflict):
            await kms.kv_put("counter", b"x", if_version="absent")
        second = await kms.kv_put("counter", b"2", if_version=first.version)
        assert second.version != first.version
        with pytest.raises(Conflict):  # stale token
            await kms.kv_put("counter", b"3", if_version=first.version)
        with pytest.raises(Conflict):
            await kms.kv_delete("counter", if_version=first.version)
        assert (await kms.kv_get("counter")).value == b"2"  # nothing changed by the conflicts
        await kms.kv_delete("counter", if_version=second.version)
        await kms.kv_put("counter", b"again", if_version="absent")  # deleted counts as absent


async def test_ttl_expires_end_to_end(start_server: Any, wallets: Wallets) -> None:
    srv = await start_server(limits=Limits(sweep_interval=0.05))
    async with await Client.connect(srv.tcp, signer=wallets.app1) as kms:
        put = await kms.kv_put("session", b"token", ttl_ms=300)
        item = await kms.kv_get("session")
        assert item.expires_at_ms == put.expires_at_ms
        with trio.fail_after(10):
            while True:
                try:
                    await kms.kv_get("session")
                except NotFound:
                    break
                await trio.sleep(0.05)
        assert (await kms.kv_list()).keys == ()
        # The sweeper purged the value itself, not just hid it.
        assert srv.node.store is not None
        with trio.fail_after(10):
            while (
                record := srv.node.store.record(1, "session")
            ) is not None and record.sealed is not None:
                await trio.sleep(0.05)


async def test_sizes(start_server: Any, wallets: Wallets) -> None:
    srv = await start_server(limits=Limits(max_value_bytes=1000, max_frame=64 * 1024))
    async with await Client.connect(srv.tcp, signer=wallets.app1) as kms:
        await kms.kv_put("k" * 512, b"v" * 1000)
        with pytest.raises(TooLarge):
            await kms.kv_put("k" * 513, b"v")
        with pytest.raises(TooLarge):
            await kms.kv_put("ok", b"v" * 1001)
        with pytest.raises(TooLarge):  # 4 bytes per character: 129 characters exceed 512 bytes
            await kms.kv_put("\U0001f511" * 129, b"v")
        assert (await kms.kv_list()).keys == ("k" * 512,)


@pytest.mark.parametrize(
    ("op", "args"),
    [
        ("kv.put", {"key": "k"}),
        ("kv.put", {"key": "k", "value": "text, not bytes"}),
        ("kv.put", {"key": 5, "value": b"v"}),
        ("kv.put", {"key": "", "value": b"v"}),
        ("kv.put", {"key": "a\x00b", "value": b"v"}),
        ("kv.put", {"key": "k", "value": b"v", "ttl_ms": 0}),
        ("kv.put", {"key": "k", "value": b"v", "ttl_ms": -5}),
        ("kv.put", {"key": "k", "value": b"v", "if_version": 3}),
        ("kv.put", {"key": "k", "value": b"v", "app_id": 2}),
        ("kv.put", {"key": "k", "value": b"v", "namespace": "other"}),
        ("kv.get", {}),
        ("kv.get", {"key": "k", "extra": 1}),
        ("kv.delete", {"key": "k", "if_version": "absent"}),
        ("kv.list", {"limit": 0}),
        ("kv.list", {"limit": 1001}),
        ("kv.list", {"cursor": "%%%not-base64%%%"}),
        ("kv.list", {"prefix": 7}),
    ],
)
async def test_malformed_arguments_store_nothing(
    start_server: Any, wallets: Wallets, op: str, args: dict[str, Any]
) -> None:
    srv = await start_server()
    async with await Client.connect(srv.tcp, signer=wallets.app1) as kms:
        with pytest.raises(BadRequest):
            await kms.call(op, args)
        assert (await kms.kv_list()).keys == ()
    assert srv.node.store is not None and srv.node.store.records() == []


async def test_anonymous_cannot_use_the_store(start_server: Any) -> None:
    srv = await start_server()
    async with await Client.connect(srv.tcp) as kms:
        for op, args in (
            ("kv.get", {"key": "k"}),
            ("kv.put", {"key": "k", "value": b"v"}),
            ("kv.list", {}),
        ):
            with pytest.raises(Unauthenticated):
                await kms.call(op, args)


async def test_list_paging_visits_every_key_once(start_server: Any, wallets: Wallets) -> None:
    srv = await start_server()
    async with await Client.connect(srv.tcp, signer=wallets.app1) as kms:
        names = sorted(f"item/{i:03d}" for i in range(57))
        for name in names:
            await kms.kv_put(name, b"v")
        await kms.kv_put("zzz-other-prefix", b"v")
        seen: list[str] = []
        cursor = None
        while True:
            page = await kms.kv_list(prefix="item/", limit=10, cursor=cursor)
            seen += page.keys
            cursor = page.cursor
            if cursor is None:
                break
        assert seen == names


async def test_quota_reject_mode(start_server: Any, wallets: Wallets) -> None:
    srv = await start_server(limits=Limits(app_quota_bytes=2000, record_overhead_bytes=128))
    async with await Client.connect(srv.tcp, signer=wallets.app1) as kms:
        await kms.kv_put("a", b"x" * 800)
        await kms.kv_put("b", b"x" * 800)
        with pytest.raises(QuotaExceeded):
            await kms.kv_put("c", b"x" * 800)
        assert (await kms.kv_list()).keys == ("a", "b")
        await kms.kv_put("a", b"x" * 100)  # shrinking an existing value is always possible
        await kms.kv_put("c", b"x" * 600)
    async with await Client.connect(srv.tcp, signer=wallets.app2) as kms:  # app 2 has its own quota
        await kms.kv_put("a", b"x" * 800)


async def test_quota_evict_mode(start_server: Any, wallets: Wallets) -> None:
    srv = await start_server(
        limits=Limits(app_quota_bytes=2000, record_overhead_bytes=128, quota_mode="evict")
    )
    async with await Client.connect(srv.tcp, signer=wallets.app1) as kms:
        await kms.kv_put("old", b"x" * 800)
        await kms.kv_put("recent", b"x" * 800)
        await kms.kv_get("old")  # now "recent" is the least recently used
        await kms.kv_put("new", b"x" * 800)
        assert (await kms.kv_list()).keys == ("new", "old")
        assert srv.node.store is not None
        evicted = srv.node.store.record(1, "recent")
        assert evicted is not None and evicted.tombstone  # a tombstone, ready to replicate
        with pytest.raises(QuotaExceeded):  # larger than the whole quota: nothing to evict helps
            await kms.kv_put("huge", b"x" * 5000)
        assert (await kms.kv_list()).keys == ("new", "old")


async def test_status_reports_store_counts_without_contents(
    start_server: Any, wallets: Wallets
) -> None:
    srv = await start_server()
    async with await Client.connect(srv.tcp, signer=wallets.app1) as kms:
        await kms.kv_put("k1", b"secret-value")
        await kms.kv_put("k2", b"secret-value")
        await kms.kv_delete("k2")
        status = await kms.call("status")
    assert status["store"]["live"] == 1 and status["store"]["tombstones"] == 1
    assert "k1" not in repr(status) and "secret-value" not in repr(status)
