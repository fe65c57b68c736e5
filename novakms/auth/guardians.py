"""The guardian set: who can together recover the cluster master secret from a backup.

It mirrors KMSRegistry's guardian set (``setGuardians`` / ``clearGuardians`` / ``guardians()``):
``threshold`` of the ``wallets`` can recover the secret from shares encrypted to their X25519
HPKE public keys (``enc_keys``, same order). The owner replaces the set as a whole or clears
it, and every change bumps ``version``; version 0 means no set was ever configured, and a
cleared set is empty with a version above 0. Every source (KMSRegistry through the chain
source, the static JSON registry) builds the same :class:`GuardianSet` and applies exactly the
contract's rules, so a set the contract would refuse never reaches the recovery code.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeGuard

from novakms.crypto.eth import is_canonical_wallet, normalize_wallet
from novakms.errors import GuardianSetError

__all__ = [
    "ENC_KEY_SIZE",
    "MAX_GUARDIANS",
    "GuardianSet",
    "guardian_set",
    "no_guardians",
    "parse_enc_key",
]

MAX_GUARDIANS = 16
"""The largest guardian set (``KMSRegistry.MAX_GUARDIANS``)."""

ENC_KEY_SIZE = 32
"""Bytes of a guardian's X25519 HPKE public key (a ``bytes32`` on chain)."""

_UINT256_MAX = 2**256 - 1
_ZERO_WALLET = "0x" + "00" * 20
_ENC_KEY_RE = re.compile(r"0[xX][0-9a-fA-F]{64}")


@dataclass(frozen=True, slots=True, kw_only=True)
class GuardianSet:
    """One version of the guardian set, validated on construction.

    Attributes:
        wallets: the guardians' addresses, lowercase ``0x`` + 40 hex, in the owner's order;
            empty when there is no set.
        enc_keys: each guardian's X25519 HPKE public key (32 bytes), same order as ``wallets``.
        threshold: how many guardians recovery needs, ``1 .. len(wallets)``; 0 when empty.
        version: ``KMSRegistry.guardianSetVersion`` of this set; 0 = never configured.

    Raises:
        GuardianSetError: the values break a rule: more than :data:`MAX_GUARDIANS` wallets,
            lengths that differ, a threshold outside ``1 .. n`` (0 for an empty set), a
            zero, duplicate or non-canonical wallet, an enc key that is not 32 non-zero bytes,
            or a version outside ``0 .. 2**256 - 1`` (a non-empty set has version 1 or more).
    """

    wallets: tuple[str, ...]
    enc_keys: tuple[bytes, ...]
    threshold: int
    version: int

    def __post_init__(self) -> None:
        if not isinstance(self.wallets, tuple) or not isinstance(self.enc_keys, tuple):
            raise GuardianSetError("wallets and enc_keys must be tuples")
        if not _is_int(self.version) or not 0 <= self.version <= _UINT256_MAX:
            raise GuardianSetError(f"version {self.version!r} is not a uint256")
        if not _is_int(self.threshold):
            raise GuardianSetError(f"threshold {self.threshold!r} is not an integer")
        n = len(self.wallets)
        if len(self.enc_keys) != n:
            raise GuardianSetError(f"{n} wallets but {len(self.enc_keys)} enc keys")
        if n == 0:
            if self.threshold != 0:
                raise GuardianSetError("an empty guardian set has threshold 0")
            return
        if n > MAX_GUARDIANS:
            raise GuardianSetError(f"{n} guardians: at most {MAX_GUARDIANS}")
        if not 1 <= self.threshold <= n:
            raise GuardianSetError(f"threshold {self.threshold} is outside 1..{n}")
        if self.version == 0:
            raise GuardianSetError("a guardian set has version 1 or more (0 means none)")
        seen: set[str] = set()
        keys: set[bytes] = set()
        for i, (wallet, key) in enumerate(zip(self.wallets, self.enc_keys, strict=True)):
            if not is_canonical_wallet(wallet):
                raise GuardianSetError(f"wallet {i}: {wallet!r} is not a lowercase 0x address")
            if wallet == _ZERO_WALLET:
                raise GuardianSetError(f"wallet {i} is the zero address")
            if wallet in seen:
                raise GuardianSetError(f"wallet {i}: duplicate guardian {wallet}")
            seen.add(wallet)
            if not isinstance(key, bytes) or len(key) != ENC_KEY_SIZE:
                raise GuardianSetError(f"enc key {i}: expected {ENC_KEY_SIZE} bytes")
            if key == bytes(ENC_KEY_SIZE):
                raise GuardianSetError(f"enc key {i} is all zero")
            if key in keys:
                # One key holder with two shares would need fewer than `threshold` others.
                raise GuardianSetError(f"enc key {i}: the same key as another guardian's")
            keys.add(key)

    @property
    def empty(self) -> bool:
        """Whether there is no guardian (never configured, or cleared)."""
        return not self.wallets

    def is_guardian(self, wallet: str) -> bool:
        """Whether ``wallet`` (any case) is in the set (``KMSRegistry.isGuardian``)."""
        return isinstance(wallet, str) and wallet.lower() in self.wallets

    def enc_key(self, wallet: str) -> bytes | None:
        """The HPKE public key of guardian ``wallet`` (any case), or None if not a guardian."""
        if not isinstance(wallet, str) or wallet.lower() not in self.wallets:
            return None
        return self.enc_keys[self.wallets.index(wallet.lower())]

    def to_json(self) -> dict[str, Any]:
        """``{"version", "threshold", "wallets", "enc_keys"}``; keys as ``0x`` + 64 hex."""
        return {
            "version": self.version,
            "threshold": self.threshold,
            "wallets": list(self.wallets),
            "enc_keys": ["0x" + key.hex() for key in self.enc_keys],
        }


def no_guardians(version: int = 0) -> GuardianSet:
    """The empty set: never configured (version 0) or cleared in ``version``."""
    return GuardianSet(wallets=(), enc_keys=(), threshold=0, version=version)


def guardian_set(
    *,
    wallets: Iterable[object],
    enc_keys: Iterable[object],
    threshold: object,
    version: object,
    allow_empty: bool = True,
) -> GuardianSet:
    """Build a :class:`GuardianSet` from loosely typed values (decoded ABI, parsed input).

    Wallets may be in any case (EIP-55 checksummed, as eth-abi decodes them); enc keys must be
    ``bytes`` / ``bytearray`` of exactly 32 bytes; integers must be ``int`` (not ``bool``).

    Args:
        wallets: the guardians' addresses.
        enc_keys: their HPKE public keys, same order.
        threshold: the recovery threshold (0 for an empty set).
        version: the set's version.
        allow_empty: False for what ``setGuardians`` takes (a new set, an event announcing
            one): no guardians at all is then refused too.

    Returns:
        The validated set, wallets in lowercase.

    Raises:
        GuardianSetError: a value of the wrong type or shape, or a broken rule.
    """
    normalized: list[str] = []
    for i, wallet in enumerate(wallets):
        normalized.append(_wallet(wallet, i))
    keys: list[bytes] = []
    for i, key in enumerate(enc_keys):
        if not isinstance(key, bytes | bytearray):
            raise GuardianSetError(f"enc key {i}: expected bytes, got {type(key).__name__}")
        keys.append(bytes(key))
    if not _is_int(threshold) or not _is_int(version):
        raise GuardianSetError("threshold and version must be integers")
    if not allow_empty and not normalized and not keys:
        raise GuardianSetError(f"0 guardians: at least 1 (and at most {MAX_GUARDIANS})")
    return GuardianSet(
        wallets=tuple(normalized),
        enc_keys=tuple(keys),
        threshold=threshold,
        version=version,
    )


def parse_enc_key(text: object) -> bytes:
    """Parse an enc key written as ``0x`` + 64 hex digits (any case).

    Raises:
        GuardianSetError: anything else (length, prefix, non-hex, not a string).
    """
    if not isinstance(text, str) or _ENC_KEY_RE.fullmatch(text) is None:
        raise GuardianSetError(f"{text!r} is not an enc key (0x + 64 hex digits)")
    return bytes.fromhex(text[2:])


def _wallet(value: object, index: int) -> str:
    if isinstance(value, str):
        try:
            return normalize_wallet(value)
        except ValueError:
            pass
    raise GuardianSetError(f"wallet {index}: {value!r} is not an address")


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)
