"""ABI helpers over the compiled artifacts: selectors, struct decoding, tolerant App, events."""

from __future__ import annotations

import pytest
from eth_abi.abi import encode

from novakms.auth.model import AppStatus, InstanceStatus, VersionStatus
from novakms.chain import abi
from novakms.crypto.eth import keccak256

APP = "(uint256,address,bytes32,address,string,uint256,uint256,uint8)"


def test_selectors_come_from_the_abi() -> None:
    nova = abi.nova_app_registry()
    assert (
        nova.encode_call("getInstanceByWallet", "0x" + "11" * 20)[:4]
        == keccak256(b"getInstanceByWallet(address)")[:4]
    )
    assert abi.kms_registry().encode_call("getOperators") == keccak256(b"getOperators()")[:4]


def test_app_decoding_tolerates_the_appended_app_wallet() -> None:
    nova = abi.nova_app_registry()
    fields = (7, "0x" + "aa" * 20, b"\x01" * 32, "0x" + "bb" * 20, "ipfs://meta", 2, 1234, 1)
    for types, values in (
        ([APP], [fields]),
        ([APP[:-1] + ",address)"], [(*fields, "0x" + "cc" * 20)]),
    ):
        app = abi.app_from_tuple(nova.decode_result("getApp", encode(types, values))[0])
        assert (
            app is not None
            and app.app_id == 7
            and app.status is AppStatus.INACTIVE
            and app.owner == "0x" + "aa" * 20
        )


def test_zero_ids_mean_absent_and_bad_enums_raise() -> None:
    assert abi.app_from_tuple((0, "0x" + "00" * 20, b"", "0x" + "00" * 20, "", 0, 0, 0)) is None
    assert abi.version_from_tuple(1, (0, "", b"", "", "", "", "", 0, 0, "0x" + "00" * 20)) is None
    assert (
        abi.instance_from_tuple((0, 0, 0, "0x" + "00" * 20, "", b"", "0x" + "00" * 20, False, 0, 0))
        is None
    )
    version = abi.version_from_tuple(1, (2, "v2", b"", "", "", "", "", 1, 0, "0x" + "00" * 20))
    assert version is not None and version.status is VersionStatus.DEPRECATED
    instance = abi.instance_from_tuple(
        (3, 1, 2, "0x" + "dd" * 20, "https://x", b"k", "0x" + "EE" * 20, True, 0, 9)
    )
    assert (
        instance is not None
        and instance.wallet == "0x" + "ee" * 20
        and instance.status is InstanceStatus.ACTIVE
    )
    with pytest.raises(ValueError):
        abi.app_from_tuple((1, "0x" + "00" * 20, b"", "0x" + "00" * 20, "", 0, 0, 7))


def test_event_decoding() -> None:
    nova = abi.nova_app_registry()
    [topic] = nova.topics("VersionStatusChanged")
    log = {
        "topics": [
            "0x" + topic.hex(),
            "0x" + encode(["uint256"], [4]).hex(),
            "0x" + encode(["uint256"], [2]).hex(),
        ],
        "data": "0x" + encode(["uint8"], [2]).hex(),
        "blockNumber": "0x10",
        "logIndex": "0x3",
    }
    event = nova.decode_log(log)
    assert (
        event is not None
        and event.name == "VersionStatusChanged"
        and event.block == 16
        and event.log_index == 3
    )
    assert event.args == {"appId": 4, "versionId": 2, "newStatus": 2}
    assert nova.decode_log({**log, "topics": ["0x" + "00" * 32]}) is None
    with pytest.raises(ValueError):
        nova.decode_log({**log, "topics": log["topics"][:2]})
    with pytest.raises(ValueError):
        nova.decode_log({**log, "data": "0x12"})


def test_custom_errors_are_named_from_the_abi() -> None:
    kms = abi.kms_registry()

    def error(signature: str, types: list[str], values: list[object]) -> bytes:
        return keccak256(signature.encode())[:4] + encode(types, values)

    assert kms.describe_error(error("NotOwner()", [], [])) == "NotOwner()"
    wallet = "0x" + "Ab" * 20
    assert (
        kms.describe_error(error("DuplicateGuardian(address)", ["address"], [wallet]))
        == f"DuplicateGuardian({wallet.lower()})"
    )
    assert (
        kms.describe_error(
            error("ThresholdOutOfRange(uint8,uint256)", ["uint8", "uint256"], [3, 2])
        )
        == "ThresholdOutOfRange(3, 2)"
    )
    assert kms.describe_error(None) is None
    assert kms.describe_error(b"\x00\x00\x00") is None
    assert kms.describe_error(b"\x08\xc3\x79\xa0" + encode(["string"], ["x"])) is None  # Error()
    # a known selector with a payload that does not decode
    assert kms.describe_error(keccak256(b"DuplicateGuardian(address)")[:4]) is None
