"""Recovering a lost master secret from guardian shares: what a node accepts, keeps and tries.

Pure (sans-I/O): no trio, sockets, clock or RNG; ``now`` is an argument.

Theory of operation (PROTOCOL.md §8 ``guardian.*``, §9.3):

* A node that reports ``secret_lost`` (the owner pinned a fingerprint and no node holds a
  matching secret) accepts shares from the **current** on-chain guardians, each over its own
  authenticated ``guardian`` channel. :func:`check_share` refuses, before keeping anything, a
  share that is not for this guardian (its wallet and its position in the set), not for the
  current guardian set, not for the pinned fingerprint, or not of the set's threshold.
* :class:`RecoveryPool` keeps at most one share per guardian (a later one replaces it) for
  ``ttl`` seconds after it arrived, then forgets it: a share in memory is a liability.
* Once the pool holds at least ``threshold`` shares the node tries to reconstruct
  (``guardian_shares.recover``): only a result whose fingerprint equals the pin is ever
  installed, so a forged share can delay recovery (its combinations fail) but never installs a
  wrong secret, and once ``threshold`` good shares are present one combination succeeds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from novakms.errors import ShareRefused

__all__ = ["RecoveryPool", "ShareView", "check_share"]


class ShareView(Protocol):
    """The public fields of a guardian share that the checks read."""

    @property
    def x(self) -> int: ...
    @property
    def threshold(self) -> int: ...
    @property
    def count(self) -> int: ...
    @property
    def set_version(self) -> int: ...
    @property
    def fingerprint(self) -> str: ...
    @property
    def wallet(self) -> str: ...


def check_share(
    share: ShareView,
    *,
    sender: str,
    wallets: Sequence[str],
    threshold: int,
    set_version: int,
    pin: str,
) -> None:
    """Refuse a share that cannot be part of this cluster's recovery now.

    Args:
        share: the parsed share.
        sender: the guardian wallet the channel authenticated.
        wallets: the current guardian set, in its on-chain order (guardian i holds x = i + 1).
        threshold / set_version: of the current set.
        pin: the owner's pinned fingerprint (``0x`` + 64 hex, lowercase).

    Raises:
        ShareRefused: ``not_your_share``, ``stale_set``, ``wrong_fingerprint``,
            ``wrong_threshold``.
    """
    if share.wallet != sender or sender not in wallets or share.x != wallets.index(sender) + 1:
        raise ShareRefused("not_your_share", "this share is not the sending guardian's")
    if share.set_version != set_version or share.count != len(wallets):
        raise ShareRefused("stale_set", "this share belongs to another guardian set")
    if share.fingerprint.lower() != pin.lower():
        raise ShareRefused("wrong_fingerprint", "this share is not of the pinned secret")
    if share.threshold != threshold:
        raise ShareRefused("wrong_threshold", "this share's threshold is not the set's")


S = TypeVar("S")


@dataclass
class _Held(Generic[S]):
    share: S
    received_at: float


class RecoveryPool(Generic[S]):
    """The shares guardians brought, one per guardian, each for ``ttl`` seconds."""

    def __init__(self, *, ttl: float) -> None:
        self.ttl = ttl
        self._held: dict[str, _Held[S]] = {}

    def add(self, wallet: str, share: S, now: float) -> None:
        """Keep ``wallet``'s share (replacing an earlier one of the same guardian)."""
        self.expire(now)
        self._held[wallet] = _Held(share, now)

    def expire(self, now: float) -> None:
        """Forget shares older than ``ttl``."""
        for wallet in [w for w, h in self._held.items() if now - h.received_at >= self.ttl]:
            del self._held[wallet]

    def shares(self, now: float) -> list[S]:
        """The shares held now, in arrival order."""
        self.expire(now)
        return [h.share for h in sorted(self._held.values(), key=lambda h: h.received_at)]

    def senders(self, now: float) -> list[str]:
        """The guardians whose shares are held now (for ``status``; never the shares)."""
        self.expire(now)
        return sorted(self._held)

    def try_recover(self, now: float, recover: Callable[[list[S]], bytes | None]) -> bytes | None:
        """Run ``recover`` over the shares held now; forget them all once it succeeds."""
        secret = recover(self.shares(now))
        if secret is not None:
            self._held.clear()
        return secret

    def clear(self) -> None:
        self._held.clear()

    def __len__(self) -> int:
        return len(self._held)
