"""A static, in-memory registry: the ``static`` authorization source.

It holds the same records a chain-backed source reads from NovaAppRegistry / KMSRegistry, and
decides with the same pure policy (:mod:`novakms.auth.policy`). It serves tests and development
without a chain; its mutators let tests revoke or stop things on a running server.

JSON format (``StaticRegistry.from_json`` / ``load`` read it, ``to_json`` writes it)::

    {
      "kms_app_id": 1,                      # int >= 1 or null (optional, default null)
      "operators": ["0x…"],                 # KMSRegistry operator wallets (optional, default [])
      "apps": [                             # optional, default []
        {
          "app_id": 1,                      # int >= 1, unique
          "status": "ACTIVE",               # ACTIVE | INACTIVE | REVOKED
          "owner": "0x…",                   # optional, default the zero address
          "versions": [                     # optional, default []
            {"version_id": 1,               # int >= 1, unique within the app
             "status": "ENROLLED"}          # ENROLLED | DEPRECATED | REVOKED
          ]
        }
      ],
      "instances": [                        # optional, default []
        {
          "instance_id": 1,                 # int >= 1, unique
          "app_id": 1,                      # must name an app above
          "version_id": 1,                  # must name a version of that app
          "wallet": "0x…",                  # the instance's TEE wallet, unique
          "zk_verified": true,              # bool
          "status": "ACTIVE",               # ACTIVE | STOPPED | FAILED
          "instance_url": "http://…"        # optional, "" or http:// / https://, default ""
        }
      ],
      "guardians": {                        # optional (absent: no guardian set, version 0)
        "wallets": ["0x…"],                 # 1..16 distinct non-zero addresses
        "enc_keys": ["0x…"],                # X25519 HPKE public keys, 0x + 64 hex, non-zero,
                                            # one per wallet, same order
        "threshold": 2                      # int, 1..len(wallets)
      }
    }

Parsing is strict: unknown or missing keys, wrong JSON types (``true`` is not an int, ``1.0``
is not an int), status names outside the enums, duplicate ids or wallets, instances pointing at
missing apps / versions and malformed addresses are all rejected with a ``ValueError`` naming
the offending location. A guardian set follows KMSRegistry's ``setGuardians`` rules
(:mod:`novakms.auth.guardians`); when present it is version 1 (the file has no history), and
``set_guardians`` / ``clear_guardians`` bump the version like the contract does. Addresses
are ``0x`` + 40 hex digits in any case (checked with ``novakms.crypto.eth.normalize_wallet``,
EIP-55 checksum not enforced) and are stored in lowercase; ``to_json`` writes them in
lowercase and round-trips through ``from_json`` (a guardian set keeps its members and
threshold, not its version).

Mutations are synchronous and never await, so under trio every authorization sees the
registry either entirely before or entirely after a mutation.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from novakms.auth import policy
from novakms.auth.guardians import (
    GuardianSet,
    GuardianSetError,
    guardian_set,
    no_guardians,
    parse_enc_key,
)
from novakms.auth.model import (
    ZERO_ADDRESS,
    App,
    AppStatus,
    AppVersion,
    Identity,
    Instance,
    InstanceStatus,
    VersionStatus,
    peer_entry,
)
from novakms.auth.source import peer_refusal
from novakms.crypto.eth import normalize_wallet
from novakms.errors import RegistryFormatError

__all__ = ["RegistryFormatError", "StaticRegistry"]

_UINT256_MAX = 2**256 - 1

_E = TypeVar("_E", AppStatus, VersionStatus, InstanceStatus)
_T = TypeVar("_T")

_TOP_KEYS = ("kms_app_id", "operators", "apps", "instances", "guardians")
_GUARDIAN_KEYS = ("wallets", "enc_keys", "threshold")
_APP_KEYS = ("app_id", "status", "owner", "versions")
_VERSION_KEYS = ("version_id", "status")


_INSTANCE_KEYS = (
    "instance_id",
    "app_id",
    "version_id",
    "wallet",
    "zk_verified",
    "status",
    "instance_url",
)


def _normalize_wallet(value: object, what: str) -> str:
    """Check an address and return it in lowercase (``novakms.crypto.eth.normalize_wallet``).

    Args:
        value: the candidate address.
        what: how to name it in an error message.

    Returns:
        ``0x`` + 40 lowercase hex digits.

    Raises:
        RegistryFormatError: ``value`` is not a string of the form ``0x`` + 40 hex digits.
    """
    if isinstance(value, str):
        try:
            return normalize_wallet(value)
        except ValueError:
            pass
    raise RegistryFormatError(f"{what}: {value!r} is not an address (0x + 40 hex digits)")


def _check_id(value: object, what: str) -> int:
    """Check a registry id (uint256, at least 1; 0 means "none" on chain).

    Args:
        value: the candidate id.
        what: how to name it in an error message.

    Returns:
        The id.

    Raises:
        ValueError: not an int (bools rejected), or outside ``1 .. 2**256 - 1``.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise RegistryFormatError(f"{what}: expected an integer, got {type(value).__name__}")
    if not 1 <= value <= _UINT256_MAX:
        raise RegistryFormatError(f"{what}: {value} is out of range (1 .. 2**256-1)")
    return value


def _check_status(enum: type[_E], value: object, what: str) -> _E:
    """Accept a status as an enum member or as its exact name.

    Args:
        enum: the status enum.
        value: a member of ``enum``, or a member name such as ``"ACTIVE"``.
        what: how to name it in an error message.

    Returns:
        The enum member.

    Raises:
        ValueError: ``value`` is neither a member of ``enum`` nor one of its names.
    """
    if isinstance(value, enum):
        return value
    if isinstance(value, str) and value in enum.__members__:
        return enum.__members__[value]
    names = ", ".join(enum.__members__)
    raise RegistryFormatError(f"{what}: {value!r} is not a {enum.__name__} (one of {names})")


def _check_url(value: object, what: str) -> str:
    """Check an instance URL: empty, or starting with ``http://`` / ``https://``.

    Args:
        value: the candidate URL.
        what: how to name it in an error message.

    Returns:
        The URL.

    Raises:
        ValueError: not a string, or a non-empty string with another scheme.
    """
    if not isinstance(value, str):
        raise RegistryFormatError(f"{what}: expected a string, got {type(value).__name__}")
    if value and not value.startswith(("http://", "https://")):
        raise RegistryFormatError(f"{what}: {value!r} must start with http:// or https://")
    return value


def _object(
    data: object, where: str, required: tuple[str, ...], allowed: tuple[str, ...]
) -> dict[str, object]:
    """Check that ``data`` is a JSON object with exactly the allowed keys.

    Args:
        data: the parsed JSON value.
        where: its location, for error messages.
        required: keys that must be present.
        allowed: every key that may be present (including ``required``).

    Returns:
        ``data`` as a dict.

    Raises:
        ValueError: not an object, an unknown key, or a missing required key.
    """
    if not isinstance(data, dict):
        raise RegistryFormatError(f"{where}: expected an object, got {type(data).__name__}")
    for key in data:
        if key not in allowed:
            raise RegistryFormatError(
                f"{where}: unknown key {key!r} (allowed: {', '.join(allowed)})"
            )
    for key in required:
        if key not in data:
            raise RegistryFormatError(f"{where}: missing key {key!r}")
    return {str(k): v for k, v in data.items()}


def _array(data: object, where: str) -> list[object]:
    """Check that ``data`` is a JSON array.

    Args:
        data: the parsed JSON value.
        where: its location, for error messages.

    Returns:
        ``data`` as a list.

    Raises:
        ValueError: ``data`` is not a list.
    """
    if not isinstance(data, list):
        raise RegistryFormatError(f"{where}: expected an array, got {type(data).__name__}")
    return data


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json`` object hook: refuse objects that repeat a key.

    Args:
        pairs: the object's key/value pairs in document order.

    Returns:
        The object as a dict.

    Raises:
        ValueError: a key occurs twice.
    """
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise RegistryFormatError(f"duplicate JSON key {key!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    """``json`` hook: refuse ``NaN`` / ``Infinity`` literals.

    Args:
        name: the literal.

    Returns:
        Never returns.

    Raises:
        ValueError: always.
    """
    raise RegistryFormatError(f"JSON literal {name} is not allowed")


class StaticRegistry:
    """In-memory registry records, authorizing through :mod:`novakms.auth.policy`.

    Implements :class:`novakms.auth.source.AuthorizationSource` with name ``"static"``.

    Args:
        apps: the apps.
        versions: the app versions; each must belong to an app in ``apps``.
        instances: the instances; each must point at an existing app and version.
        kms_app_id: ``KMSRegistry.kmsAppId``; None when there is no KMS app (no peer passes).
        operators: ``KMSRegistry.getOperators()`` wallets.
        guardians: the guardian set (``KMSRegistry.guardians()``); None: none, version 0.

    Raises:
        ValueError: invalid or duplicate records, dangling references, bad addresses.
    """

    def __init__(
        self,
        *,
        apps: Iterable[App] = (),
        versions: Iterable[AppVersion] = (),
        instances: Iterable[Instance] = (),
        kms_app_id: int | None = None,
        operators: Iterable[str] = (),
        guardians: GuardianSet | None = None,
    ) -> None:
        self._apps: dict[int, App] = {}
        self._versions: dict[tuple[int, int], AppVersion] = {}
        self._instances: dict[int, Instance] = {}
        self._by_wallet: dict[str, int] = {}
        self._operators: set[str] = set()
        self._kms_app_id: int | None = (
            None if kms_app_id is None else _check_id(kms_app_id, "kms_app_id")
        )
        for app in apps:
            self.add_app(app)
        for version in versions:
            self.add_version(version)
        for instance in instances:
            self.add_instance(instance)
        for wallet in operators:
            self.add_operator(wallet)
        if guardians is not None and not isinstance(guardians, GuardianSet):
            raise RegistryFormatError("guardians must be a GuardianSet")
        self._guardians = no_guardians() if guardians is None else guardians

    # ------------------------------------------------------------------ AuthorizationSource

    @property
    def name(self) -> str:
        """The source name, ``"static"``."""
        return "static"

    async def authorize_app(self, wallet: str) -> Identity:
        """Authorize ``wallet`` for app operations against the current records.

        Args:
            wallet: the authenticated wallet.

        Returns:
            The wallet's identity with role ``"app"``.

        Raises:
            Forbidden: as decided by :func:`novakms.auth.policy.authorize_app`.
        """
        instance, app, version = self._records(wallet)
        return policy.authorize_app(
            wallet=wallet,
            instance=instance,
            app=app,
            version=version,
            kms_app_id=self._kms_app_id,
        )

    async def authorize_peer(self, wallet: str) -> Identity:
        """Authorize ``wallet`` as a KMS peer against the current records.

        Args:
            wallet: the authenticated wallet.

        Returns:
            The wallet's identity with role ``"peer"``.

        Raises:
            Forbidden: as decided by :func:`novakms.auth.policy.authorize_peer`.
        """
        instance, app, version = self._records(wallet)
        return policy.authorize_peer(
            wallet=wallet,
            instance=instance,
            app=app,
            version=version,
            kms_app_id=self._kms_app_id,
            is_operator=self.is_operator(wallet),
        )

    def describe(self) -> dict[str, object]:
        """Summary for the ``status`` operation.

        Returns:
            ``{"source": "static", "kms_app_id", "apps", "versions", "instances",
            "operators", "guardian_set_version"}`` with record counts.
        """
        return {
            "source": self.name,
            "kms_app_id": self._kms_app_id,
            "apps": len(self._apps),
            "versions": len(self._versions),
            "instances": len(self._instances),
            "operators": len(self._operators),
            "guardian_set_version": self._guardians.version,
        }

    async def guardian_set(self) -> GuardianSet:
        """The guardian set, as the chain source's ``guardian_set`` returns it.

        Returns:
            The set; empty with version 0 when the registry has none.
        """
        return self._guardians

    def _records(self, wallet: str) -> tuple[Instance | None, App | None, AppVersion | None]:
        """Fetch the records the policy needs for ``wallet``.

        Args:
            wallet: the wallet to look up.

        Returns:
            ``(instance, app, version)``; each None when absent.
        """
        instance = self.instance_by_wallet(wallet)
        if instance is None:
            return None, None, None
        return (
            instance,
            self.app(instance.app_id),
            self.version(instance.app_id, instance.version_id),
        )

    # ------------------------------------------------------------------ lookups

    @property
    def kms_app_id(self) -> int | None:
        """``KMSRegistry.kmsAppId`` (None if not set)."""
        return self._kms_app_id

    @property
    def operators(self) -> frozenset[str]:
        """The operator wallets (lowercase)."""
        return frozenset(self._operators)

    async def peers(self) -> list[dict[str, Any]]:
        """The KMS operators with their instance details (for the ``nodes`` operation)."""
        result: list[dict[str, Any]] = []
        for wallet in sorted(self._operators):
            refusal = await peer_refusal(self.authorize_peer, wallet)
            result.append(peer_entry(wallet, self.instance_by_wallet(wallet), refusal))
        return result

    def is_operator(self, wallet: str) -> bool:
        """Whether ``wallet`` is in the operator set.

        Args:
            wallet: an address, any case.

        Returns:
            True if it is an operator.
        """
        return wallet.lower() in self._operators

    def instance_by_wallet(self, wallet: str) -> Instance | None:
        """The instance registered for ``wallet`` (``getInstanceByWallet``).

        Args:
            wallet: an address, any case.

        Returns:
            The instance, or None if no instance has that wallet.
        """
        instance_id = self._by_wallet.get(wallet.lower())
        return None if instance_id is None else self._instances[instance_id]

    def instance(self, instance_id: int) -> Instance | None:
        """The instance with ``instance_id`` (``getInstance``).

        Args:
            instance_id: the instance id.

        Returns:
            The instance, or None.
        """
        return self._instances.get(instance_id)

    def app(self, app_id: int) -> App | None:
        """The app with ``app_id`` (``getApp``).

        Args:
            app_id: the app id.

        Returns:
            The app, or None.
        """
        return self._apps.get(app_id)

    def version(self, app_id: int, version_id: int) -> AppVersion | None:
        """The version ``version_id`` of app ``app_id`` (``getVersion``).

        Args:
            app_id: the app id.
            version_id: the version id within the app.

        Returns:
            The version, or None.
        """
        return self._versions.get((app_id, version_id))

    # ------------------------------------------------------------------ mutators

    def add_app(self, app: App) -> None:
        """Add an app.

        Args:
            app: the app; its owner address is normalized to lowercase.

        Raises:
            ValueError: bad id, status or owner, or the app id already exists.
        """
        app_id = _check_id(app.app_id, "app_id")
        status = _check_status(AppStatus, app.status, f"app {app_id}: status")
        owner = _normalize_wallet(app.owner, f"app {app_id}: owner")
        if app_id in self._apps:
            raise RegistryFormatError(f"duplicate app id {app_id}")
        self._apps[app_id] = dataclasses.replace(app, status=status, owner=owner)

    def add_version(self, version: AppVersion) -> None:
        """Add a version to an existing app.

        Args:
            version: the version.

        Raises:
            ValueError: bad ids or status, no such app, or the version already exists.
        """
        app_id = _check_id(version.app_id, "app_id")
        version_id = _check_id(version.version_id, f"app {app_id}: version_id")
        status = _check_status(
            VersionStatus, version.status, f"version {version_id} of app {app_id}: status"
        )
        if app_id not in self._apps:
            raise RegistryFormatError(
                f"version {version_id} belongs to app {app_id}, which does not exist"
            )
        if (app_id, version_id) in self._versions:
            raise RegistryFormatError(f"duplicate version id {version_id} in app {app_id}")
        self._versions[(app_id, version_id)] = dataclasses.replace(version, status=status)

    def add_instance(self, instance: Instance) -> None:
        """Add an instance of an existing app version.

        Args:
            instance: the instance; its wallet is normalized to lowercase.

        Raises:
            ValueError: bad fields, dangling app / version, duplicate instance id or wallet.
        """
        instance_id = _check_id(instance.instance_id, "instance_id")
        what = f"instance {instance_id}"
        app_id = _check_id(instance.app_id, f"{what}: app_id")
        version_id = _check_id(instance.version_id, f"{what}: version_id")
        wallet = _normalize_wallet(instance.wallet, f"{what}: wallet")
        status = _check_status(InstanceStatus, instance.status, f"{what}: status")
        if not isinstance(instance.zk_verified, bool):
            raise RegistryFormatError(f"{what}: zk_verified must be a bool")
        url = _check_url(instance.instance_url, f"{what}: instance_url")
        if app_id not in self._apps:
            raise RegistryFormatError(f"{what} points at app {app_id}, which does not exist")
        if (app_id, version_id) not in self._versions:
            raise RegistryFormatError(
                f"{what} points at version {version_id} of app {app_id}, which does not exist"
            )
        if instance_id in self._instances:
            raise RegistryFormatError(f"duplicate instance id {instance_id}")
        if wallet in self._by_wallet:
            raise RegistryFormatError(
                f"duplicate wallet {wallet} (instances {self._by_wallet[wallet]} and {instance_id})"
            )
        self._instances[instance_id] = dataclasses.replace(
            instance, wallet=wallet, status=status, instance_url=url
        )
        self._by_wallet[wallet] = instance_id

    def add_operator(self, wallet: str) -> None:
        """Add a wallet to the operator set.

        Args:
            wallet: the operator's address.

        Raises:
            ValueError: bad address, or already an operator.
        """
        normalized = _normalize_wallet(wallet, "operator")
        if normalized in self._operators:
            raise RegistryFormatError(f"duplicate operator {normalized}")
        self._operators.add(normalized)

    def set_guardians(
        self, wallets: Iterable[str], enc_keys: Iterable[bytes], threshold: int
    ) -> GuardianSet:
        """Replace the guardian set and bump its version (``KMSRegistry.setGuardians``).

        Args:
            wallets: the guardians' addresses, any case.
            enc_keys: their X25519 HPKE public keys (32 bytes each), same order.
            threshold: how many guardians recovery needs.

        Returns:
            The new set.

        Raises:
            ValueError: (:class:`~novakms.auth.guardians.GuardianSetError`) a broken rule; the
                current set is kept.
        """
        self._guardians = guardian_set(
            wallets=wallets,
            enc_keys=enc_keys,
            threshold=threshold,
            version=self._guardians.version + 1,
            allow_empty=False,
        )
        return self._guardians

    def clear_guardians(self) -> GuardianSet:
        """Empty the guardian set and bump its version (``KMSRegistry.clearGuardians``)."""
        self._guardians = no_guardians(self._guardians.version + 1)
        return self._guardians

    def remove_operator(self, wallet: str) -> None:
        """Remove a wallet from the operator set (no error if it is not there).

        Args:
            wallet: the operator's address, any case.
        """
        self._operators.discard(wallet.lower())

    def set_app_status(self, app_id: int, status: AppStatus | str) -> None:
        """Change an app's status (any transition is allowed here).

        Args:
            app_id: the app id.
            status: the new status, as a member or a name (``"REVOKED"``).

        Raises:
            KeyError: no such app.
            ValueError: ``status`` is not an AppStatus.
        """
        app = self._apps.get(app_id)
        if app is None:
            raise KeyError(f"no app {app_id}")
        new = _check_status(AppStatus, status, "status")
        self._apps[app_id] = dataclasses.replace(app, status=new)

    def set_version_status(self, app_id: int, version_id: int, status: VersionStatus | str) -> None:
        """Change a version's status (any transition is allowed here).

        Args:
            app_id: the app id.
            version_id: the version id within the app.
            status: the new status, as a member or a name (``"DEPRECATED"``).

        Raises:
            KeyError: no such version.
            ValueError: ``status`` is not a VersionStatus.
        """
        version = self._versions.get((app_id, version_id))
        if version is None:
            raise KeyError(f"no version {version_id} of app {app_id}")
        new = _check_status(VersionStatus, status, "status")
        self._versions[(app_id, version_id)] = dataclasses.replace(version, status=new)

    def set_instance_status(self, instance_id: int, status: InstanceStatus | str) -> None:
        """Change an instance's status (any transition is allowed here).

        Args:
            instance_id: the instance id.
            status: the new status, as a member or a name (``"STOPPED"``).

        Raises:
            KeyError: no such instance.
            ValueError: ``status`` is not an InstanceStatus.
        """
        instance = self._instances.get(instance_id)
        if instance is None:
            raise KeyError(f"no instance {instance_id}")
        new = _check_status(InstanceStatus, status, "status")
        self._instances[instance_id] = dataclasses.replace(instance, status=new)

    # ------------------------------------------------------------------ JSON

    @classmethod
    def from_json(cls, data: object) -> StaticRegistry:
        """Build a registry from parsed JSON (the format in the module docstring).

        Args:
            data: the parsed JSON document.

        Returns:
            The registry.

        Raises:
            ValueError: the document does not follow the format; the message names the location.
        """
        top = _object(data, "registry", (), _TOP_KEYS)
        raw_kms = top.get("kms_app_id")
        kms_app_id = None if raw_kms is None else _check_id(raw_kms, "kms_app_id")
        registry = cls(kms_app_id=kms_app_id)

        for i, item in enumerate(_array(top.get("operators", []), "operators")):
            where = f"operators[{i}]"
            _add(registry.add_operator, _normalize_wallet(item, where), where)

        for i, item in enumerate(_array(top.get("apps", []), "apps")):
            where = f"apps[{i}]"
            fields = _object(item, where, ("app_id", "status"), _APP_KEYS)
            app_id = _check_id(fields["app_id"], f"{where}.app_id")
            app = App(
                app_id=app_id,
                status=_json_status(AppStatus, fields["status"], f"{where}.status"),
                owner=_normalize_wallet(fields.get("owner", ZERO_ADDRESS), f"{where}.owner"),
            )
            _add(registry.add_app, app, where)
            for j, vitem in enumerate(_array(fields.get("versions", []), f"{where}.versions")):
                vwhere = f"{where}.versions[{j}]"
                vfields = _object(vitem, vwhere, _VERSION_KEYS, _VERSION_KEYS)
                version = AppVersion(
                    app_id=app_id,
                    version_id=_check_id(vfields["version_id"], f"{vwhere}.version_id"),
                    status=_json_status(VersionStatus, vfields["status"], f"{vwhere}.status"),
                )
                _add(registry.add_version, version, vwhere)

        for i, item in enumerate(_array(top.get("instances", []), "instances")):
            where = f"instances[{i}]"
            fields = _object(item, where, _INSTANCE_KEYS[:-1], _INSTANCE_KEYS)
            zk = fields["zk_verified"]
            if not isinstance(zk, bool):
                raise RegistryFormatError(
                    f"{where}.zk_verified: expected a bool, got {type(zk).__name__}"
                )
            instance = Instance(
                instance_id=_check_id(fields["instance_id"], f"{where}.instance_id"),
                app_id=_check_id(fields["app_id"], f"{where}.app_id"),
                version_id=_check_id(fields["version_id"], f"{where}.version_id"),
                wallet=_normalize_wallet(fields["wallet"], f"{where}.wallet"),
                zk_verified=zk,
                status=_json_status(InstanceStatus, fields["status"], f"{where}.status"),
                instance_url=_check_url(fields.get("instance_url", ""), f"{where}.instance_url"),
            )
            _add(registry.add_instance, instance, where)

        if "guardians" in top:
            registry._guardians = _json_guardians(top["guardians"])
        return registry

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> StaticRegistry:
        """Read a registry from a JSON file.

        Args:
            path: the file to read (UTF-8 JSON, format in the module docstring).

        Returns:
            The registry.

        Raises:
            OSError: the file cannot be read.
            ValueError: the file is not valid JSON or not a valid registry (message names the
                file and the location).
        """
        raw = Path(path).read_bytes()
        try:
            data = json.loads(
                raw.decode("utf-8"),
                object_pairs_hook=_reject_duplicate_keys,
                parse_constant=_reject_constant,
            )
            return cls.from_json(data)
        except ValueError as exc:
            raise RegistryFormatError(f"{os.fspath(path)}: {exc}") from exc

    def to_json(self) -> dict[str, Any]:
        """Render the registry in the JSON format ``from_json`` reads.

        Returns:
            A JSON-able dict; ids sorted, addresses lowercase, statuses by name.
        """
        apps: list[dict[str, Any]] = []
        for app_id in sorted(self._apps):
            app = self._apps[app_id]
            versions = [
                {"version_id": v.version_id, "status": v.status.name}
                for (aid, _), v in sorted(self._versions.items())
                if aid == app_id
            ]
            apps.append(
                {
                    "app_id": app.app_id,
                    "status": app.status.name,
                    "owner": app.owner,
                    "versions": versions,
                }
            )
        instances = [
            {
                "instance_id": inst.instance_id,
                "app_id": inst.app_id,
                "version_id": inst.version_id,
                "wallet": inst.wallet,
                "zk_verified": inst.zk_verified,
                "status": inst.status.name,
                "instance_url": inst.instance_url,
            }
            for _, inst in sorted(self._instances.items())
        ]
        doc: dict[str, Any] = {
            "kms_app_id": self._kms_app_id,
            "operators": sorted(self._operators),
            "apps": apps,
            "instances": instances,
        }
        if not self._guardians.empty:  # the file keeps no version (nor a cleared set)
            doc["guardians"] = {
                "wallets": list(self._guardians.wallets),
                "enc_keys": ["0x" + key.hex() for key in self._guardians.enc_keys],
                "threshold": self._guardians.threshold,
            }
        return doc


def _json_status(enum: type[_E], value: object, where: str) -> _E:
    """Parse a JSON status: its exact name as a string (numbers are not accepted in JSON).

    Args:
        enum: the status enum.
        value: the JSON value.
        where: its location, for error messages.

    Returns:
        The enum member.

    Raises:
        ValueError: not a string, or not one of the enum's names.
    """
    if not isinstance(value, str):
        raise RegistryFormatError(f"{where}: expected a status name, got {type(value).__name__}")
    return _check_status(enum, value, where)


def _json_guardians(data: object) -> GuardianSet:
    """Parse the ``"guardians"`` object (version 1: the file has no history).

    Args:
        data: the JSON value.

    Returns:
        The guardian set.

    Raises:
        ValueError: not the documented object, or a set KMSRegistry would refuse.
    """
    fields = _object(data, "guardians", _GUARDIAN_KEYS, _GUARDIAN_KEYS)
    wallets = [
        _normalize_wallet(item, f"guardians.wallets[{i}]")
        for i, item in enumerate(_array(fields["wallets"], "guardians.wallets"))
    ]
    keys = []
    for i, item in enumerate(_array(fields["enc_keys"], "guardians.enc_keys")):
        try:
            keys.append(parse_enc_key(item))
        except GuardianSetError as exc:
            raise RegistryFormatError(f"guardians.enc_keys[{i}]: {exc}") from exc
    threshold = fields["threshold"]
    if isinstance(threshold, bool) or not isinstance(threshold, int):
        raise RegistryFormatError(
            f"guardians.threshold: expected an integer, got {type(threshold).__name__}"
        )
    try:
        return guardian_set(
            wallets=wallets, enc_keys=keys, threshold=threshold, version=1, allow_empty=False
        )
    except GuardianSetError as exc:
        raise RegistryFormatError(f"guardians: {exc}") from exc


def _add(adder: Callable[[_T], None], record: _T, where: str) -> None:
    """Call a registry ``add_*`` method, prefixing any error with the JSON location.

    Args:
        adder: the bound ``add_*`` method.
        record: the record to add.
        where: the record's JSON location.

    Raises:
        ValueError: the record was rejected; the message starts with ``where``.
    """
    try:
        adder(record)
    except ValueError as exc:
        raise RegistryFormatError(f"{where}: {exc}") from exc
