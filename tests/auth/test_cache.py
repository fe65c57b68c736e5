"""The authorization cache: expiry, negative entries, events updating exactly what they touch."""

from __future__ import annotations

import pytest

from novakms.auth import policy
from novakms.auth.cache import AuthCache, ChainEvent
from novakms.auth.model import App, AppStatus, AppVersion, Instance, InstanceStatus, VersionStatus
from novakms.errors import Forbidden

W1, W2, W3 = ("0x" + c * 40 for c in "123")


def inst(wallet: str, instance_id: int, app_id: int = 1, version_id: int = 1) -> Instance:
    return Instance(
        instance_id=instance_id,
        app_id=app_id,
        version_id=version_id,
        wallet=wallet,
        zk_verified=True,
        status=InstanceStatus.ACTIVE,
    )


def filled(now: float = 0.0) -> AuthCache:
    cache = AuthCache(ttl=100, negative_ttl=5)
    cache.put_instance(W1, inst(W1, 1), now)
    cache.put_instance(W2, inst(W2, 2, version_id=2), now)
    cache.put_instance(W3, None, now)
    cache.put_app(App(app_id=1, status=AppStatus.ACTIVE), now)
    cache.put_version(AppVersion(app_id=1, version_id=1, status=VersionStatus.ENROLLED), now)
    cache.put_version(AppVersion(app_id=1, version_id=2, status=VersionStatus.ENROLLED), now)
    return cache


def decide(cache: AuthCache, wallet: str, now: float = 1.0) -> str:
    entry = cache.instance(wallet, now)
    assert entry is not None
    i = entry.instance
    try:
        policy.authorize_app(
            wallet=wallet,
            instance=i,
            app=None if i is None else cache.app(i.app_id, now),
            version=None if i is None else cache.version(i.app_id, i.version_id, now),
        )
    except Forbidden as exc:
        return str(exc.details["reason"])
    return "ok"


def event(name: str, block: int = 1, **args: object) -> ChainEvent:
    return ChainEvent(name=name, args=dict(args), block=block)


def test_expiry_and_negative_ttl() -> None:
    cache = filled()
    assert cache.instance(W1, 99.9) is not None and cache.instance(W1, 100) is None
    assert cache.instance(W3, 4.9) is not None and cache.instance(W3, 5) is None
    assert cache.app(1, 100) is None and cache.version(1, 1, 100) is None


def test_version_revocation_touches_only_that_version() -> None:
    cache = filled()
    assert cache.apply(event("VersionStatusChanged", appId=1, versionId=1, newStatus=2))
    assert decide(cache, W1) == "version_revoked"
    assert decide(cache, W2) == "ok"


def test_app_and_instance_events() -> None:
    cache = filled()
    assert cache.apply(event("InstanceStatusChanged", instanceId=2, newStatus=1))
    assert decide(cache, W2) == "instance_not_active" and decide(cache, W1) == "ok"
    assert cache.apply(event("AppStatusChanged", appId=1, newStatus=1, updatedBy=W1))
    assert decide(cache, W1) == "app_not_active"
    assert not cache.apply(
        event("AppStatusChanged", appId=9, newStatus=1, updatedBy=W1)
    )  # not cached


def test_registration_clears_negative_entries_only() -> None:
    cache = filled()
    assert cache.apply(
        event(
            "InstanceRegistered",
            instanceId=5,
            appId=1,
            versionId=1,
            teeWalletAddress=W3.upper()[:2] + W3[2:],
            instanceUrl="https://x",
            zkVerified=True,
        )
    )
    assert cache.instance(W3, 1) is None  # forgotten: looked up again on the next request
    assert not cache.apply(event("InstanceWalletBound", teeWalletAddress=W1, instanceId=1, appId=1))
    assert cache.instance(W1, 1) is not None


def test_operators_and_pin() -> None:
    cache = filled()
    assert not cache.apply(
        event("OperatorAdded", operator=W1, appId=3, versionId=1, instanceId=1)
    )  # set unknown
    cache.put_operators([W1], 0)
    assert cache.apply(event("OperatorAdded", operator=W2, appId=3, versionId=1, instanceId=2))
    assert cache.apply(event("OperatorRemoved", operator=W1, appId=3, versionId=1, instanceId=1))
    assert cache.operator_set(1) == frozenset({W2})
    assert (
        cache.apply(event("MasterSecretHashSet", hash=b"\x01" * 32))
        and cache.master_secret_hash == b"\x01" * 32
    )
    assert cache.apply(event("MasterSecretHashReset")) and cache.master_secret_hash is None


def test_stale_lists_what_needs_refreshing_and_bounds() -> None:
    cache = filled()
    wallets, apps, versions = cache.stale(50, within=60)
    assert (
        sorted(wallets) == sorted([W1, W2]) and apps == [1] and len(versions) == 2
    )  # W3 negative: not refreshed
    assert cache.stale(0, within=10) == ([], [], [])
    small = AuthCache(ttl=10, negative_ttl=1, max_wallets=2)
    for wallet in (W1, W2, W3):
        small.put_instance(wallet, None, 0)
    assert small.sizes()["unknown_wallets"] == 2
    with pytest.raises(ValueError):
        AuthCache(ttl=0, negative_ttl=1)


def test_zeroed_instance_counts_as_unknown() -> None:
    cache = AuthCache(ttl=10, negative_ttl=1)
    cache.put_instance(
        W1,
        Instance(
            instance_id=0,
            app_id=0,
            version_id=0,
            wallet="0x" + "00" * 20,
            zk_verified=False,
            status=InstanceStatus.ACTIVE,
        ),
        0,
    )
    entry = cache.instance(W1, 0.5)
    assert entry is not None and entry.instance is None and cache.instance(W1, 1) is None
