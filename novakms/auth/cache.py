"""The authorization cache: on-chain records kept fresh by registry events, with a backstop TTL.

Theory of operation:

* The cache holds **records** (instances by wallet, apps, versions, the KMS operator set), not
  decisions. Every request re-runs the pure policy over the cached records, so one event — an
  app deactivated, a version revoked — changes the answer for every wallet that depends on it.
* Registry events carry the new state (``AppStatusChanged(appId, newStatus)`` …), so
  :meth:`AuthCache.apply` updates exactly the affected records in place; the request path never
  waits for a re-fetch after an event.
* Every record expires ``ttl`` seconds after it was fetched (the backstop against a missed
  event). The poller refreshes records before they expire; if the chain is unreachable they
  expire and the wallet fails closed.
* A wallet the chain does not know is cached negatively for ``negative_ttl`` seconds, and an
  ``InstanceRegistered`` / ``InstanceWalletBound`` event for it clears that at once.
* The owner's pin and guardian set are single values that only events change
  (``MasterSecretHash*``, ``GuardiansSet`` / ``GuardiansCleared``); both events carry the whole
  new value. Guardian set versions only grow, so an event older than the cached set (read at a
  later block) is ignored.

Pure: ``now`` (monotonic seconds) is passed in; no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from novakms.auth.guardians import GuardianSet, guardian_set, no_guardians
from novakms.auth.model import App, AppStatus, AppVersion, Instance, InstanceStatus, VersionStatus
from novakms.errors import GuardianSetError

__all__ = ["AuthCache", "CachedInstance", "ChainEvent", "guardians_from_event"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainEvent:
    """A decoded registry event: its name, arguments and where it was emitted."""

    name: str
    args: dict[str, Any]
    block: int
    log_index: int = 0


def guardians_from_event(event: ChainEvent) -> GuardianSet:
    """The guardian set a ``GuardiansSet`` / ``GuardiansCleared`` event announces.

    Raises:
        GuardianSetError: missing arguments, or a set that breaks the contract's rules.
        ValueError: not a guardian event.
    """
    a = event.args
    if event.name == "GuardiansCleared":
        version = a.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise GuardianSetError(f"GuardiansCleared: bad version {version!r}")
        return no_guardians(version)
    if event.name != "GuardiansSet":
        raise ValueError(f"{event.name} is not a guardian event")
    missing = [k for k in ("version", "wallets", "encKeys", "threshold") if k not in a]
    if missing:
        raise GuardianSetError(f"GuardiansSet: missing {', '.join(missing)}")
    if not isinstance(a["wallets"], list | tuple) or not isinstance(a["encKeys"], list | tuple):
        raise GuardianSetError("GuardiansSet: wallets and encKeys must be arrays")
    return guardian_set(
        wallets=a["wallets"],
        enc_keys=a["encKeys"],
        threshold=a["threshold"],
        version=a["version"],
        allow_empty=False,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class CachedInstance:
    """The instance for a wallet (None: the chain has no instance for it) and when it expires."""

    instance: Instance | None
    expires_at: float


@dataclass(slots=True)
class _Timed:
    value: Any
    expires_at: float


class AuthCache:
    """Records from the registries, each with an expiry.

    Args:
        ttl: seconds a fetched record stays valid without being re-fetched (backstop).
        negative_ttl: seconds an unknown wallet is remembered as unknown.
        max_wallets: bound on cached wallets (the least recently fetched are dropped first).
    """

    def __init__(self, *, ttl: float, negative_ttl: float, max_wallets: int = 100_000) -> None:
        if ttl <= 0 or negative_ttl <= 0 or max_wallets < 1:
            raise ValueError("ttl, negative_ttl and max_wallets must be positive")
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.max_wallets = max_wallets
        self._wallets: dict[str, CachedInstance] = {}
        self._apps: dict[int, _Timed] = {}
        self._versions: dict[tuple[int, int], _Timed] = {}
        self.operators: frozenset[str] | None = None
        self.operators_expires_at = 0.0
        self.kms_app_id: int | None = None
        self.master_secret_hash: bytes | None = None
        self.guardians: GuardianSet | None = None  # None: not read yet

    # -- reads (None = unknown or expired: fetch it) ----------------------------------------

    def instance(self, wallet: str, now: float) -> CachedInstance | None:
        """The cached instance entry for a wallet, if still valid."""
        entry = self._wallets.get(wallet)
        return entry if entry is not None and now < entry.expires_at else None

    def app(self, app_id: int, now: float) -> App | None:
        """The cached app, if still valid."""
        entry = self._apps.get(app_id)
        return entry.value if entry is not None and now < entry.expires_at else None

    def version(self, app_id: int, version_id: int, now: float) -> AppVersion | None:
        """The cached version, if still valid."""
        entry = self._versions.get((app_id, version_id))
        return entry.value if entry is not None and now < entry.expires_at else None

    def operator_set(self, now: float) -> frozenset[str] | None:
        """The KMS operator set, if still valid."""
        return (
            self.operators
            if self.operators is not None and now < self.operators_expires_at
            else None
        )

    # -- writes from fetches ----------------------------------------------------------------

    def put_instance(self, wallet: str, instance: Instance | None, now: float) -> None:
        """Record what the chain says for a wallet (None or a zeroed instance: unknown)."""
        if instance is not None and instance.instance_id == 0:
            instance = None
        ttl = self.ttl if instance is not None else self.negative_ttl
        self._wallets.pop(wallet, None)
        if len(self._wallets) >= self.max_wallets:
            del self._wallets[next(iter(self._wallets))]
        self._wallets[wallet] = CachedInstance(instance=instance, expires_at=now + ttl)

    def put_app(self, app: App, now: float) -> None:
        """Record a fetched app."""
        self._apps[app.app_id] = _Timed(app, now + self.ttl)

    def put_version(self, version: AppVersion, now: float) -> None:
        """Record a fetched version."""
        self._versions[(version.app_id, version.version_id)] = _Timed(version, now + self.ttl)

    def put_operators(self, operators: Iterable[str], now: float) -> None:
        """Record the KMS operator set."""
        self.operators = frozenset(operators)
        self.operators_expires_at = now + self.ttl

    # -- events -----------------------------------------------------------------------------

    def apply(self, event: ChainEvent) -> bool:
        """Update exactly the records an event affects; True when anything cached changed."""
        a = event.args
        if event.name == "AppStatusChanged":
            return self._restatus(self._apps, int(a["appId"]), AppStatus(int(a["newStatus"])))
        if event.name == "VersionStatusChanged":
            key = (int(a["appId"]), int(a["versionId"]))
            return self._restatus(self._versions, key, VersionStatus(int(a["newStatus"])))
        if event.name == "InstanceStatusChanged":
            instance_id, status = int(a["instanceId"]), InstanceStatus(int(a["newStatus"]))
            changed = False
            for wallet, entry in list(self._wallets.items()):
                if entry.instance is not None and entry.instance.instance_id == instance_id:
                    self._wallets[wallet] = replace(
                        entry, instance=replace(entry.instance, status=status)
                    )
                    changed = True
            return changed
        if event.name in ("InstanceRegistered", "InstanceWalletBound"):
            wallet = str(a["teeWalletAddress"]).lower()
            known = self._wallets.get(wallet)
            if known is not None and known.instance is None:
                del self._wallets[wallet]  # forget "unknown": look it up on the next request
                return True
            return False
        if event.name in ("OperatorAdded", "OperatorRemoved"):
            if self.operators is None:
                return False
            operator = str(a["operator"]).lower()
            updated = (
                self.operators | {operator}
                if event.name == "OperatorAdded"
                else self.operators - {operator}
            )
            changed = updated != self.operators
            self.operators = updated
            return changed
        if event.name == "MasterSecretHashSet":
            self.master_secret_hash = bytes(a["hash"])
            return True
        if event.name == "MasterSecretHashReset":
            self.master_secret_hash = None
            return True
        if event.name in ("GuardiansSet", "GuardiansCleared"):
            return self.put_guardians(guardians_from_event(event))
        return False

    def put_guardians(self, guardians: GuardianSet) -> bool:
        """Record a guardian set unless a newer version is already cached; True if recorded."""
        if self.guardians is not None and guardians.version <= self.guardians.version:
            return False
        self.guardians = guardians
        return True

    @staticmethod
    def _restatus(table: dict[Any, _Timed], key: Any, status: Any) -> bool:
        entry = table.get(key)
        if entry is None:
            return False
        entry.value = replace(entry.value, status=status)
        return True

    # -- refresh planning -------------------------------------------------------------------

    def stale(
        self, now: float, *, within: float
    ) -> tuple[list[str], list[int], list[tuple[int, int]]]:
        """What expires within ``within`` seconds: (wallets, app ids, (app, version) pairs).

        Negative entries are not refreshed (they simply expire); known instances are.
        """
        horizon = now + within
        wallets = [
            w
            for w, e in self._wallets.items()
            if e.instance is not None and e.expires_at <= horizon
        ]
        apps = [k for k, e in self._apps.items() if e.expires_at <= horizon]
        versions = [k for k, e in self._versions.items() if e.expires_at <= horizon]
        return wallets, apps, versions

    def sizes(self) -> dict[str, int]:
        """Counts for ``status``."""
        known = sum(1 for e in self._wallets.values() if e.instance is not None)
        return {
            "wallets": known,
            "unknown_wallets": len(self._wallets) - known,
            "apps": len(self._apps),
            "versions": len(self._versions),
        }
