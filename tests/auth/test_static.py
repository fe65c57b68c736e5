"""The static registry: JSON parsing, lookups, mutators, and authorization through the source."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from novakms.auth.guardians import GuardianSet, no_guardians
from novakms.auth.model import (
    ZERO_ADDRESS,
    App,
    AppStatus,
    AppVersion,
    Identity,
    Instance,
    InstanceStatus,
    VersionStatus,
)
from novakms.auth.source import Registry
from novakms.auth.static import StaticRegistry
from novakms.errors import Forbidden
from tests.auth.registry_documents import APP_WALLET, KMS_WALLET, KMS_WALLET_2, OWNER, document


@pytest.fixture
def registry() -> StaticRegistry:
    return StaticRegistry.from_json(document())


# ---------------------------------------------------------------------------------- JSON


def test_round_trip() -> None:
    doc = document()
    registry = StaticRegistry.from_json(doc)
    assert registry.to_json() == doc
    assert StaticRegistry.from_json(registry.to_json()).to_json() == doc
    json.dumps(registry.to_json())  # JSON-able


def test_optional_fields_default_and_addresses_are_lowercased() -> None:
    registry = StaticRegistry.from_json(
        {
            "apps": [
                {
                    "app_id": 7,
                    "status": "INACTIVE",
                    "versions": [{"version_id": 1, "status": "REVOKED"}],
                }
            ],
            "instances": [
                {
                    "instance_id": 9,
                    "app_id": 7,
                    "version_id": 1,
                    "wallet": "0x" + "AbCdEf0123" * 4,
                    "zk_verified": False,
                    "status": "FAILED",
                }
            ],
        }
    )
    assert registry.kms_app_id is None
    assert registry.operators == frozenset()
    assert registry.app(7) == App(app_id=7, status=AppStatus.INACTIVE, owner=ZERO_ADDRESS)
    wallet = "0x" + "abcdef0123" * 4
    assert registry.instance_by_wallet(wallet) == Instance(
        instance_id=9,
        app_id=7,
        version_id=1,
        wallet=wallet,
        zk_verified=False,
        status=InstanceStatus.FAILED,
        instance_url="",
    )
    assert StaticRegistry.from_json({}).to_json() == {
        "kms_app_id": None,
        "operators": [],
        "apps": [],
        "instances": [],
    }
    assert StaticRegistry.from_json({"apps": [{"app_id": 1, "status": "ACTIVE"}]}).to_json()[
        "apps"
    ] == [{"app_id": 1, "status": "ACTIVE", "owner": ZERO_ADDRESS, "versions": []}]


def test_load_reads_file(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    path.write_text(json.dumps(document()), encoding="utf-8")
    assert StaticRegistry.load(path).to_json() == document()
    assert StaticRegistry.load(str(path)).to_json() == document()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{", "registry.json: "),
        ('{"apps": [], "apps": []}', "duplicate JSON key 'apps'"),
        ('{"kms_app_id": NaN}', "NaN"),
        ('{"kms_app_id": 0}', "kms_app_id: 0 is out of range"),
    ],
)
def test_load_rejects_bad_files(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "registry.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=match):
        StaticRegistry.load(path)


def test_load_rejects_bad_utf8(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    path.write_bytes(b'{"apps": "\xff"}')
    with pytest.raises(ValueError, match=r"registry\.json: .*utf-8"):
        StaticRegistry.load(path)


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        StaticRegistry.load(tmp_path / "nope.json")


def mutate(path: str, value: Any) -> dict[str, Any]:
    """A copy of the valid document with the value at ``path`` replaced (or deleted)."""
    doc = copy.deepcopy(document())
    parts: list[Any] = [int(p) if p.isdigit() else p for p in path.split(".")]
    target: Any = doc
    for part in parts[:-1]:
        target = target[part]
    if value is DELETE:
        del target[parts[-1]]
    else:
        target[parts[-1]] = value
    return doc


DELETE = object()
BAD_CASES: list[tuple[object, str]] = [
    # shapes and unknown / missing keys
    ([], r"^registry: expected an object, got list$"),
    (mutate("extra", 1), r"^registry: unknown key 'extra'"),
    (mutate("apps.0.name", "x"), r"^apps\[0\]: unknown key 'name'"),
    (mutate("apps.0.versions.0.extra", 1), r"^apps\[0\]\.versions\[0\]: unknown key 'extra'"),
    (mutate("instances.0.teePubkey", "00"), r"^instances\[0\]: unknown key 'teePubkey'"),
    (mutate("apps.0.status", DELETE), r"^apps\[0\]: missing key 'status'"),
    (mutate("apps.1.versions.0.version_id", DELETE), r"missing key 'version_id'"),
    (mutate("instances.2.zk_verified", DELETE), r"^instances\[2\]: missing key 'zk_verified'"),
    (mutate("apps", {}), r"^apps: expected an array, got dict$"),
    (mutate("operators", KMS_WALLET), r"^operators: expected an array, got str$"),
    (mutate("instances", None), r"^instances: expected an array"),
    (mutate("apps.0.versions", None), r"^apps\[0\]\.versions: expected an array"),
    (mutate("apps.0", 1), r"^apps\[0\]: expected an object, got int$"),
    # wrong types
    (mutate("kms_app_id", "1"), r"^kms_app_id: expected an integer, got str$"),
    (mutate("kms_app_id", True), r"^kms_app_id: expected an integer, got bool$"),
    (mutate("apps.0.app_id", 1.0), r"^apps\[0\]\.app_id: expected an integer, got float$"),
    (mutate("instances.0.instance_id", "1"), r"^instances\[0\]\.instance_id: expected an int"),
    (mutate("instances.0.app_id", None), r"^instances\[0\]\.app_id: expected an integer"),
    (mutate("instances.0.version_id", False), r"^instances\[0\]\.version_id: expected an int"),
    (mutate("instances.0.zk_verified", 1), r"^instances\[0\]\.zk_verified: expected a bool"),
    (mutate("instances.0.instance_url", 5), r"^instances\[0\]\.instance_url: expected a str"),
    (mutate("apps.0.status", 0), r"^apps\[0\]\.status: expected a status name, got int$"),
    # ranges
    (mutate("apps.0.app_id", 0), r"^apps\[0\]\.app_id: 0 is out of range"),
    (mutate("apps.0.app_id", -1), r"out of range"),
    (mutate("apps.0.app_id", 2**256), r"out of range"),
    (mutate("apps.0.versions.0.version_id", 0), r"version_id: 0 is out of range"),
    (mutate("instances.0.instance_id", 0), r"instance_id: 0 is out of range"),
    # statuses
    (mutate("apps.0.status", "active"), r"^apps\[0\]\.status: 'active' is not a AppStatus"),
    (mutate("apps.0.status", "ENROLLED"), r"is not a AppStatus \(one of ACTIVE, INACTIVE, REV"),
    (mutate("apps.1.versions.1.status", "ACTIVE"), r"^apps\[1\]\.versions\[1\]\.status: 'ACT"),
    (mutate("instances.0.status", "RUNNING"), r"^instances\[0\]\.status: 'RUNNING' is not a Ins"),
    # duplicates
    (mutate("apps.1.app_id", 1), r"^apps\[1\]: duplicate app id 1$"),
    (mutate("apps.1.versions.1.version_id", 1), r"^apps\[1\]\.versions\[1\]: duplicate version"),
    (mutate("instances.1.instance_id", 1), r"^instances\[1\]: duplicate instance id 1$"),
    (mutate("instances.1.wallet", KMS_WALLET), r"^instances\[1\]: duplicate wallet 0xbb"),
    (
        mutate("instances.1.wallet", KMS_WALLET.upper().replace("0X", "0x")),
        r"duplicate wallet",
    ),
    (mutate("operators", [KMS_WALLET, KMS_WALLET]), r"^operators\[1\]: duplicate operator"),
    # dangling references
    (mutate("instances.2.app_id", 5), r"^instances\[2\]: instance 3 points at app 5, which"),
    (mutate("instances.2.version_id", 3), r"points at version 3 of app 2, which does not"),
    # version 2 exists for app 2 but not for app 1
    (mutate("instances.0.version_id", 2), r"points at version 2 of app 1"),
    # addresses
    (mutate("instances.0.wallet", "0x1234"), r"^instances\[0\]\.wallet: '0x1234' is not an add"),
    (mutate("instances.0.wallet", "ab" * 20), r"is not an address"),
    (mutate("instances.0.wallet", "0x" + "g" * 40), r"is not an address"),
    (mutate("instances.0.wallet", " 0x" + "a" * 40), r"is not an address"),
    (mutate("instances.0.wallet", "0x" + "a" * 40 + "\n"), r"is not an address"),
    (mutate("instances.0.wallet", 5), r"is not an address"),
    (mutate("apps.0.owner", "0x"), r"^apps\[0\]\.owner: '0x' is not an address"),
    (mutate("operators", ["nope"]), r"^operators\[0\]: 'nope' is not an address"),
    # urls
    (mutate("instances.0.instance_url", "ftp://x"), r"must start with http:// or https://"),
]


@pytest.mark.parametrize(("data", "match"), BAD_CASES)
def test_from_json_rejects(data: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        StaticRegistry.from_json(data)


def test_constructor_validates_records() -> None:
    app = App(app_id=1, status=AppStatus.ACTIVE)
    version = AppVersion(app_id=1, version_id=1, status=VersionStatus.ENROLLED)
    instance = Instance(
        instance_id=1,
        app_id=1,
        version_id=1,
        wallet=APP_WALLET.upper().replace("0X", "0x"),
        zk_verified=True,
        status=InstanceStatus.ACTIVE,
    )
    registry = StaticRegistry(apps=[app], versions=[version], instances=[instance])
    assert registry.instance_by_wallet(APP_WALLET) is not None
    assert registry.instance(1) == Instance(
        instance_id=1,
        app_id=1,
        version_id=1,
        wallet=APP_WALLET,
        zk_verified=True,
        status=InstanceStatus.ACTIVE,
    )
    with pytest.raises(ValueError, match="duplicate app id 1"):
        StaticRegistry(apps=[app, app])
    with pytest.raises(ValueError, match="belongs to app 1, which does not exist"):
        StaticRegistry(versions=[version])
    with pytest.raises(ValueError, match="status"):
        StaticRegistry(apps=[App(app_id=1, status=1)])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="zk_verified must be a bool"):
        StaticRegistry(
            apps=[app],
            versions=[version],
            instances=[
                Instance(
                    instance_id=1,
                    app_id=1,
                    version_id=1,
                    wallet=APP_WALLET,
                    zk_verified=1,  # type: ignore[arg-type]
                    status=InstanceStatus.ACTIVE,
                )
            ],
        )


# ---------------------------------------------------------------------------------- lookups


def test_lookups(registry: StaticRegistry) -> None:
    assert registry.name == "static"
    assert registry.kms_app_id == 1
    assert registry.operators == {KMS_WALLET, KMS_WALLET_2}
    assert registry.is_operator(KMS_WALLET.upper().replace("0X", "0x"))
    assert not registry.is_operator(APP_WALLET)
    inst = registry.instance_by_wallet(APP_WALLET.upper().replace("0X", "0x"))
    assert inst is not None
    assert inst.instance_id == 3
    assert registry.instance_by_wallet("0x" + "00" * 20) is None
    assert registry.instance_by_wallet("garbage") is None
    assert registry.app(2) == App(app_id=2, status=AppStatus.ACTIVE, owner=OWNER)
    assert registry.app(3) is None
    assert registry.version(2, 1) == AppVersion(
        app_id=2, version_id=1, status=VersionStatus.DEPRECATED
    )
    assert registry.version(1, 2) is None
    assert registry.instance(4) is None


def test_describe(registry: StaticRegistry) -> None:
    summary = registry.describe()
    assert summary == {
        "source": "static",
        "kms_app_id": 1,
        "apps": 2,
        "versions": 3,
        "instances": 3,
        "operators": 2,
        "guardian_set_version": 0,
    }
    json.dumps(summary)


def test_is_an_authorization_source(registry: StaticRegistry) -> None:
    source: Registry = registry  # checked statically by mypy
    assert isinstance(source, Registry)


# ---------------------------------------------------------------------------------- mutators


def test_mutators(registry: StaticRegistry) -> None:
    registry.set_app_status(2, AppStatus.REVOKED)
    registry.set_version_status(2, 2, "DEPRECATED")
    registry.set_instance_status(3, InstanceStatus.STOPPED)
    registry.remove_operator(KMS_WALLET_2.upper().replace("0X", "0x"))
    registry.remove_operator(APP_WALLET)  # not an operator: no error
    registry.add_operator(APP_WALLET)
    doc = registry.to_json()
    assert doc["apps"][1]["status"] == "REVOKED"
    assert doc["apps"][1]["versions"][1]["status"] == "DEPRECATED"
    assert doc["instances"][2]["status"] == "STOPPED"
    assert doc["operators"] == sorted([KMS_WALLET, APP_WALLET])
    # the mutated registry still round-trips
    assert StaticRegistry.from_json(doc).to_json() == doc


def test_mutators_reject_unknown_ids_and_statuses(registry: StaticRegistry) -> None:
    with pytest.raises(KeyError, match="no app 9"):
        registry.set_app_status(9, AppStatus.ACTIVE)
    with pytest.raises(KeyError, match="no version 9 of app 2"):
        registry.set_version_status(2, 9, VersionStatus.REVOKED)
    with pytest.raises(KeyError, match="no instance 9"):
        registry.set_instance_status(9, InstanceStatus.FAILED)
    with pytest.raises(ValueError, match="not a AppStatus"):
        registry.set_app_status(2, "ENROLLED")
    with pytest.raises(ValueError, match="not a VersionStatus"):
        registry.set_version_status(2, 2, AppStatus.REVOKED)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a InstanceStatus"):
        registry.set_instance_status(3, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="duplicate operator"):
        registry.add_operator(KMS_WALLET)
    assert registry.to_json() == document()  # nothing was half-applied


def test_add_instance_at_runtime(registry: StaticRegistry) -> None:
    wallet = "0x" + "dd" * 20
    registry.add_instance(
        Instance(
            instance_id=4,
            app_id=2,
            version_id=1,
            wallet=wallet,
            zk_verified=True,
            status=InstanceStatus.ACTIVE,
        )
    )
    assert registry.instance_by_wallet(wallet) is not None
    with pytest.raises(ValueError, match="duplicate wallet"):
        registry.add_instance(
            Instance(
                instance_id=5,
                app_id=2,
                version_id=1,
                wallet=wallet,
                zk_verified=True,
                status=InstanceStatus.ACTIVE,
            )
        )
    assert registry.instance(5) is None


# ---------------------------------------------------------------------------------- authorize


async def forbidden_reason(call: Any, wallet: str) -> str:
    with pytest.raises(Forbidden) as info:
        await call(wallet)
    reason: str = info.value.details["reason"]
    return reason


async def test_authorize_app(registry: StaticRegistry) -> None:
    identity = await registry.authorize_app(APP_WALLET)
    assert identity == Identity(
        wallet=APP_WALLET, app_id=2, version_id=2, instance_id=3, role="app"
    )
    # a KMS node is an instance of the KMS app: a peer, never an app (issue 9, item 10)
    assert await forbidden_reason(registry.authorize_app, KMS_WALLET) == "kms_app"
    assert await forbidden_reason(registry.authorize_app, "0x" + "ee" * 20) == "unknown_wallet"
    assert await forbidden_reason(registry.authorize_app, "not a wallet") == "unknown_wallet"


async def test_revocations_take_effect_immediately(registry: StaticRegistry) -> None:
    registry.set_version_status(2, 2, VersionStatus.DEPRECATED)
    assert (await registry.authorize_app(APP_WALLET)).app_id == 2
    registry.set_version_status(2, 2, VersionStatus.REVOKED)
    assert await forbidden_reason(registry.authorize_app, APP_WALLET) == "version_revoked"
    registry.set_app_status(2, AppStatus.INACTIVE)
    assert await forbidden_reason(registry.authorize_app, APP_WALLET) == "app_not_active"
    registry.set_instance_status(3, "STOPPED")
    assert await forbidden_reason(registry.authorize_app, APP_WALLET) == "instance_not_active"
    # and back (the static registry allows any transition)
    registry.set_instance_status(3, "ACTIVE")
    registry.set_app_status(2, "ACTIVE")
    registry.set_version_status(2, 2, "ENROLLED")
    assert (await registry.authorize_app(APP_WALLET)).instance_id == 3


async def test_not_zk_verified_instance() -> None:
    doc = document()
    doc["instances"][2]["zk_verified"] = False
    registry = StaticRegistry.from_json(doc)
    assert await forbidden_reason(registry.authorize_app, APP_WALLET) == "instance_not_zk_verified"


async def test_authorize_peer(registry: StaticRegistry) -> None:
    identity = await registry.authorize_peer(KMS_WALLET)
    assert identity == Identity(
        wallet=KMS_WALLET, app_id=1, version_id=1, instance_id=1, role="peer"
    )
    assert await forbidden_reason(registry.authorize_peer, APP_WALLET) == "not_kms_app"
    assert await forbidden_reason(registry.authorize_peer, "0x" + "ee" * 20) == "unknown_wallet"
    registry.remove_operator(KMS_WALLET_2)
    assert await forbidden_reason(registry.authorize_peer, KMS_WALLET_2) == "not_operator"
    registry.set_instance_status(1, InstanceStatus.STOPPED)
    assert await forbidden_reason(registry.authorize_peer, KMS_WALLET) == "instance_not_active"


async def test_peer_needs_kms_app_id() -> None:
    doc = document()
    doc["kms_app_id"] = None
    registry = StaticRegistry.from_json(doc)
    assert await forbidden_reason(registry.authorize_peer, KMS_WALLET) == "not_kms_app"


async def test_operator_without_instance_is_unknown() -> None:
    doc = document()
    doc["operators"].append(APP_WALLET.replace("aa", "ee"))
    registry = StaticRegistry.from_json(doc)
    wallet = APP_WALLET.replace("aa", "ee")
    assert await forbidden_reason(registry.authorize_peer, wallet) == "unknown_wallet"


# ---------------------------------------------------------------------------------- guardians

G1, G2, G3 = ("0x" + c * 40 for c in "def")
E1, E2, E3 = ("0x" + f"{i:02x}" * 32 for i in (1, 2, 3))


def with_guardians(guardians: object) -> dict[str, Any]:
    doc = document()
    doc["guardians"] = guardians
    return doc


def good_guardians() -> dict[str, Any]:
    return {
        "wallets": [G1, G2.upper().replace("0X", "0x"), G3],
        "enc_keys": [E1, E2, E3.upper().replace("0X", "0x")],
        "threshold": 2,
    }


async def test_guardians_absent_is_version_0(registry: StaticRegistry) -> None:
    assert await registry.guardian_set() == no_guardians(0)
    assert "guardians" not in registry.to_json()


async def test_guardians_parsed_as_version_1_and_round_trip() -> None:
    registry = StaticRegistry.from_json(with_guardians(good_guardians()))
    expected = GuardianSet(
        wallets=(G1, G2, G3),
        enc_keys=(b"\x01" * 32, b"\x02" * 32, b"\x03" * 32),
        threshold=2,
        version=1,
    )
    assert await registry.guardian_set() == expected
    assert registry.describe()["guardian_set_version"] == 1
    doc = registry.to_json()
    assert doc["guardians"] == {"wallets": [G1, G2, G3], "enc_keys": [E1, E2, E3], "threshold": 2}
    assert StaticRegistry.from_json(doc).to_json() == doc


def test_guardians_file(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    path.write_text(json.dumps(with_guardians(good_guardians())), encoding="utf-8")
    assert StaticRegistry.load(path).describe()["guardian_set_version"] == 1
    bad = good_guardians()
    bad["threshold"] = 4
    path.write_text(json.dumps(with_guardians(bad)), encoding="utf-8")
    with pytest.raises(ValueError, match=r"registry.json: guardians: threshold 4 is outside 1..3"):
        StaticRegistry.load(path)


def _edit(**changes: Any) -> dict[str, Any]:
    guardians = good_guardians()
    for key, value in changes.items():
        if value is None:
            del guardians[key]
        else:
            guardians[key] = value
    return guardians


@pytest.mark.parametrize(
    ("guardians", "match"),
    [
        ([], "guardians: expected an object"),
        (None, "guardians: expected an object"),
        ({**good_guardians(), "version": 3}, "guardians: unknown key 'version'"),
        (_edit(threshold=None), "guardians: missing key 'threshold'"),
        (_edit(wallets=None), "guardians: missing key 'wallets'"),
        (_edit(enc_keys=None), "guardians: missing key 'enc_keys'"),
        (_edit(wallets=G1), "guardians.wallets: expected an array"),
        (_edit(enc_keys={}), "guardians.enc_keys: expected an array"),
        (_edit(wallets=[G1, "0x12", G3]), r"guardians.wallets\[1\]: '0x12' is not an address"),
        (_edit(wallets=[G1, 7, G3]), r"guardians.wallets\[1\]: 7 is not an address"),
        (_edit(enc_keys=[E1, E2, E3[:-2]]), r"guardians.enc_keys\[2\]: .* is not an enc key"),
        (_edit(enc_keys=[E1, E2, E3[2:]]), r"guardians.enc_keys\[2\]: .* is not an enc key"),
        (_edit(enc_keys=[E1, E2, 3]), r"guardians.enc_keys\[2\]: 3 is not an enc key"),
        (_edit(threshold=True), "guardians.threshold: expected an integer, got bool"),
        (_edit(threshold=2.0), "guardians.threshold: expected an integer, got float"),
        (_edit(threshold="2"), "guardians.threshold: expected an integer, got str"),
        (_edit(threshold=0), "guardians: threshold 0 is outside 1..3"),
        (_edit(threshold=4), "guardians: threshold 4 is outside 1..3"),
        (_edit(enc_keys=[E1, E2]), "guardians: 3 wallets but 2 enc keys"),
        (_edit(wallets=[], enc_keys=[], threshold=0), "guardians: 0 guardians"),
        (_edit(wallets=[G1, G2, G1]), "guardians: wallet 2: duplicate guardian"),
        (_edit(wallets=[G1, G2, ZERO_ADDRESS]), "guardians: wallet 2 is the zero address"),
        (_edit(enc_keys=[E1, "0x" + "00" * 32, E3]), "guardians: enc key 1 is all zero"),
        (
            {
                "wallets": ["0x" + f"{i + 1:040x}" for i in range(17)],
                "enc_keys": ["0x" + f"{i + 1:064x}" for i in range(17)],
                "threshold": 1,
            },
            "guardians: 17 guardians: at most 16",
        ),
    ],
)
def test_bad_guardians_are_rejected(guardians: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        StaticRegistry.from_json(with_guardians(guardians))


async def test_guardian_mutators_bump_the_version_like_the_contract() -> None:
    registry = StaticRegistry.from_json(with_guardians(good_guardians()))
    replaced = registry.set_guardians([G3.upper().replace("0X", "0x")], [b"\x09" * 32], 1)
    assert replaced == GuardianSet(wallets=(G3,), enc_keys=(b"\x09" * 32,), threshold=1, version=2)
    assert await registry.guardian_set() == replaced
    with pytest.raises(ValueError, match="duplicate guardian"):
        registry.set_guardians([G1, G1], [b"\x01" * 32, b"\x02" * 32], 1)
    with pytest.raises(ValueError, match="0 guardians"):
        registry.set_guardians([], [], 0)
    assert await registry.guardian_set() == replaced  # a refused set changes nothing
    assert registry.clear_guardians() == no_guardians(3)
    assert "guardians" not in registry.to_json()
    assert registry.set_guardians([G1], [b"\x01" * 32], 1).version == 4
    fresh = StaticRegistry()
    assert fresh.clear_guardians() == no_guardians(1)


def test_constructor_takes_a_guardian_set() -> None:
    guardians = GuardianSet(wallets=(G1,), enc_keys=(b"\x05" * 32,), threshold=1, version=6)
    assert StaticRegistry(guardians=guardians).describe()["guardian_set_version"] == 6
    with pytest.raises(ValueError, match="must be a GuardianSet"):
        StaticRegistry(guardians=good_guardians())  # type: ignore[arg-type]
