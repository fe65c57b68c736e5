"""The development chain: deploy the registries to a local anvil and register the demo world.

Development only (``novakms dev`` and the tests). The admin key owns both registries and the
demo apps; KMS nodes themselves never send transactions.

Layout it creates (ids are deterministic on a fresh chain):

* apps 1..n: the demo apps (two in `novakms dev`), each with version 1 ENROLLED and one
  zk-verified instance;
* app n+1: the KMS itself, ``dappContract`` = KMSRegistry, version 1, one instance per node —
  whose registration calls ``KMSRegistry.addOperator``, so the operator set is the node set.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from novakms.admin.tx import TxSender
from novakms.chain import abi
from novakms.chain.rpc import JsonRpcClient

__all__ = [
    "DevChain",
    "clear_guardians",
    "deploy_registries",
    "enroll_version",
    "register_instance",
    "set_guardians",
    "setup_world",
]

_TEE_ARCH = b"nitro".ljust(32, b"\x00")


def _pcr(label: str) -> bytes:
    # 48-byte stand-ins for Nitro PCR values, visibly fake.
    return hashlib.sha384(f"novakms dev pcr {label}".encode()).digest()


def _tee_pubkey(wallet: str) -> bytes:
    # A placeholder P-384 SEC1 point shape (97 bytes); the dev registry only checks the length.
    return (
        b"\x04"
        + hashlib.sha384(wallet.encode()).digest()
        + hashlib.sha384(wallet.encode() + b"y").digest()
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class DevChain:
    """Addresses of a deployed development world."""

    nova_app_registry: str
    kms_registry: str
    kms_app_id: int


async def deploy_registries(sender: TxSender) -> tuple[str, str]:
    """Deploy DevNovaAppRegistry and KMSRegistry (owned by the sender); return their addresses."""
    nova = abi.nova_app_registry()
    kms = abi.kms_registry()
    nova_address = await sender.deploy(nova.encode_constructor())
    kms_address = await sender.deploy(kms.encode_constructor(nova_address))
    return nova_address.lower(), kms_address.lower()


async def _create_app(sender: TxSender, nova_address: str, dapp: str, name: str) -> None:
    nova = abi.nova_app_registry()
    await sender.send(
        nova_address,
        nova.encode_call("createApp", _TEE_ARCH, dapp, f"https://example.invalid/{name}"),
    )


async def _enroll(sender: TxSender, nova_address: str, app_id: int, name: str) -> None:
    nova = abi.nova_app_registry()
    await sender.send(
        nova_address,
        nova.encode_call(
            "enrollVersion",
            app_id,
            "v1",
            _pcr(f"{name}0"),
            _pcr(f"{name}1"),
            _pcr(f"{name}2"),
            f"oci://example.invalid/{name}:v1",
            "https://example.invalid/audit",
            "",
            "dev",
        ),
    )


async def enroll_version(sender: TxSender, nova_address: str, app_id: int, name: str) -> None:
    """Enroll one more version of an app (its id is the app's version count)."""
    await _enroll(sender, nova_address, app_id, name)


async def register_instance(
    sender: TxSender, nova_address: str, app_id: int, wallet: str, url: str, version_id: int = 1
) -> None:
    """Register a zk-verified instance through the dev registry's proof-less path."""
    nova = abi.nova_app_registry()
    await sender.send(
        nova_address,
        nova.encode_call(
            "registerInstanceDev", app_id, version_id, url, _tee_pubkey(wallet), wallet
        ),
    )


async def set_guardians(
    sender: TxSender,
    kms_registry: str,
    wallets: Sequence[str],
    enc_keys: Sequence[bytes],
    threshold: int,
) -> dict[str, Any]:
    """``KMSRegistry.setGuardians`` from the owner's key; the receipt.

    Nothing is checked here: the contract enforces the rules, so tests can also drive its
    refusals (:class:`~novakms.chain.tx.TransactionFailed`).

    Args:
        sender: the registry owner's sender.
        kms_registry: the KMSRegistry address.
        wallets: the guardians' addresses.
        enc_keys: their X25519 HPKE public keys (32 bytes each), same order.
        threshold: how many guardians recovery needs.
    """
    call = abi.kms_registry().encode_call(
        "setGuardians", [w.lower() for w in wallets], [bytes(k) for k in enc_keys], threshold
    )
    return await sender.send(kms_registry, call)


async def clear_guardians(sender: TxSender, kms_registry: str) -> dict[str, Any]:
    """``KMSRegistry.clearGuardians`` from the owner's key; the receipt."""
    return await sender.send(kms_registry, abi.kms_registry().encode_call("clearGuardians"))


async def setup_world(
    rpc: JsonRpcClient,
    admin_key: bytes,
    *,
    node_wallets: list[tuple[str, str]],
    app_wallets: list[str],
) -> DevChain:
    """Deploy and register everything.

    Args:
        rpc: a client of the development chain.
        admin_key: the key that pays for and owns everything.
        node_wallets: (wallet, url) per KMS node.
        app_wallets: one instance wallet per demo app (apps 1, 2, …).
    """
    sender = TxSender(rpc, admin_key)
    nova_address, kms_address = await deploy_registries(sender)
    zero = "0x" + "00" * 20
    for index, wallet in enumerate(app_wallets, start=1):
        await _create_app(sender, nova_address, zero, f"demo-app-{index}")
        await _enroll(sender, nova_address, index, f"demo{index}")
        await register_instance(
            sender, nova_address, index, wallet, f"https://demo-app-{index}.example.invalid"
        )
    kms_app_id = len(app_wallets) + 1
    await _create_app(sender, nova_address, kms_address, "novakms")
    await _enroll(sender, nova_address, kms_app_id, "kms")
    await sender.send(kms_address, abi.kms_registry().encode_call("setKmsAppId", kms_app_id))
    for wallet, url in node_wallets:
        await register_instance(sender, nova_address, kms_app_id, wallet, url)
    return DevChain(nova_app_registry=nova_address, kms_registry=kms_address, kms_app_id=kms_app_id)
