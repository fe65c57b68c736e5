"""The state one KMS node serves from: identity, secret, authorization source, limits, counters.

No I/O here; the server and the handlers share one :class:`Node`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from novakms import __version__
from novakms.auth.ratelimit import KeyedRateLimiter
from novakms.auth.source import AuthorizationSource
from novakms.config import Limits, Mode
from novakms.crypto.kdf import MASTER_SECRET_SIZE, secret_fingerprint
from novakms.crypto.signer import Signer
from novakms.errors import Unavailable

__all__ = ["Node"]


@dataclass(eq=False, kw_only=True)
class Node:
    """One node's serving state.

    Attributes:
        signer: the node's wallet signer (local key in development, Odyn in an enclave).
        auth: where app and peer authorization comes from.
        limits: all limits.
        mode: development or enclave.
        master_secret: the cluster master secret, None until the node has one.
    """

    signer: Signer
    auth: AuthorizationSource
    limits: Limits
    mode: Mode
    master_secret: bytes | None = field(default=None, repr=False)
    connections: int = 0
    version: str = __version__
    wallet_limiter: KeyedRateLimiter = field(init=False, repr=False)
    handshake_limiter: KeyedRateLimiter = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.master_secret is not None and len(self.master_secret) != MASTER_SECRET_SIZE:
            raise ValueError("the master secret must be 32 bytes")
        self.wallet_limiter = KeyedRateLimiter(
            rate=self.limits.wallet_rate, burst=self.limits.wallet_burst
        )
        self.handshake_limiter = KeyedRateLimiter(
            rate=self.limits.handshake_rate, burst=self.limits.handshake_burst
        )

    @property
    def wallet(self) -> str:
        """This node's wallet."""
        return self.signer.wallet

    def require_secret(self) -> bytes:
        """The master secret.

        Raises:
            Unavailable: reason ``not_ready`` while the node has no secret.
        """
        if self.master_secret is None:
            raise Unavailable("this node has no master secret yet", reason="not_ready")
        return self.master_secret

    def fingerprint(self) -> str | None:
        """Keccak-256 fingerprint of the master secret (safe to publish), or None."""
        return None if self.master_secret is None else secret_fingerprint(self.master_secret)
