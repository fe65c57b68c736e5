"""The registry records authorization is decided on, mirroring the on-chain structs.

The enums carry exactly the ``uint8`` values of the NovaAppRegistry ABI
(``shared/NOVA_APP_REGISTRY.md``), so a chain-backed source can build them with
``AppStatus(raw)``. The records keep only the fields the authorization policy needs; every
source (the static JSON registry, the chain poller + cache) produces the same records and hands
them to the same pure policy functions in :mod:`novakms.auth.policy`.

Records are plain values: they are not validated here. A source is responsible for building
them from trustworthy data (the static registry validates its JSON; the chain source decodes
the ABI). The policy is defensive about inconsistent or zeroed records anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Literal
from urllib.parse import urlsplit

__all__ = [
    "ZERO_ADDRESS",
    "App",
    "AppStatus",
    "AppVersion",
    "Identity",
    "Instance",
    "InstanceStatus",
    "Role",
    "VersionStatus",
    "dialable_address",
    "peer_address",
    "peer_entry",
]

ZERO_ADDRESS = "0x" + "00" * 20
"""The all-zero address, the owner of a record whose owner is not known."""

Role = Literal["app", "peer", "guardian"]


class AppStatus(IntEnum):
    """``NovaAppRegistry.AppStatus`` (ABI ``uint8``)."""

    ACTIVE = 0
    INACTIVE = 1
    REVOKED = 2


class VersionStatus(IntEnum):
    """``NovaAppRegistry.VersionStatus`` (ABI ``uint8``)."""

    ENROLLED = 0
    DEPRECATED = 1
    REVOKED = 2


class InstanceStatus(IntEnum):
    """``NovaAppRegistry.InstanceStatus`` (ABI ``uint8``)."""

    ACTIVE = 0
    STOPPED = 1
    FAILED = 2


@dataclass(frozen=True, slots=True, kw_only=True)
class App:
    """An application registered on NovaAppRegistry.

    Attributes:
        app_id: the registry's app id (ids start at 1; 0 means "no such app").
        status: the app's lifecycle status.
        owner: the app owner's address (lowercase ``0x`` + 40 hex), informational only.
    """

    app_id: int
    status: AppStatus
    owner: str = ZERO_ADDRESS


@dataclass(frozen=True, slots=True, kw_only=True)
class AppVersion:
    """One enrolled version (code measurement) of an app.

    Attributes:
        app_id: the app the version belongs to (not part of the on-chain struct: the source fills
            it in from the ``getVersion(appId, versionId)`` query).
        version_id: the version id within the app (ids start at 1; 0 means "no such version").
        status: the version's lifecycle status.
    """

    app_id: int
    version_id: int
    status: VersionStatus


@dataclass(frozen=True, slots=True, kw_only=True)
class Instance:
    """A running enclave instance, identified by its TEE wallet.

    Attributes:
        instance_id: the registry's instance id (0 means "no instance for this wallet").
        app_id: the app the instance runs.
        version_id: the app version the instance runs.
        wallet: the instance's TEE wallet address (lowercase ``0x`` + 40 hex).
        zk_verified: whether the instance was registered with a verified attestation proof.
        status: the instance's lifecycle status.
        instance_url: the instance's advertised URL (informational; ``""`` if unknown).
    """

    instance_id: int
    app_id: int
    version_id: int
    wallet: str
    zk_verified: bool
    status: InstanceStatus
    instance_url: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Identity:
    """The result of a successful authorization: who is calling, as far as the registry says.

    Attributes:
        wallet: the authenticated wallet (lowercase ``0x`` + 40 hex).
        app_id: the wallet's app id, always taken from the registry, never from the client.
        version_id: the version the wallet's instance runs.
        instance_id: the wallet's instance id.
        role: ``"app"`` for an application instance, ``"peer"`` for another KMS node.
    """

    wallet: str
    app_id: int
    version_id: int
    instance_id: int
    role: Role


def peer_entry(
    wallet: str, instance: Instance | None, refusal: str | None = None
) -> dict[str, Any]:
    """A KMS operator and its instance details, as the ``nodes`` operation reports them.

    ``address`` is where to dial its KMS protocol (:func:`peer_address` of its
    ``instance_url``; None when that URL has none). ``authorized`` is the verdict of the same
    peer policy that admits incoming peer requests (instance, app, version, KMS app and
    operator rules): only authorized entries are dialed, pushed to and counted for
    acknowledgements. ``refusal`` is the policy's reason otherwise.
    """
    return {
        "authorized": refusal is None,
        "reason": refusal,
        "wallet": wallet,
        "instance_id": None if instance is None else instance.instance_id,
        "instance_url": None if instance is None else instance.instance_url,
        "address": None if instance is None else dialable_address(instance.instance_url),
        "status": None if instance is None else instance.status.name,
        "zk_verified": None if instance is None else instance.zk_verified,
        "version_id": None if instance is None else instance.version_id,
    }


def dialable_address(instance_url: str) -> str | None:
    """:func:`peer_address`, or None for a URL without a usable host and port."""
    try:
        return peer_address(instance_url)
    except ValueError:
        return None


def peer_address(instance_url: str) -> str:
    """The KMS protocol address of a peer from its registered instance URL (a peer entry's
    ``instance_url``): the one parser every dialer of peers uses.

    ``http(s)://HOST:PORT[/…]`` → ``HOST:PORT``; ``vsock://CID:PORT`` is kept.

    Args:
        instance_url: the URL as registered.

    Returns:
        An address :func:`novakms.net.addresses.parse_address` accepts.

    Raises:
        ValueError: no usable host and port.
    """
    if instance_url.startswith("vsock://"):
        return instance_url
    parts = urlsplit(instance_url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.port is None:
        raise ValueError(f"instance URL {instance_url!r} has no host:port")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{parts.port}"
