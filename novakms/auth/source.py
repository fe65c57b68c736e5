"""The interface every authorization source implements.

A source answers "who is this wallet?" for the server's request path. It only *fetches* registry
records (from a JSON file, or from the chain through a poller and cache) and hands them to the
pure policy functions of :mod:`novakms.auth.policy`, so every source applies exactly the same
rules. Sources:

* ``static`` — :class:`novakms.auth.static.StaticRegistry`, records from a JSON file (tests and
  development without a chain);
* ``chain`` — the on-chain NovaAppRegistry / KMSRegistry behind a cache (added later).

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
from typing import Protocol, runtime_checkable

from novakms.auth.model import Identity
from novakms.errors import Forbidden

__all__ = ["AuthorizationSource", "peer_refusal"]


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
class AuthorizationSource(Protocol):
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
