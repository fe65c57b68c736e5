"""The Solidity side: checked-in artifacts are fresh, forge tests pass, the ABIs carry what the
Python chain code uses (with the exact signatures of shared/NOVA_APP_REGISTRY.md)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONTRACTS = ROOT / "contracts"
ARTIFACTS = ROOT / "novakms" / "chain" / "artifacts"
NAMES = ("KMSRegistry", "DevNovaAppRegistry")

REBUILD = "run `scripts/contracts build` and commit novakms/chain/artifacts/"


def _artifact(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((ARTIFACTS / f"{name}.json").read_text())
    return data


def expected_source_hash() -> str:
    """The sourceHash recipe documented at the top of scripts/contracts, recomputed here."""
    pinned = json.loads((ROOT / "package.json").read_text())["devDependencies"]["solc"]
    files = [CONTRACTS / "foundry.toml"]
    files += sorted(
        (CONTRACTS / "src").rglob("*.sol"), key=lambda p: p.relative_to(ROOT).as_posix()
    )
    h = hashlib.sha256(b"novakms-contracts-v1\n")
    for f in files:
        data = f.read_bytes()
        rel = f.relative_to(ROOT).as_posix().encode()
        h.update(rel + b"\n" + str(len(data)).encode() + b"\n" + data + b"\n")
    h.update(b"solc " + pinned.encode() + b"\n")
    return h.hexdigest()


# ---------------------------------------------------------------------------------- (1) fresh


@pytest.mark.parametrize("name", NAMES)
def test_artifact_is_fresh(name: str) -> None:
    artifact = _artifact(name)
    assert artifact["contractName"] == name
    assert artifact["sourceHash"] == expected_source_hash(), (
        f"novakms/chain/artifacts/{name}.json was not built from the current contracts/src, "
        f"contracts/foundry.toml and solc pin: {REBUILD}"
    )
    bytecode = artifact["bytecode"]
    assert bytecode.startswith("0x")
    assert len(bytecode) > 2
    bytes.fromhex(bytecode[2:])


# ---------------------------------------------------------------------------------- (2) forge


@pytest.mark.slow
def test_forge_tests_pass() -> None:
    if shutil.which("npm") is None and not (ROOT / "node_modules" / ".bin" / "forge").exists():
        pytest.fail("npm is not installed: the Solidity tests need Node.js 20+ (scripts/setup)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOUNDRY_")}
    proc = subprocess.run(
        [str(ROOT / "scripts" / "contracts"), "test"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"`scripts/contracts test` failed:\n{output}"
    assert " 0 failed" in output, output


# ---------------------------------------------------------------------------------- (3) ABI


def _type(param: dict[str, Any]) -> str:
    """Canonical ABI type, tuples expanded with component names: tuple(uint256 appId,...)."""
    t: str = param["type"]
    if t.startswith("tuple"):
        inner = ",".join(f"{_type(c)} {c['name']}" for c in param["components"])
        return f"({inner}){t[len('tuple') :]}"
    return t


def _functions(abi: list[dict[str, Any]]) -> dict[str, str]:
    return {
        e["name"]: "{}({}) -> ({})".format(
            e["name"],
            ",".join(_type(p) for p in e["inputs"]),
            ",".join(_type(p) for p in e["outputs"]),
        )
        for e in abi
        if e["type"] == "function"
    }


def _events(abi: list[dict[str, Any]]) -> dict[str, str]:
    return {
        e["name"]: "{}({})".format(
            e["name"],
            ",".join(
                _type(p) + (" indexed" if p["indexed"] else "") + f" {p['name']}"
                for p in e["inputs"]
            ),
        )
        for e in abi
        if e["type"] == "event"
    }


APP = (
    "(uint256 appId,address owner,bytes32 teeArch,address dappContract,string metadataUri,"
    "uint256 latestVersionId,uint256 createdAt,uint8 status)"
)
VERSION = (
    "(uint256 versionId,string versionName,bytes32 codeMeasurement,string imageUri,"
    "string auditUrl,string auditHash,string githubRunId,uint8 status,uint256 enrolledAt,"
    "address enrolledBy)"
)
INSTANCE = (
    "(uint256 instanceId,uint256 appId,uint256 versionId,address operator,string instanceUrl,"
    "bytes teePubkey,address teeWalletAddress,bool zkVerified,uint8 status,uint256 registeredAt)"
)

REGISTRY_FUNCTIONS = {
    "getApp": f"getApp(uint256) -> ({APP})",
    "getVersion": f"getVersion(uint256,uint256) -> ({VERSION})",
    "getInstance": f"getInstance(uint256) -> ({INSTANCE})",
    "getInstanceByWallet": f"getInstanceByWallet(address) -> ({INSTANCE})",
    "getInstancesForVersion": "getInstancesForVersion(uint256,uint256) -> (uint256[])",
    "getLatestVersion": f"getLatestVersion(uint256) -> ({VERSION})",
    "getAppCount": "getAppCount() -> (uint256)",
    "getVersionCount": "getVersionCount(uint256) -> (uint256)",
    "createApp": "createApp(bytes32,address,string) -> (uint256)",
    "updateAppStatus": "updateAppStatus(uint256,uint8) -> ()",
    "enrollVersion": (
        "enrollVersion(uint256,string,bytes,bytes,bytes,string,string,string,string) -> (uint256)"
    ),
    "deprecateVersion": "deprecateVersion(uint256,uint256) -> ()",
    "revokeVersion": "revokeVersion(uint256,uint256) -> ()",
    "registerInstanceDev": (
        "registerInstanceDev(uint256,uint256,string,bytes,address) -> (uint256)"
    ),
    "registerInstanceWithoutProof": (
        "registerInstanceWithoutProof(uint256,uint256,string,bytes,address,bytes32) -> (uint256)"
    ),
    "updateInstanceStatus": "updateInstanceStatus(uint256,uint8) -> ()",
    "owner": "owner() -> (address)",
}

REGISTRY_EVENTS = {
    "AppCreated": (
        "AppCreated(uint256 indexed appId,address indexed owner,bytes32 teeArch,"
        "address dappContract,string metadataUri)"
    ),
    "AppStatusChanged": (
        "AppStatusChanged(uint256 indexed appId,uint8 newStatus,address indexed updatedBy)"
    ),
    "VersionEnrolled": (
        "VersionEnrolled(uint256 indexed appId,uint256 indexed versionId,string versionName,"
        "bytes32 codeMeasurement,string imageUri)"
    ),
    "VersionStatusChanged": (
        "VersionStatusChanged(uint256 indexed appId,uint256 indexed versionId,uint8 newStatus)"
    ),
    "InstanceRegistered": (
        "InstanceRegistered(uint256 indexed instanceId,uint256 indexed appId,"
        "uint256 indexed versionId,address teeWalletAddress,string instanceUrl,bool zkVerified)"
    ),
    "InstanceWalletBound": (
        "InstanceWalletBound(address indexed teeWalletAddress,uint256 indexed instanceId,"
        "uint256 indexed appId)"
    ),
    "InstanceStatusChanged": "InstanceStatusChanged(uint256 indexed instanceId,uint8 newStatus)",
    "OperatorCallbackSuccess": (
        "OperatorCallbackSuccess(uint256 indexed appId,address indexed dappContract,"
        "address teeWalletAddress)"
    ),
    "OperatorCallbackFailed": (
        "OperatorCallbackFailed(uint256 indexed appId,address indexed dappContract,string reason)"
    ),
}

KMS_FUNCTIONS = {
    "getOperators": "getOperators() -> (address[])",
    "isOperator": "isOperator(address) -> (bool)",
    "operatorCount": "operatorCount() -> (uint256)",
    "operatorAt": "operatorAt(uint256) -> (address)",
    "kmsAppId": "kmsAppId() -> (uint256)",
    "novaAppRegistry": "novaAppRegistry() -> (address)",
    "masterSecretHash": "masterSecretHash() -> (bytes32)",
    "owner": "owner() -> (address)",
    "setKmsAppId": "setKmsAppId(uint256) -> ()",
    "setNovaAppRegistry": "setNovaAppRegistry(address) -> ()",
    "setMasterSecretHash": "setMasterSecretHash(bytes32) -> ()",
    "resetMasterSecretHash": "resetMasterSecretHash() -> ()",
    "addOperator": "addOperator(address,uint256,uint256,uint256) -> ()",
    "removeOperator": "removeOperator(address,uint256,uint256,uint256) -> ()",
    "setGuardians": "setGuardians(address[],bytes32[],uint8) -> ()",
    "clearGuardians": "clearGuardians() -> ()",
    "guardians": "guardians() -> (address[],bytes32[],uint8,uint256)",
    "isGuardian": "isGuardian(address) -> (bool)",
    "guardianSetVersion": "guardianSetVersion() -> (uint256)",
    "MAX_GUARDIANS": "MAX_GUARDIANS() -> (uint256)",
}

KMS_EVENTS = {
    "OperatorAdded": (
        "OperatorAdded(address indexed operator,uint256 indexed appId,uint256 versionId,"
        "uint256 instanceId)"
    ),
    "OperatorRemoved": (
        "OperatorRemoved(address indexed operator,uint256 indexed appId,uint256 versionId,"
        "uint256 instanceId)"
    ),
    "MasterSecretHashSet": "MasterSecretHashSet(bytes32 hash)",
    "MasterSecretHashReset": "MasterSecretHashReset()",
    "KmsAppIdSet": "KmsAppIdSet(uint256 indexed appId)",
    "NovaAppRegistrySet": "NovaAppRegistrySet(address indexed registry)",
    "GuardiansSet": (
        "GuardiansSet(uint256 indexed version,address[] wallets,bytes32[] encKeys,uint8 threshold)"
    ),
    "GuardiansCleared": "GuardiansCleared(uint256 indexed version)",
}


@pytest.mark.parametrize(
    ("name", "functions", "events"),
    [
        ("DevNovaAppRegistry", REGISTRY_FUNCTIONS, REGISTRY_EVENTS),
        ("KMSRegistry", KMS_FUNCTIONS, KMS_EVENTS),
    ],
)
def test_abi_has_what_python_needs(
    name: str, functions: dict[str, str], events: dict[str, str]
) -> None:
    # Parameter names are free except inside returned structs and events (decoders use them).
    abi = _artifact(name)["abi"]
    have_functions, have_events = _functions(abi), _events(abi)
    overloaded = [e["name"] for e in abi if e["type"] == "function"]
    assert len(overloaded) == len(set(overloaded)), f"{name} has overloaded functions"
    for fn, sig in functions.items():
        assert fn in have_functions, f"{name} lacks function {fn}: {REBUILD}?"
        assert have_functions[fn] == sig, f"{name}.{fn} signature changed"
    for ev, sig in events.items():
        assert ev in have_events, f"{name} lacks event {ev}: {REBUILD}?"
        assert have_events[ev] == sig, f"{name}.{ev} signature changed"


def test_view_functions_are_views() -> None:
    for name, views in (
        ("DevNovaAppRegistry", [f for f in REGISTRY_FUNCTIONS if f.startswith("get")] + ["owner"]),
        (
            "KMSRegistry",
            [
                f
                for f in KMS_FUNCTIONS
                if not f.startswith(("set", "reset", "add", "remove", "clear"))
            ],
        ),
    ):
        mutability = {
            e["name"]: e["stateMutability"]
            for e in _artifact(name)["abi"]
            if e["type"] == "function"
        }
        for fn in views:
            assert mutability[fn] in ("view", "pure"), f"{name}.{fn} is {mutability[fn]}"
