"""The interface every authorization source implements.

A source answers "who is this wallet?" for the server's request path. It only *fetches* registry
records (from a JSON file, or from the chain through a poller and cache) and hands them to the
pure policy functions of :mod:`novakms.auth.policy`, so every source applies exactly the same
rules. Sources:

* ``static`` — :class:`novakms.auth.static.StaticRegistry`, records from a JSON file (tests and
  development without a chain);
* ``chain`` — :class:`novakms.chain.source.ChainAuthorizationSource`, the on-chain
  NovaAppRegistry / KMSRegistry behind a cache and a poller.

Two declared roles, so the server never probes a source for attributes:

* :class:`Registry` — the request path: ``authorize_app``,
  ``authorize_peer``, ``describe``. Every source is one.
* :class:`Membership` — the cluster's view of the registry: the KMS operators (``peers``), the
  owner's pin of the master secret (``pinned`` / ``master_secret_pin``), the guardian set, and
  the poller that keeps them fresh (``run``, ``poll_interval``). Both sources are one (the
  static file has no pin: always unset, and nothing to poll). A node built without a
  membership (``Node.membership is None``) runs no replicator, no pin watch and no poller.

Contract for implementations:

* ``authorize_app`` / ``authorize_peer`` raise :class:`novakms.errors.Forbidden` (with the
  policy's ``reason``) when the registry says no, and :class:`novakms.errors.Unavailable` with
  ``reason="auth_source"`` when the source cannot decide (e.g. the chain is unreachable and the
  wallet is not cached). They never raise anything else for a well-formed wallet.
* The answer reflects the registry *at the time of the call* (within the source's documented
  staleness bound), so callers authorize on every request rather than once per connection.
* ``describe`` returns a small JSON-able map for the ``status`` operation; it contains no
  secrets and always includes ``"source": name``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

from novakms.auth.guardians import GuardianSet
from novakms.auth.model import Identity
from novakms.errors import Forbidden

__all__ = ["Membership", "Registry", "peer_refusal"]


async def peer_refusal(
    authorize_peer: Callable[[str], Awaitable[Identity]], wallet: str
) -> str | None:
    """The peer policy's verdict on ``wallet``: None when authorized, else the refusal reason.

    Both sources' ``peers()`` report it, so the cluster dials, pushes to and bootstraps from
    exactly the wallets whose own peer requests would be admitted.

    Raises:
        Unavailable: the source cannot decide now.
    """
    try:
        await authorize_peer(wallet)
    except Forbidden as exc:
        return str(exc.details.get("reason", "forbidden"))
    return None


@runtime_checkable
class Registry(Protocol):
    """Decides whether an authenticated wallet may act as an app or as a KMS peer."""

    @property
    def name(self) -> str:
        """Short source name for ``status`` and logs, e.g. ``"static"`` or ``"chain"``."""
        ...

    async def authorize_app(self, wallet: str) -> Identity:
        """Authorize ``wallet`` for app operations.

        Args:
            wallet: the wallet recovered from the handshake signature (lowercase ``0x`` + 40 hex).

        Returns:
            The wallet's identity with role ``"app"``.

        Raises:
            Forbidden: the registry denies it (``reason`` as in PROTOCOL §7).
            Unavailable: ``reason="auth_source"``, the source cannot decide right now.
        """
        ...

    async def authorize_peer(self, wallet: str) -> Identity:
        """Authorize ``wallet`` as another KMS node (peer operations).

        Args:
            wallet: the wallet recovered from the handshake signature (lowercase ``0x`` + 40 hex).

        Returns:
            The wallet's identity with role ``"peer"``.

        Raises:
            Forbidden: the registry denies it (app reasons, ``not_kms_app``, ``not_operator``).
            Unavailable: ``reason="auth_source"``, the source cannot decide right now.
        """
        ...

    def describe(self) -> dict[str, object]:
        """A small JSON-able summary for the ``status`` operation (no secrets).

        Returns:
            A map that includes at least ``{"source": name}``.
        """
        ...


@runtime_checkable
class Membership(Protocol):
    """The cluster's view of the registry: operators, the owner's pin, guardians, the poller."""

    @property
    def poll_interval(self) -> float:
        """Seconds between polls of the registry (the pin watch follows the same beat)."""
        ...

    async def peers(self) -> list[dict[str, Any]]:
        """The KMS operators, each with its instance details and the peer policy's verdict.

        Returns:
            One map per operator wallet: ``wallet``, ``instance_id``, ``instance_url``,
            ``status``, ``authorized`` (the same verdict its own peer requests get) and
            ``reason`` (:func:`novakms.auth.model.peer_entry`).

        Raises:
            Unavailable: the source cannot say now.
        """
        ...

    def pinned(self) -> str | None:
        """The owner's pin (``"0x"`` + 64 hex of ``masterSecretHash``) as last read, or None.

        Never reads the registry: the pin watch calls it every ``poll_interval``.
        """
        ...

    async def master_secret_pin(self) -> str | None:
        """The owner's pin, read fresh (the bootstrap decides on it).

        Raises:
            Unavailable: the registry cannot be read (the bootstrap waits; it never guesses).
        """
        ...

    async def guardian_set(self) -> GuardianSet:
        """The owner's guardian set (empty, version 0, when none was ever configured).

        Raises:
            Unavailable: ``reason="auth_source"``, the source cannot say now.
        """
        ...

    async def run(self, *, task_status: Any) -> None:
        """Keep the membership fresh until cancelled; ``task_status.started()`` at once.

        ``task_status`` is trio's (``nursery.start``); typed loosely so that this module
        stays free of trio.
        """
        ...
