"""The authorization policy: a pure function of registry records (DESIGN §3, PROTOCOL §8).

Every authorization source (static JSON registry, chain poller + cache) fetches the records for a
wallet and calls :func:`authorize_app` or :func:`authorize_peer`; the rules live only here. The
functions never perform I/O and never look at a clock, so the same records always give the same
answer.

App rules, checked in this order (the first failing rule decides the ``reason``):

1. there is an instance for the wallet (``instance_id != 0``) and the records are consistent
   with each other (instance wallet == wallet, app / version ids match the instance's)
   — else ``unknown_wallet``;
2. the instance is ``ACTIVE`` — else ``instance_not_active``;
3. the instance is zk-verified — else ``instance_not_zk_verified``;
4. the app exists and is ``ACTIVE`` — else ``app_not_active``;
5. the version exists and is not ``REVOKED`` (``ENROLLED`` or ``DEPRECATED``)
   — else ``version_revoked``.

Peer rules: the app rules, then the instance's app is the KMS app (``not_kms_app``), then the
wallet is in the KMSRegistry operator set (``not_operator``).

:class:`AppDecisions` is :func:`authorize_app` with a memo of its last admission per wallet,
for the sources to call on every request: the records are frozen, so the same record objects
always give the same identity, and a source that learns anything new holds new objects.

A zeroed record (``app_id == 0`` / ``version_id == 0``, which is what the chain returns for a
missing app or version — with status 0, i.e. ``ACTIVE`` / ``ENROLLED``!) counts as missing.
"""

from __future__ import annotations

from novakms.auth.model import (
    App,
    AppStatus,
    AppVersion,
    Identity,
    Instance,
    InstanceStatus,
    VersionStatus,
)
from novakms.errors import Forbidden

__all__ = ["AppDecisions", "authorize_app", "authorize_peer"]


def _check_records(
    *, wallet: str, instance: Instance | None, app: App | None, version: AppVersion | None
) -> Instance:
    """Apply the app rules shared by both roles.

    Args:
        wallet: the authenticated wallet.
        instance: the instance registered for the wallet, or None.
        app: the instance's app, or None if it does not exist.
        version: the instance's app version, or None if it does not exist.

    Returns:
        The (checked) instance.

    Raises:
        Forbidden: a rule failed; ``details["reason"]`` says which.
    """
    if instance is None or instance.instance_id == 0:
        raise Forbidden(f"no instance is registered for wallet {wallet}", reason="unknown_wallet")
    iid, aid, vid = instance.instance_id, instance.app_id, instance.version_id
    if instance.wallet.lower() != wallet.lower():
        raise Forbidden(
            f"registry records for wallet {wallet} are inconsistent (instance {iid} has another"
            " wallet)",
            reason="unknown_wallet",
        )
    if app is not None and app.app_id != 0 and app.app_id != aid:
        raise Forbidden(
            f"registry records for wallet {wallet} are inconsistent (instance {iid} is of app"
            f" {aid}, got app {app.app_id})",
            reason="unknown_wallet",
        )
    if (
        version is not None
        and version.version_id != 0
        and (version.app_id, version.version_id) != (aid, vid)
    ):
        raise Forbidden(
            f"registry records for wallet {wallet} are inconsistent (instance {iid} runs version"
            f" {vid} of app {aid}, got version {version.version_id} of app {version.app_id})",
            reason="unknown_wallet",
        )
    if instance.status != InstanceStatus.ACTIVE:
        raise Forbidden(
            f"instance {iid} of app {aid} is {_name(InstanceStatus, instance.status)}",
            reason="instance_not_active",
        )
    if not instance.zk_verified:
        raise Forbidden(
            f"instance {iid} of app {aid} is not zk-verified", reason="instance_not_zk_verified"
        )
    if app is None or app.app_id == 0:
        raise Forbidden(f"app {aid} of instance {iid} does not exist", reason="app_not_active")
    if app.status != AppStatus.ACTIVE:
        raise Forbidden(f"app {aid} is {_name(AppStatus, app.status)}", reason="app_not_active")
    if version is None or version.version_id == 0:
        raise Forbidden(f"version {vid} of app {aid} does not exist", reason="version_revoked")
    if version.status not in (VersionStatus.ENROLLED, VersionStatus.DEPRECATED):
        raise Forbidden(
            f"version {vid} of app {aid} is {_name(VersionStatus, version.status)}",
            reason="version_revoked",
        )
    return instance


def _name(enum: type[AppStatus | VersionStatus | InstanceStatus], value: int) -> str:
    """Render a status for a message, tolerating values outside the enum.

    Args:
        enum: the status enum.
        value: the raw status value.

    Returns:
        The member name, or ``"status <n>"`` for an unknown value.
    """
    try:
        return enum(value).name
    except ValueError:
        return f"status {value}"


def authorize_app(
    *,
    wallet: str,
    instance: Instance | None,
    app: App | None,
    version: AppVersion | None,
    kms_app_id: int | None = None,
) -> Identity:
    """Decide whether ``wallet`` may use app operations.

    Args:
        wallet: the authenticated wallet (``0x`` + 40 hex; compared case-insensitively).
        instance: the instance registered for the wallet (``getInstanceByWallet``), or None.
        app: ``getApp(instance.app_id)``, or None if unknown / not fetched.
        version: ``getVersion(instance.app_id, instance.version_id)``, or None.
        kms_app_id: ``KMSRegistry.kmsAppId``: the KMS nodes' own app, whose instances are
            peers, never apps (their keys and store would be the cluster's own).

    Returns:
        The caller's :class:`Identity` with role ``"app"``; ``app_id`` comes from the registry.

    Raises:
        Forbidden: with ``reason`` ``unknown_wallet``, ``instance_not_active``,
            ``instance_not_zk_verified``, ``app_not_active``, ``version_revoked``, or
            ``kms_app`` for an instance of the KMS app.
    """
    inst = _check_records(wallet=wallet, instance=instance, app=app, version=version)
    if kms_app_id and inst.app_id == kms_app_id:
        raise Forbidden(
            f"instance {inst.instance_id} is of the KMS app {kms_app_id}: app operations "
            "are for other apps",
            reason="kms_app",
        )
    return Identity(
        wallet=wallet.lower(),
        app_id=inst.app_id,
        version_id=inst.version_id,
        instance_id=inst.instance_id,
        role="app",
    )


def authorize_peer(
    *,
    wallet: str,
    instance: Instance | None,
    app: App | None,
    version: AppVersion | None,
    kms_app_id: int | None,
    is_operator: bool,
) -> Identity:
    """Decide whether ``wallet`` is another KMS node allowed to use peer operations.

    Args:
        wallet: the authenticated wallet (``0x`` + 40 hex; compared case-insensitively).
        instance: the instance registered for the wallet, or None.
        app: the instance's app, or None.
        version: the instance's app version, or None.
        kms_app_id: ``KMSRegistry.kmsAppId`` (None or 0 when not configured: no peer passes).
        is_operator: whether the wallet is in ``KMSRegistry.getOperators()``.

    Returns:
        The caller's :class:`Identity` with role ``"peer"``.

    Raises:
        Forbidden: any app rule's reason, then ``not_kms_app`` or ``not_operator``.
    """
    inst = _check_records(wallet=wallet, instance=instance, app=app, version=version)
    if not kms_app_id or inst.app_id != kms_app_id:
        expected = "not configured" if not kms_app_id else f"app {kms_app_id}"
        raise Forbidden(
            f"instance {inst.instance_id} is of app {inst.app_id}, not the KMS app ({expected})",
            reason="not_kms_app",
        )
    if not is_operator:
        raise Forbidden(
            f"wallet {wallet} (instance {inst.instance_id}) is not a KMS operator",
            reason="not_operator",
        )
    return Identity(
        wallet=wallet.lower(),
        app_id=inst.app_id,
        version_id=inst.version_id,
        instance_id=inst.instance_id,
        role="peer",
    )


class AppDecisions:
    """:func:`authorize_app` remembering, per wallet, the identity it admitted and its records.

    A request of an admitted wallet whose records are the very objects (``is``) the last
    admission was decided on gets that admission's identity without the rules being run
    again: records are frozen, so the rules would decide the same. Any other records (an
    event applied, an entry refreshed, the file reloaded) are decided afresh; a refusal is
    never remembered. Bounded: the oldest wallet is forgotten first.

    Args:
        capacity: wallets remembered, ``>= 1``.
    """

    def __init__(self, capacity: int = 4096) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._admitted: dict[
            str, tuple[Instance, App | None, AppVersion | None, int | None, Identity]
        ] = {}

    def authorize_app(
        self,
        *,
        wallet: str,
        instance: Instance | None,
        app: App | None,
        version: AppVersion | None,
        kms_app_id: int | None = None,
    ) -> Identity:
        """As :func:`authorize_app` (same arguments, result and refusals)."""
        hit = self._admitted.get(wallet)
        if (
            hit is not None
            and hit[0] is instance
            and hit[1] is app
            and hit[2] is version
            and hit[3] == kms_app_id
        ):
            return hit[4]
        identity = authorize_app(
            wallet=wallet, instance=instance, app=app, version=version, kms_app_id=kms_app_id
        )
        assert instance is not None  # admitted
        if hit is None and len(self._admitted) >= self._capacity:
            del self._admitted[next(iter(self._admitted))]
        self._admitted[wallet] = (instance, app, version, kms_app_id, identity)
        return identity
