"""The pure authorization policy (DESIGN §3, PROTOCOL §8)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from novakms.auth.model import (
    App,
    AppStatus,
    AppVersion,
    Identity,
    Instance,
    InstanceStatus,
    VersionStatus,
)
from novakms.auth.policy import AppDecisions, authorize_app, authorize_peer
from novakms.errors import Forbidden

WALLET = "0x" + "ab" * 20
OTHER = "0x" + "cd" * 20

INSTANCE = Instance(
    instance_id=3,
    app_id=2,
    version_id=5,
    wallet=WALLET,
    zk_verified=True,
    status=InstanceStatus.ACTIVE,
    instance_url="http://node.example",
)
APP = App(app_id=2, status=AppStatus.ACTIVE)
VERSION = AppVersion(app_id=2, version_id=5, status=VersionStatus.ENROLLED)


def reason_app(
    *,
    wallet: str = WALLET,
    instance: Instance | None = INSTANCE,
    app: App | None = APP,
    version: AppVersion | None = VERSION,
) -> tuple[str, str]:
    with pytest.raises(Forbidden) as info:
        authorize_app(wallet=wallet, instance=instance, app=app, version=version)
    assert info.value.code == "forbidden"
    return info.value.details["reason"], info.value.message


def reason_peer(
    *,
    instance: Instance | None = INSTANCE,
    app: App | None = APP,
    version: AppVersion | None = VERSION,
    kms_app_id: int | None = 2,
    is_operator: bool = True,
) -> str:
    with pytest.raises(Forbidden) as info:
        authorize_peer(
            wallet=WALLET,
            instance=instance,
            app=app,
            version=version,
            kms_app_id=kms_app_id,
            is_operator=is_operator,
        )
    reason: str = info.value.details["reason"]
    return reason


def test_authorized_app_identity_comes_from_registry() -> None:
    identity = authorize_app(wallet=WALLET, instance=INSTANCE, app=APP, version=VERSION)
    assert identity == Identity(wallet=WALLET, app_id=2, version_id=5, instance_id=3, role="app")


def test_wallet_compared_case_insensitively_and_normalised() -> None:
    identity = authorize_app(
        wallet=WALLET.upper().replace("0X", "0x"), instance=INSTANCE, app=APP, version=VERSION
    )
    assert identity.wallet == WALLET


def test_deprecated_version_is_allowed() -> None:
    version = dataclasses.replace(VERSION, status=VersionStatus.DEPRECATED)
    assert authorize_app(wallet=WALLET, instance=INSTANCE, app=APP, version=version).app_id == 2


def test_unknown_wallet() -> None:
    reason, message = reason_app(instance=None, app=None, version=None)
    assert reason == "unknown_wallet"
    assert WALLET in message


def test_zeroed_instance_is_unknown() -> None:
    zero = Instance(
        instance_id=0,
        app_id=0,
        version_id=0,
        wallet="0x" + "00" * 20,
        zk_verified=False,
        status=InstanceStatus.ACTIVE,
    )
    assert reason_app(instance=zero, app=None, version=None)[0] == "unknown_wallet"


@pytest.mark.parametrize("status", [InstanceStatus.STOPPED, InstanceStatus.FAILED])
def test_instance_not_active(status: InstanceStatus) -> None:
    reason, message = reason_app(instance=dataclasses.replace(INSTANCE, status=status))
    assert reason == "instance_not_active"
    assert message == f"instance 3 of app 2 is {status.name}"


def test_instance_not_zk_verified() -> None:
    reason, message = reason_app(instance=dataclasses.replace(INSTANCE, zk_verified=False))
    assert reason == "instance_not_zk_verified"
    assert "instance 3" in message


@pytest.mark.parametrize("status", [AppStatus.INACTIVE, AppStatus.REVOKED])
def test_app_not_active(status: AppStatus) -> None:
    reason, message = reason_app(app=dataclasses.replace(APP, status=status))
    assert reason == "app_not_active"
    assert message == f"app 2 is {status.name}"


def test_missing_app() -> None:
    assert reason_app(app=None)[0] == "app_not_active"


def test_zeroed_app_counts_as_missing_even_though_status_is_active() -> None:
    zero = App(app_id=0, status=AppStatus.ACTIVE)
    assert reason_app(app=zero)[0] == "app_not_active"


def test_version_revoked() -> None:
    reason, message = reason_app(version=dataclasses.replace(VERSION, status=VersionStatus.REVOKED))
    assert reason == "version_revoked"
    assert message == "version 5 of app 2 is REVOKED"


def test_missing_or_zeroed_version() -> None:
    assert reason_app(version=None)[0] == "version_revoked"
    zero = AppVersion(app_id=2, version_id=0, status=VersionStatus.ENROLLED)
    assert reason_app(version=zero)[0] == "version_revoked"


def test_unknown_status_values_are_rejected_with_readable_message() -> None:
    bad = dataclasses.replace(INSTANCE, status=7)  # type: ignore[arg-type]
    reason, message = reason_app(instance=bad)
    assert reason == "instance_not_active"
    assert "status 7" in message


def test_precedence_stopped_and_not_zk_reports_not_active() -> None:
    instance = dataclasses.replace(INSTANCE, status=InstanceStatus.STOPPED, zk_verified=False)
    assert reason_app(instance=instance)[0] == "instance_not_active"


def test_precedence_everything_revoked() -> None:
    app = dataclasses.replace(APP, status=AppStatus.REVOKED)
    version = dataclasses.replace(VERSION, status=VersionStatus.REVOKED)
    failed = dataclasses.replace(INSTANCE, status=InstanceStatus.FAILED)
    assert reason_app(instance=failed, app=app, version=version)[0] == "instance_not_active"
    not_zk = dataclasses.replace(INSTANCE, zk_verified=False)
    assert reason_app(instance=not_zk, app=app, version=version)[0] == "instance_not_zk_verified"
    assert reason_app(app=app, version=version)[0] == "app_not_active"
    assert reason_app(version=version)[0] == "version_revoked"


@pytest.mark.parametrize(
    ("instance", "app", "version"),
    [
        (dataclasses.replace(INSTANCE, wallet=OTHER), APP, VERSION),
        (INSTANCE, dataclasses.replace(APP, app_id=9), VERSION),
        (INSTANCE, APP, dataclasses.replace(VERSION, version_id=6)),
        (INSTANCE, APP, dataclasses.replace(VERSION, app_id=9)),
        # inconsistency wins over a bad status: the records cannot be trusted at all
        (
            dataclasses.replace(INSTANCE, status=InstanceStatus.STOPPED),
            dataclasses.replace(APP, app_id=9),
            VERSION,
        ),
    ],
)
def test_inconsistent_records_are_unknown(
    instance: Instance, app: App, version: AppVersion
) -> None:
    assert reason_app(instance=instance, app=app, version=version)[0] == "unknown_wallet"


def test_messages_carry_no_url_or_owner() -> None:
    _, message = reason_app(app=dataclasses.replace(APP, status=AppStatus.INACTIVE))
    assert "http" not in message


# ---------------------------------------------------------------------------------- peers


def test_authorized_peer() -> None:
    identity = authorize_peer(
        wallet=WALLET, instance=INSTANCE, app=APP, version=VERSION, kms_app_id=2, is_operator=True
    )
    assert identity == Identity(wallet=WALLET, app_id=2, version_id=5, instance_id=3, role="peer")


def test_peer_not_kms_app() -> None:
    assert reason_peer(kms_app_id=1) == "not_kms_app"
    assert reason_peer(kms_app_id=None) == "not_kms_app"
    assert reason_peer(kms_app_id=0) == "not_kms_app"


def test_peer_not_operator() -> None:
    assert reason_peer(is_operator=False) == "not_operator"


def test_peer_app_rules_come_first() -> None:
    assert reason_peer(instance=None, is_operator=False, kms_app_id=None) == "unknown_wallet"
    stopped = dataclasses.replace(INSTANCE, status=InstanceStatus.STOPPED)
    assert reason_peer(instance=stopped, is_operator=False) == "instance_not_active"
    not_zk = dataclasses.replace(INSTANCE, zk_verified=False)
    assert reason_peer(instance=not_zk) == "instance_not_zk_verified"
    inactive = dataclasses.replace(APP, status=AppStatus.INACTIVE)
    assert reason_peer(app=inactive) == "app_not_active"
    revoked = dataclasses.replace(VERSION, status=VersionStatus.REVOKED)
    assert reason_peer(version=revoked, kms_app_id=1) == "version_revoked"
    # kms app is checked before the operator set
    assert reason_peer(kms_app_id=1, is_operator=False) == "not_kms_app"


# ---------------------------------------------------------------------------------- property


# Every input of the policy, with its "good" value first and then the alternatives. A test case
# starts from all-good values and perturbs a few fields, so that both outcomes are common.
FIELDS: dict[str, list[object]] = {
    "present": [True, False],
    "instance_id": [3, 0],
    "instance_wallet": [WALLET, WALLET.upper().replace("0X", "0x"), OTHER],
    "instance_status": list(InstanceStatus),
    "zk": [True, False],
    "app_present": [True, False],
    "app_id": [2, 0, 9],
    "app_status": list(AppStatus),
    "version_present": [True, False],
    "version_app_id": [2, 9],
    "version_id": [5, 0, 6],
    "version_status": [VersionStatus.ENROLLED, VersionStatus.DEPRECATED, VersionStatus.REVOKED],
    "kms_app_id": [2, None, 0, 9],
    "is_operator": [True, False],
}


@st.composite
def policy_inputs(draw: st.DrawFn) -> dict[str, object]:
    values = {name: options[0] for name, options in FIELDS.items()}
    for name in draw(st.sets(st.sampled_from(sorted(FIELDS)), max_size=4)):
        values[name] = draw(st.sampled_from(FIELDS[name]))
    return values


def _records(v: dict[str, Any]) -> tuple[Instance | None, App | None, AppVersion | None]:
    instance = (
        Instance(
            instance_id=v["instance_id"],
            app_id=2,
            version_id=5,
            wallet=v["instance_wallet"],
            zk_verified=v["zk"],
            status=v["instance_status"],
        )
        if v["present"]
        else None
    )
    app = App(app_id=v["app_id"], status=v["app_status"]) if v["app_present"] else None
    version = (
        AppVersion(
            app_id=v["version_app_id"], version_id=v["version_id"], status=v["version_status"]
        )
        if v["version_present"]
        else None
    )
    return instance, app, version


@settings(max_examples=400)
@given(v=policy_inputs(), peer=st.booleans())
def test_authorized_iff_all_conditions_hold(v: dict[str, Any], peer: bool) -> None:
    instance, app, version = _records(v)
    expected_app = (
        v["present"]
        and v["instance_id"] != 0
        and v["instance_wallet"].lower() == WALLET
        and v["instance_status"] == InstanceStatus.ACTIVE
        and v["zk"]
        and v["app_present"]
        and v["app_id"] == 2
        and v["app_status"] == AppStatus.ACTIVE
        and v["version_present"]
        and v["version_app_id"] == 2
        and v["version_id"] == 5
        and v["version_status"] in (VersionStatus.ENROLLED, VersionStatus.DEPRECATED)
    )
    expected = expected_app and (not peer or (v["kms_app_id"] == 2 and v["is_operator"]))
    try:
        if peer:
            identity = authorize_peer(
                wallet=WALLET,
                instance=instance,
                app=app,
                version=version,
                kms_app_id=v["kms_app_id"],
                is_operator=v["is_operator"],
            )
        else:
            identity = authorize_app(wallet=WALLET, instance=instance, app=app, version=version)
    except Forbidden as exc:
        assert not expected
        reason = exc.details["reason"]
        event(f"forbidden: {reason}")
        assert reason in REASONS
        if not v["present"] or v["instance_id"] == 0:
            assert reason == "unknown_wallet"
        if peer and expected_app:
            assert reason in {"not_kms_app", "not_operator"}
        else:
            assert reason not in {"not_kms_app", "not_operator"}
    else:
        event("authorized")
        assert expected
        assert identity == Identity(
            wallet=WALLET,
            app_id=2,
            version_id=5,
            instance_id=3,
            role="peer" if peer else "app",
        )


REASONS = {
    "unknown_wallet",
    "instance_not_active",
    "instance_not_zk_verified",
    "app_not_active",
    "version_revoked",
    "not_kms_app",
    "not_operator",
}


def _decide(decide: Any, wallet: str, records: tuple[Any, Any, Any], kms: Any) -> object:
    instance, app, version = records
    try:
        return decide(wallet=wallet, instance=instance, app=app, version=version, kms_app_id=kms)
    except Forbidden as exc:
        return ("forbidden", exc.details["reason"], exc.message)


@settings(max_examples=200)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from([WALLET, OTHER]),
            policy_inputs(),
            st.integers(min_value=0, max_value=3),  # which earlier record set to reuse
            st.booleans(),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_app_decisions_decide_as_the_policy(
    steps: list[tuple[str, dict[str, Any], int, bool]],
) -> None:
    """The memo admits and refuses exactly as :func:`authorize_app`, over records that change
    (new objects) or stay (the same objects again), for two wallets in a memo of one."""
    decisions = AppDecisions(capacity=1)
    seen: list[tuple[Any, Any, Any]] = []
    for wallet, v, back, reuse in steps:
        records = seen[-1 - back % len(seen)] if reuse and seen else _records(v)
        seen.append(records)
        kms = v["kms_app_id"]
        assert _decide(decisions.authorize_app, wallet, records, kms) == _decide(
            authorize_app, wallet, records, kms
        )


def test_app_decisions_remember_admissions_of_the_same_records_only() -> None:
    decisions = AppDecisions()
    first = decisions.authorize_app(wallet=WALLET, instance=INSTANCE, app=APP, version=VERSION)
    again = decisions.authorize_app(wallet=WALLET, instance=INSTANCE, app=APP, version=VERSION)
    assert again is first
    # Equal but new records (a refresh): decided afresh, to the same identity.
    fresh = decisions.authorize_app(
        wallet=WALLET, instance=dataclasses.replace(INSTANCE), app=APP, version=VERSION
    )
    assert fresh == first and fresh is not first
    revoked = dataclasses.replace(VERSION, status=VersionStatus.REVOKED)
    with pytest.raises(Forbidden) as refused:
        decisions.authorize_app(wallet=WALLET, instance=INSTANCE, app=APP, version=revoked)
    assert refused.value.details["reason"] == "version_revoked"
    with pytest.raises(ValueError, match="capacity"):
        AppDecisions(capacity=0)
