"""A rolling upgrade from KMS version 1 to version 2: the apps see no difference.

Real nodes on a real anvil, real sockets, and the procedure of docs/operations.md ("Upgrading to
a new KMS version"): enroll version 2, start version-2 nodes one at a time and wait until each
serves, deprecate version 1, stop the version-1 nodes one at a time (``wait-safe``'s poll, the
SIGTERM path, the instance ``STOPPED`` on chain), then revoke version 1. What the apps saw
before — KV values with their versions, derived keys, CA certificates, the secret fingerprint —
must be byte-identical on every version-2 node afterwards. Every wait is on state, never on
elapsed time.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
import trio

from novakms.chain import abi
from novakms.cli.admin import wait_safe_to_stop
from novakms.client.aio import Client
from novakms.client.results import KVItem, PutResult
from novakms.crypto.signer import LocalSigner
from novakms.dev.anvil import AnvilProcess
from novakms.dev.world import enroll_version
from novakms.errors import NotFound, NovaKMSError, Unavailable
from novakms.server.node import Node
from tests.harness.build import replicator
from tests.harness.world import APP, LIMITS, Cluster, open_world, signer, until

APP2 = signer("app2")
APPS = {1: APP, 2: APP2}  # app id -> its instance's wallet (the world below registers both)

# Frames small enough that the two apps' data takes more than one snapshot chunk.
UPGRADE_LIMITS = dataclasses.replace(LIMITS, max_frame=49_152, max_value_bytes=32_768)
# Several keys per app: binary and text values, a large one (two of them fill more than a
# frame), an overwritten key (its newer value must win), a deleted one (must stay deleted).
VALUES: dict[str, bytes] = {
    "db/password": b"s3cret",
    "api/token": hashlib.sha256(b"token").digest() * 4,
    "config/ключ ü": "ünïcode välue".encode(),
    "blob/large": bytes(range(256)) * 128,  # 32 KiB
    "overwritten": b"first",
    "cas/counter": b"0",
}
OVERWRITTEN = b"second"
DELETED = "deleted"
# (path, context, length) per derive call; each app derives all of them.
DERIVES: list[tuple[str, str | None, int | None]] = [
    ("disk/encryption", None, None),
    ("db/tenant", "tenant-7", None),
    ("signing/ed25519", "", 64),
    ("tls/session", "2024-06", 16),
]
STOPPED = 1  # NovaAppRegistry InstanceStatus


@dataclass(frozen=True, slots=True)
class Member:
    signer: LocalSigner
    port: int
    node: Node

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass(slots=True)
class Seen:
    """What apps and operators get from one node."""

    kv: dict[tuple[int, str], KVItem | str]  # an error text instead of the item
    listed: dict[int, list[str]]
    derived: dict[tuple[int, str, str | None, int | None], bytes | str]
    ca: dict[int, str]
    fingerprint: str | None


@pytest.fixture
async def world(
    nursery: trio.Nursery, anvil: AnvilProcess
) -> AsyncIterator[tuple[Cluster, list[tuple[LocalSigner, int]]]]:
    """Like ``test_bootstrap_e2e.world``, with two apps (ids 1 and 2; the KMS app is 3)."""
    wallets = [APPS[1].wallet, APPS[2].wallet]
    async with open_world(nursery, anvil, app_wallets=wallets) as opened:
        yield opened


def serving(node: Node) -> bool:
    return node.master_secret is not None and not node.syncing


async def status(member: Member) -> Mapping[str, Any]:
    async with await Client.connect(member.address, expect_wallet=member.node.wallet) as kms:
        return await kms.call("status")


async def nodes_view(member: Member) -> dict[str, Mapping[str, Any]]:
    async with await Client.connect(member.address, expect_wallet=member.node.wallet) as kms:
        return {n["wallet"]: n for n in (await kms.call("nodes"))["nodes"]}


async def app_client(member: Member, app_id: int) -> Client:
    return await Client.connect(
        member.address, signer=APPS[app_id], expect_wallet=member.node.wallet
    )


async def send(cluster: Cluster, function: str, *args: Any) -> int:
    """One NovaAppRegistry transaction by the owner; returns its block number."""
    receipt = await cluster.admin.send(
        cluster.chain.nova_app_registry, abi.nova_app_registry().encode_call(function, *args)
    )
    return int(str(receipt["blockNumber"]), 16)


async def applied(members: list[Member], block: int) -> None:
    """Wait until every member's chain poller has applied the events of ``block``."""
    with trio.fail_after(60):
        for member in members:
            while ((await status(member))["auth"]["last_block"] or 0) < block:
                await trio.sleep(0.1)


async def observe(member: Member, keys: Mapping[int, list[str]]) -> Seen:
    """Read what the apps stored (``keys`` per app id) or can obtain from one node, over real
    connections."""
    seen = Seen(kv={}, listed={}, derived={}, ca={}, fingerprint=None)
    for app_id in APPS:
        async with await app_client(member, app_id) as kms:
            for key in keys[app_id]:
                try:
                    seen.kv[app_id, key] = await kms.kv_get(key)
                except NotFound:
                    seen.kv[app_id, key] = "not_found"
                except NovaKMSError as exc:
                    seen.kv[app_id, key] = f"{exc.code}/{exc.details.get('reason')}"
            listed = await kms.kv_list(limit=1000)
            seen.listed[app_id] = list(listed.keys)
            for path, context, length in DERIVES:
                try:
                    result = await kms.derive(path, context=context, length=length)
                    seen.derived[app_id, path, context, length] = result.key
                except NovaKMSError as exc:
                    seen.derived[app_id, path, context, length] = exc.code
            seen.ca[app_id] = await kms.cert_ca(app_id)
    seen.fingerprint = (await status(member))["secret"]["fingerprint"]
    return seen


def short(data: bytes | str) -> str:
    if isinstance(data, str):
        return data
    return f"{len(data)} bytes sha256:{hashlib.sha256(data).hexdigest()[:16]}"


def describe_item(item: KVItem | str) -> str:
    if isinstance(item, str):
        return item
    return (
        f"value {short(item.value)}, version {item.version}, "
        f"updated_at_ms {item.updated_at_ms}, expires_at_ms {item.expires_at_ms}"
    )


def remember(seen: Seen, app_id: int, value: bytes, answer: PutResult) -> None:
    """Add a write (``kv.put``'s answer) to what the apps must see from now on."""
    key = answer.key
    seen.kv[app_id, key] = KVItem(
        key, value, answer.version, answer.updated_at_ms, answer.expires_at_ms
    )
    seen.listed[app_id] = sorted({*seen.listed[app_id], key})


def differences(before: Seen, after: Seen) -> list[str]:
    """Every way ``after`` differs from ``before``, one readable line each."""
    problems = []
    for where, item in before.kv.items():
        now = after.kv.get(where, "missing")
        if now != item:
            problems.append(
                f"kv app {where[0]} key {where[1]!r}: was {describe_item(item)}; "
                f"now {describe_item(now)}"
            )
    for app_id, keys in before.listed.items():
        if after.listed.get(app_id) != keys:
            problems.append(f"kv.list app {app_id}: was {keys}; now {after.listed.get(app_id)}")
    for call, key in before.derived.items():
        now_key = after.derived.get(call, "missing")
        if now_key != key:
            problems.append(f"derive {call}: was {short(key)}; now {short(now_key)}")
    for app_id, pem in before.ca.items():
        if after.ca.get(app_id) != pem:
            problems.append(f"cert.ca app {app_id}: the PEM differs ({short(pem)} before)")
    if after.fingerprint != before.fingerprint:
        problems.append(f"fingerprint: was {before.fingerprint}; now {after.fingerprint}")
    return problems


async def check_unchanged(members: list[Member], before: Seen, when: str) -> None:
    report = []
    keys = {app_id: [key for a, key in before.kv if a == app_id] for app_id in APPS}
    for member in members:
        problems = differences(before, await observe(member, keys))
        report += [f"  {member.address} ({member.node.wallet}): {p}" for p in problems]
    assert not report, f"{when}, what the apps see changed:\n" + "\n".join(report)


async def check_serving(member: Member) -> None:
    """Over the wire: ready, caught up (a complete snapshot, then every peer), not degraded,
    the pinned secret."""
    report = await status(member)
    state = {
        "ready": report["ready"],
        "syncing": report["syncing"],
        "degraded": report["degraded"],
        "catch_up": report["catch_up"]["state"],
        "snapshot": report["cluster"]["snapshot"]["state"],
        "matches_pin": report["secret"]["matches_pin"],
    }
    expected = {
        "ready": True,
        "syncing": False,
        "degraded": None,
        "catch_up": "serving",
        "snapshot": "done",
        "matches_pin": True,
    }
    assert state == expected, f"{member.address} does not serve cleanly: {state}"


async def join_v2(cluster: Cluster, label: str, record_source: Node) -> Member:
    """Register and start one version-2 node; check the moment it serves that it holds every
    record ``record_source`` (a node serving the whole time) holds."""
    who = signer(label)
    node, port = await cluster.join(who, version_id=2, limits=UPGRADE_LIMITS)
    with trio.fail_after(120):
        while not serving(node):
            await trio.sleep(0)  # catch the very first moment it serves
    # No await since the loop ended: this is exactly what it held when it started serving.
    store, source = node.store, record_source.store
    assert store is not None and source is not None
    held = {(r.app_id, r.key): r for r in store.records()}
    expected = {(r.app_id, r.key): r for r in source.records()}
    missing = sorted(k for k in expected if held.get(k) != expected[k])
    assert not missing, (
        f"version-2 node {node.wallet} started serving without (the same version of) records "
        f"{record_source.wallet} holds, as if its catch-up missed them: {missing}"
    )
    member = Member(who, port, node)
    await check_serving(member)
    snapshot = (await status(member))["cluster"]["snapshot"]
    assert snapshot["chunks"] >= 2, f"the data fit one snapshot chunk: {snapshot}"
    return member


async def peers_are(running: list[Member]) -> None:
    """Wait until every running member's peers are exactly the other running members."""
    wallets = {m.node.wallet for m in running}

    def settled() -> bool:
        return all(set(replicator(m.node).links) == wallets - {m.node.wallet} for m in running)

    await until(settled, seconds=60)


async def wait_safe(member: Member) -> None:
    """``novakms admin wait-safe``: poll ``status`` over fresh anonymous connections."""

    async def fetch_status() -> Mapping[str, Any]:
        async with await Client.connect(member.address, timeout=5.0) as kms:
            return await kms.call("status")

    try:
        await wait_safe_to_stop(fetch_status, timeout=120.0, interval=0.1)
    except Unavailable as exc:
        pytest.fail(
            f"{member.address} never reported safe_to_stop "
            f"(last reason {exc.details.get('last_reason')}): {dict(await status(member))}"
        )


async def test_a_rolling_upgrade_to_a_new_kms_version_changes_nothing_apps_see(
    world: Any,
) -> None:
    cluster, signers = world
    chain = cluster.chain

    # -- version 1: three nodes serving, the secret pinned (docs: "First deploy and pin") ----
    old = [
        Member(s, port, await cluster.start(s, port, limits=UPGRADE_LIMITS)) for s, port in signers
    ]
    await until(lambda: all(serving(m.node) and replicator(m.node).peer_count() == 2 for m in old))
    fingerprint = (await status(old[0]))["secret"]["fingerprint"]
    await cluster.pin(bytes.fromhex(fingerprint[2:]))
    with trio.fail_after(60):
        for member in old:
            while not (await status(member))["auth"]["master_secret_pinned"]:
                await trio.sleep(0.1)

    # -- the apps' data: writes with acknowledgements, spread over the three nodes ------------
    for app_id in APPS:
        for i, (key, value) in enumerate(VALUES.items()):
            async with await app_client(old[i % 3], app_id) as kms:
                assert (await kms.kv_put(key, value, acks=2)).acked == 2
        async with await app_client(old[1], app_id) as kms:
            assert (await kms.kv_put("overwritten", OVERWRITTEN, acks=2)).acked == 2
            await kms.kv_put(DELETED, b"gone soon", acks=2)
            await kms.kv_delete(DELETED)
    stores = [m.node.store for m in old]
    await until(
        lambda: all(
            (r := s.record(a, DELETED)) is not None and r.sealed is None
            for s in stores
            if s is not None
            for a in APPS
        )
    )
    before = await observe(old[0], {app_id: [*VALUES, DELETED] for app_id in APPS})
    for app_id in APPS:  # sanity: what was written, and every version-1 node agrees
        overwritten = before.kv[app_id, "overwritten"]
        assert isinstance(overwritten, KVItem) and overwritten.value == OVERWRITTEN
        assert before.kv[app_id, DELETED] == "not_found"
        assert before.listed[app_id] == sorted(VALUES)
    assert before.fingerprint == fingerprint
    await check_unchanged(old[1:], before, "before the upgrade (version-1 nodes disagree)")

    # -- version 2: enrolled, three new instances (new wallets), each serving before the next --
    await enroll_version(cluster.admin, chain.nova_app_registry, chain.kms_app_id, "kms2")
    new: list[Member] = []
    for i in range(3):
        new.append(await join_v2(cluster, f"node-v2-{i}", record_source=old[0].node))
        await peers_are(old + new)
    view = await nodes_view(new[0])
    assert {w: n["version_id"] for w, n in view.items()} == {
        **{m.node.wallet: 1 for m in old},
        **{m.node.wallet: 2 for m in new},
    }

    # -- version 1 deprecated: still serving and still a peer ---------------------------------
    await applied(old + new, await send(cluster, "deprecateVersion", chain.kms_app_id, 1))
    view = await nodes_view(new[0])
    assert all(view[m.node.wallet]["authorized"] for m in old + new), view
    async with await app_client(old[0], 1) as kms:
        answer = await kms.kv_put("during/deprecated", b"to five peers", acks=5)
    assert answer.acked == 5
    remember(before, 1, b"to five peers", answer)

    # -- the version-1 nodes stopped one at a time ---------------------------------------------
    running = old + new
    for i, member in enumerate(old):
        # A write this node alone holds until its next push, right before the procedure.
        async with await app_client(member, 2) as kms:
            answer = await kms.kv_put(f"during/{i}", b"on the node being stopped")
        remember(before, 2, b"on the node being stopped", answer)
        await wait_safe(member)
        instance_id = (await nodes_view(member))[member.node.wallet]["instance_id"]
        await cluster.shut_down(member.node)
        running = [m for m in running if m is not member]
        block = await send(cluster, "updateInstanceStatus", instance_id, STOPPED)
        await applied(running, block)
        await peers_are(running)
    assert running == new

    # -- only version 2 runs: everything the apps saw is unchanged, everywhere ------------------
    for member in new:
        await check_serving(member)
    await check_unchanged(new, before, "after the version-1 nodes stopped")

    # -- version 1 revoked once none runs: the new nodes do not notice ---------------------------
    await applied(new, await send(cluster, "revokeVersion", chain.kms_app_id, 1))
    view = await nodes_view(new[0])
    assert sorted(view) == sorted(m.node.wallet for m in new)  # stopped: no longer operators
    assert all(n["authorized"] and n["version_id"] == 2 for n in view.values()), view
    assert all(replicator(m.node).peer_count() == 2 for m in new)
    for member in new:
        await check_serving(member)
    await check_unchanged(new, before, "after version 1 was revoked")
    # A compare-and-set with the version token a client got from version 1 still works, and
    # replicates among the version-2 nodes.
    cas = before.kv[1, "cas/counter"]
    assert isinstance(cas, KVItem)
    async with await app_client(new[2], 1) as kms:
        answer = await kms.kv_put("cas/counter", b"1", if_version=cas.version, acks=2)
    assert answer.acked == 2
    for member in new:
        async with await app_client(member, 1) as kms:
            assert (await kms.kv_get("cas/counter")).value == b"1"
