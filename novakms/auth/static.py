"""A static, in-memory registry: the ``static`` authorization source.

It holds the same records a chain-backed source reads from NovaAppRegistry / KMSRegistry, and
decides with the same pure policy (:mod:`novakms.auth.policy`). It serves tests and development
without a chain; its mutators let tests revoke or stop things on a running server. The file
format it loads and writes, and the rules of each field, are :mod:`novakms.auth.registry_file`.

Mutations are synchronous and never await, so under trio every authorization sees the
registry either entirely before or entirely after a mutation.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from novakms.auth import policy, registry_file
from novakms.auth.guardians import (
    GuardianSet,
    guardian_set,
    no_guardians,
)
from novakms.auth.model import (
    App,
    AppStatus,
    AppVersion,
    Identity,
    Instance,
    InstanceStatus,
    VersionStatus,
    peer_entry,
)
from novakms.auth.registry_file import check_id, check_status, check_url, check_wallet
from novakms.auth.source import peer_refusal
from novakms.errors import RegistryFormatError

__all__ = ["StaticRegistry"]

_T = TypeVar("_T")


class StaticRegistry:
    """In-memory registry records, authorizing through :mod:`novakms.auth.policy`.

    Implements :class:`novakms.auth.source.Registry` with name ``"static"``.

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
        self._decisions = policy.AppDecisions()
        self._operators: set[str] = set()
        self._kms_app_id: int | None = (
            None if kms_app_id is None else check_id(kms_app_id, "kms_app_id")
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

    # ------------------------------------------------------------------ Registry

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
        return self._decisions.authorize_app(
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

    # Membership (novakms.auth.source): a file has no pin and nothing to poll.
    poll_interval = 1.0

    def pinned(self) -> str | None:
        """Always None: the static registry has no ``masterSecretHash``."""
        return None

    async def master_secret_pin(self) -> str | None:
        """Always None (see :meth:`pinned`)."""
        return None

    async def run(self, *, task_status: Any) -> None:
        """Nothing to poll: reports started and returns."""
        task_status.started()

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
        app_id = check_id(app.app_id, "app_id")
        status = check_status(AppStatus, app.status, f"app {app_id}: status")
        owner = check_wallet(app.owner, f"app {app_id}: owner")
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
        app_id = check_id(version.app_id, "app_id")
        version_id = check_id(version.version_id, f"app {app_id}: version_id")
        status = check_status(
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
        instance_id = check_id(instance.instance_id, "instance_id")
        what = f"instance {instance_id}"
        app_id = check_id(instance.app_id, f"{what}: app_id")
        version_id = check_id(instance.version_id, f"{what}: version_id")
        wallet = check_wallet(instance.wallet, f"{what}: wallet")
        status = check_status(InstanceStatus, instance.status, f"{what}: status")
        if not isinstance(instance.zk_verified, bool):
            raise RegistryFormatError(f"{what}: zk_verified must be a bool")
        url = check_url(instance.instance_url, f"{what}: instance_url")
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
        normalized = check_wallet(wallet, "operator")
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
        new = check_status(AppStatus, status, "status")
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
        new = check_status(VersionStatus, status, "status")
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
        new = check_status(InstanceStatus, status, "status")
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
        kms_app_id, entries = registry_file.parse_document(data)
        registry = cls(kms_app_id=kms_app_id)
        for entry in entries:
            record = entry.record
            if isinstance(record, GuardianSet):
                registry._guardians = record
            elif isinstance(record, str):
                _add(registry.add_operator, record, entry.where)
            elif isinstance(record, App):
                _add(registry.add_app, record, entry.where)
            elif isinstance(record, AppVersion):
                _add(registry.add_version, record, entry.where)
            else:
                _add(registry.add_instance, record, entry.where)
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
            return cls.from_json(registry_file.decode_document(raw))
        except ValueError as exc:
            raise RegistryFormatError(f"{os.fspath(path)}: {exc}") from exc

    def to_json(self) -> dict[str, Any]:
        """Render the registry in the JSON format ``from_json`` reads.

        Returns:
            A JSON-able dict; ids sorted, addresses lowercase, statuses by name.
        """
        return registry_file.render_document(
            kms_app_id=self._kms_app_id,
            operators=self._operators,
            apps=self._apps.values(),
            versions=self._versions.values(),
            instances=self._instances.values(),
            guardians=self._guardians,
        )


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
