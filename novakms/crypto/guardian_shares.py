"""Guardian backup of the master secret: shares, their format, sealing and recovery (§9.3).

A guardian set (on chain: wallets in order, one X25519 encryption public key each, a
threshold ``k`` and a version) backs the 32-byte master secret up as a ``k``-of-``n`` Shamir
split (:mod:`novakms.crypto.shamir`). The split is deterministic: its seed is the internal key
``guardian-shares`` over the set version, the threshold and the wallets (PROTOCOL.md §9.2), so
every node holding the secret hands guardian ``i`` (0-based, on-chain order) the same share,
``x = i + 1``. A share travels as a strict CBOR map (:func:`encode_share` /
:func:`parse_share`) sealed to the guardian's encryption key with HPKE (RFC 9180, base mode,
DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305), the ``info`` binding the
guardian's wallet and the set version (:func:`hpke_info`).

:func:`recover` puts a secret back together from shares that may include forgeries: it only
ever returns a secret whose fingerprint equals the caller's pin.

Pure apart from two explicitly random operations: :func:`generate_enc_keypair`, and
:func:`seal_share` without ``ikm`` (a fresh HPKE ephemeral key); both draw from the operating
system's CSPRNG through ``cryptography``. Pass ``ikm`` to seal deterministically. Nothing here
logs or formats a secret, a share value or a private key (``repr`` of a share omits ``y``).
"""

from __future__ import annotations

import hmac
import math
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any, Final, Protocol

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from pyhpke import AEADId, CipherSuite, KDFId, KEMId, PyHPKEError

from novakms.crypto import shamir
from novakms.crypto.eth import is_canonical_wallet
from novakms.crypto.kdf import MASTER_SECRET_SIZE, derive_internal_key, secret_fingerprint
from novakms.errors import GuardianShareError, ProtocolError
from novakms.wire import cbor

__all__ = [
    "ENC_KEY_SIZE",
    "HPKE_INFO_PREFIX",
    "MAX_COMBINATIONS",
    "MAX_GUARDIANS",
    "MAX_SEALED_SIZE",
    "MAX_SHARE_SIZE",
    "SEED_LABEL",
    "SHARE_FORMAT_VERSION",
    "GuardianSet",
    "GuardianSetLike",
    "GuardianShare",
    "derive_enc_keypair",
    "enc_public_key_of",
    "encode_share",
    "generate_enc_keypair",
    "hpke_info",
    "make_shares",
    "open_share",
    "parse_share",
    "recover",
    "seal_share",
    "share_seed",
]

SHARE_FORMAT_VERSION: Final = 1
"""The ``v`` of a share plaintext."""

SEED_LABEL: Final = "guardian-shares"
"""Internal-key label of the split seed (PROTOCOL.md §9.2)."""

HPKE_INFO_PREFIX: Final = b"novakms/1 guardian share"
"""First part of the HPKE ``info``; the wallet's 20 bytes and ``u64be(set version)`` follow."""

ENC_KEY_SIZE: Final = 32
"""Size of an X25519 private or public key, and of the HPKE ``enc``."""

MAX_GUARDIANS: Final = shamir.MAX_SHARES
"""Largest guardian set (``x`` runs over 1..255)."""

MAX_SHARE_SIZE: Final = 512
"""Largest share plaintext accepted (a real one is about 200 bytes)."""

_TAG_SIZE: Final = 16
MAX_SEALED_SIZE: Final = ENC_KEY_SIZE + MAX_SHARE_SIZE + _TAG_SIZE
"""Largest sealed share accepted."""

MAX_COMBINATIONS: Final = math.comb(16, 8)
"""Combinations :func:`recover` considers at most (12,870 = C(16, 8)): see there."""

_U64_MAX: Final = 2**64 - 1
_MIN_IKM_SIZE: Final = 32
_FINGERPRINT_RE: Final = re.compile(r"0x[0-9a-f]{64}")
_KEYS: Final = frozenset({"v", "x", "y", "k", "n", "set", "fp", "wallet"})

_SUITE: Final = CipherSuite.new(
    KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.CHACHA20_POLY1305
)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_wallet(wallet: object) -> str:
    if not is_canonical_wallet(wallet):
        raise ValueError("a wallet must be lowercase '0x' + 40 hex digits")
    return wallet


def _check_set_version(version: object) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version <= _U64_MAX:
        raise ValueError("a set version must be an int in 0..2**64-1")
    return version


# --------------------------------------------------------------------------------------------
# values


class GuardianSetLike(Protocol):
    """What splitting needs of a guardian set: its wallets in order, threshold and version.

    Both :class:`GuardianSet` and the authorization layer's
    :class:`novakms.auth.guardians.GuardianSet` (the set as the chain holds it) satisfy it, so
    a node splits the set it read without converting it; the split re-checks every field it
    uses (wallets, version, threshold and count), whichever type it gets.
    """

    @property
    def wallets(self) -> tuple[str, ...]: ...

    @property
    def threshold(self) -> int: ...

    @property
    def version(self) -> int: ...


@dataclass(frozen=True, slots=True)
class GuardianSet:
    """A guardian set as the chain holds it.

    Args:
        wallets: the guardians' wallets in on-chain order (lowercase ``0x`` + 40 hex),
            distinct; guardian ``i`` gets ``x = i + 1``.
        enc_public_keys: each guardian's X25519 public key (32 bytes), same order.
        threshold: shares needed to recover, ``1 <= threshold <= len(wallets)``.
        version: the set's version, 0..2**64-1.

    Raises:
        ValueError: anything out of shape (sizes, duplicates, ranges).
    """

    wallets: tuple[str, ...]
    enc_public_keys: tuple[bytes, ...]
    threshold: int
    version: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "wallets", tuple(self.wallets))
        object.__setattr__(self, "enc_public_keys", tuple(self.enc_public_keys))
        if not 1 <= len(self.wallets) <= MAX_GUARDIANS:
            raise ValueError(f"a guardian set has 1..{MAX_GUARDIANS} guardians")
        for wallet in self.wallets:
            _check_wallet(wallet)
        if len(set(self.wallets)) != len(self.wallets):
            raise ValueError("a guardian set lists a wallet twice")
        if len(self.enc_public_keys) != len(self.wallets):
            raise ValueError("a guardian set needs one encryption key per wallet")
        for key in self.enc_public_keys:
            if not isinstance(key, bytes) or len(key) != ENC_KEY_SIZE:
                raise ValueError(f"an encryption public key is {ENC_KEY_SIZE} bytes")
        if not _is_int(self.threshold) or not 1 <= self.threshold <= len(self.wallets):
            raise ValueError("the threshold must be an int in 1..number of guardians")
        _check_set_version(self.version)


@dataclass(frozen=True, slots=True, kw_only=True)
class GuardianShare:
    """What a guardian holds: one share of the master secret and what it belongs to.

    ``y`` is secret material and is left out of ``repr``.

    Args:
        x: the share's point, ``1 .. count`` (guardian index + 1).
        y: the share value, 32 bytes.
        threshold: shares needed (``k``), ``1 .. count``.
        count: guardians in the set (``n``), 1..255.
        set_version: the guardian set's version, 0..2**64-1.
        fingerprint: the secret's fingerprint, lowercase ``0x`` + 64 hex.
        wallet: the guardian's wallet, lowercase ``0x`` + 40 hex.

    Raises:
        GuardianShareError: a field out of shape; ``reason`` names it.
    """

    x: int
    y: bytes = field(repr=False)
    threshold: int
    count: int
    set_version: int
    fingerprint: str
    wallet: str

    def __post_init__(self) -> None:
        if not _is_int(self.count) or not 1 <= self.count <= MAX_GUARDIANS:
            raise GuardianShareError("count", f"n must be an int in 1..{MAX_GUARDIANS}")
        if not _is_int(self.x) or not 1 <= self.x <= self.count:
            raise GuardianShareError("x", "x must be an int in 1..n")
        if not isinstance(self.y, bytes) or len(self.y) != MASTER_SECRET_SIZE:
            raise GuardianShareError("y", f"y must be {MASTER_SECRET_SIZE} bytes")
        if not _is_int(self.threshold) or not 1 <= self.threshold <= self.count:
            raise GuardianShareError("threshold", "k must be an int in 1..n")
        if not _is_int(self.set_version) or not 0 <= self.set_version <= _U64_MAX:
            raise GuardianShareError("set_version", "set must be an int in 0..2**64-1")
        if not isinstance(self.fingerprint, str) or not _FINGERPRINT_RE.fullmatch(self.fingerprint):
            raise GuardianShareError("fingerprint", "fp must be lowercase '0x' + 64 hex digits")
        if not is_canonical_wallet(self.wallet):
            raise GuardianShareError("wallet", "wallet must be lowercase '0x' + 40 hex digits")

    @property
    def share(self) -> shamir.Share:
        """The bare Shamir share ``(x, y)``."""
        return shamir.Share(x=self.x, y=self.y)

    def same_split(self, other: GuardianShare) -> bool:
        """Whether both claim the same split: equal ``k``, ``n``, set version and fingerprint."""
        return (self.threshold, self.count, self.set_version, self.fingerprint) == (
            other.threshold,
            other.count,
            other.set_version,
            other.fingerprint,
        )

    def __reduce__(self) -> str | tuple[Any, ...]:
        """Refuse pickling, which would serialise the share value.

        Raises:
            TypeError: always.
        """
        raise TypeError("a GuardianShare holds a share value and cannot be pickled")


# --------------------------------------------------------------------------------------------
# the split


def share_seed(
    master_secret: bytes, set_version: int, wallets: Sequence[str], threshold: int
) -> bytes:
    """The seed of a guardian set's split (PROTOCOL.md §9.2, label ``guardian-shares``).

    ``derive_internal_key(label="guardian-shares", fields=[set_version, threshold,
    wallet_1, ..., wallet_n])``, 32 bytes. Secret: with it and one share the secret follows.

    Args:
        master_secret: the 32-byte master secret.
        set_version: the guardian set's version.
        wallets: the guardians' wallets in on-chain order, lowercase.
        threshold: the set's threshold.

    Returns:
        32 bytes.

    Raises:
        ValueError: a bad secret size, wallet or version.
        TypeError: a field of the wrong type.
    """
    if isinstance(wallets, str):
        raise TypeError("wallets must be a sequence of wallets, not one string")
    _check_set_version(set_version)
    if not _is_int(threshold):
        raise TypeError("threshold must be an int")
    fields: list[str | int] = [set_version, threshold]
    fields += [_check_wallet(wallet) for wallet in wallets]
    return derive_internal_key(master_secret=master_secret, label=SEED_LABEL, fields=fields)


def make_shares(master_secret: bytes, guardian_set: GuardianSetLike) -> list[GuardianShare]:
    """The shares of a guardian set, guardian ``i`` (0-based) first with ``x = i + 1``.

    Deterministic: the same secret and set always give the same shares (not sealed yet; see
    :func:`seal_share`). Enc keys do not enter the shares, so rotating one changes nothing.

    Args:
        master_secret: the 32-byte master secret.
        guardian_set: the set (a :class:`GuardianSet` or any :class:`GuardianSetLike`).

    Returns:
        One share per guardian, in the set's order.

    Raises:
        ValueError: the secret is not 32 bytes, or a wallet, the version, the threshold or
            the count is out of range (ShamirError for the last two).
    """
    seed = share_seed(
        master_secret, guardian_set.version, guardian_set.wallets, guardian_set.threshold
    )
    fingerprint = secret_fingerprint(master_secret)
    count = len(guardian_set.wallets)
    raw = shamir.split(
        bytes(master_secret), threshold=guardian_set.threshold, count=count, seed=seed
    )
    return [
        GuardianShare(
            x=share.x,
            y=share.y,
            threshold=guardian_set.threshold,
            count=count,
            set_version=guardian_set.version,
            fingerprint=fingerprint,
            wallet=wallet,
        )
        for share, wallet in zip(raw, guardian_set.wallets, strict=True)
    ]


# --------------------------------------------------------------------------------------------
# the plaintext


def encode_share(share: GuardianShare) -> bytes:
    """A share's plaintext: the deterministic CBOR map of PROTOCOL.md §9.3.

    Args:
        share: the share.

    Returns:
        ``{"v": 1, "x", "y", "k", "n", "set", "fp", "wallet"}`` in deterministic CBOR.
    """
    return cbor.encode(
        {
            "v": SHARE_FORMAT_VERSION,
            "x": share.x,
            "y": share.y,
            "k": share.threshold,
            "n": share.count,
            "set": share.set_version,
            "fp": share.fingerprint,
            "wallet": share.wallet,
        }
    )


def parse_share(data: bytes) -> GuardianShare:
    """Parse a share plaintext strictly.

    Exactly the keys of :func:`encode_share`, ``v == 1``, every field of its type and range
    (``1 <= x <= n``, ``1 <= k <= n <= 255``, ``y`` 32 bytes, lowercase ``fp`` and
    ``wallet``), and the deterministic encoding (the bytes :func:`encode_share` would write).

    Args:
        data: the plaintext.

    Returns:
        The share.

    Raises:
        GuardianShareError: anything else; ``reason`` says what (never shows ``y``).
    """
    if not isinstance(data, bytes | bytearray) or len(data) > MAX_SHARE_SIZE:
        raise GuardianShareError("too_large", f"a share is at most {MAX_SHARE_SIZE} bytes")
    try:
        item = cbor.decode(data, max_depth=1, max_items=2 * len(_KEYS))
    except ProtocolError:
        raise GuardianShareError("not_cbor", "not one item of the CBOR subset") from None
    if not isinstance(item, dict):
        raise GuardianShareError("not_a_map", "a share is a CBOR map")
    if set(item) != _KEYS:
        raise GuardianShareError("keys", f"a share has exactly the keys {sorted(_KEYS)}")
    if not _is_int(item["v"]) or item["v"] != SHARE_FORMAT_VERSION:
        raise GuardianShareError("version", f"v must be {SHARE_FORMAT_VERSION}")
    share = GuardianShare(
        x=item["x"],
        y=item["y"],
        threshold=item["k"],
        count=item["n"],
        set_version=item["set"],
        fingerprint=item["fp"],
        wallet=item["wallet"],
    )
    if encode_share(share) != bytes(data):
        raise GuardianShareError("not_canonical", "a share must use the deterministic encoding")
    return share


# --------------------------------------------------------------------------------------------
# HPKE


def hpke_info(wallet: str, set_version: int) -> bytes:
    """The HPKE ``info`` of a guardian's share: prefix || wallet (20 bytes) || u64be(set).

    Args:
        wallet: the guardian's wallet, lowercase.
        set_version: the guardian set's version.

    Returns:
        52 bytes.

    Raises:
        ValueError: a bad wallet or version.
    """
    raw_wallet = bytes.fromhex(_check_wallet(wallet)[2:])
    return HPKE_INFO_PREFIX + raw_wallet + struct.pack(">Q", _check_set_version(set_version))


def generate_enc_keypair() -> tuple[bytes, bytes]:
    """A fresh X25519 key pair for a guardian (from the OS CSPRNG, through ``cryptography``).

    Returns:
        ``(private_key, public_key)``, 32 bytes each. Keep the private key secret.
    """
    private = X25519PrivateKey.generate()
    return private.private_bytes_raw(), private.public_key().public_bytes_raw()


def derive_enc_keypair(ikm: bytes) -> tuple[bytes, bytes]:
    """HPKE DeriveKeyPair (RFC 9180 §7.1.3) of DHKEM(X25519, HKDF-SHA256).

    Args:
        ikm: at least 32 secret bytes.

    Returns:
        ``(private_key, public_key)``, 32 bytes each (the private key as DeriveKeyPair's
        expand step gives it, before X25519 clamping).

    Raises:
        ValueError: ``ikm`` shorter than 32 bytes.
    """
    if not isinstance(ikm, bytes | bytearray) or len(ikm) < _MIN_IKM_SIZE:
        raise ValueError(f"ikm must be at least {_MIN_IKM_SIZE} bytes")
    pair = _SUITE.kem.derive_key_pair(bytes(ikm))
    return pair.private_key.to_private_bytes(), pair.public_key.to_public_bytes()


def enc_public_key_of(private_key: bytes) -> bytes:
    """The X25519 public key of a private key.

    Args:
        private_key: 32 bytes.

    Returns:
        The 32-byte public key.

    Raises:
        ValueError: the key is not 32 bytes (the message does not show it).
    """
    if not isinstance(private_key, bytes | bytearray) or len(private_key) != ENC_KEY_SIZE:
        raise ValueError(f"an encryption private key is {ENC_KEY_SIZE} bytes")
    private = X25519PrivateKey.from_private_bytes(bytes(private_key))
    return private.public_key().public_bytes_raw()


def _hpke_seal(
    public_key: bytes, *, info: bytes, aad: bytes, plaintext: bytes, ikm: bytes | None
) -> bytes:
    """HPKE base-mode single-shot seal: ``enc || ciphertext`` (sequence number 0)."""
    if not isinstance(public_key, bytes | bytearray) or len(public_key) != ENC_KEY_SIZE:
        raise GuardianShareError("bad_key", f"an encryption public key is {ENC_KEY_SIZE} bytes")
    if ikm is not None and (not isinstance(ikm, bytes | bytearray) or len(ikm) < _MIN_IKM_SIZE):
        raise ValueError(f"ikm must be at least {_MIN_IKM_SIZE} bytes")
    try:
        recipient = _SUITE.kem.deserialize_public_key(bytes(public_key))
        ephemeral = None if ikm is None else _SUITE.kem.derive_key_pair(bytes(ikm))
        enc, context = _SUITE.create_sender_context(recipient, info, eks=ephemeral)
        return enc + context.seal(plaintext, aad)
    except (ValueError, PyHPKEError):  # e.g. a low-order point: the shared secret is zero
        raise GuardianShareError("bad_key", "the encryption public key is unusable") from None


def _hpke_open(private_key: bytes, *, info: bytes, aad: bytes, sealed: bytes) -> bytes:
    """HPKE base-mode single-shot open of ``enc || ciphertext`` (sequence number 0)."""
    if not isinstance(private_key, bytes | bytearray) or len(private_key) != ENC_KEY_SIZE:
        raise ValueError(f"an encryption private key is {ENC_KEY_SIZE} bytes")
    if not isinstance(sealed, bytes | bytearray) or len(sealed) < ENC_KEY_SIZE + _TAG_SIZE:
        raise GuardianShareError("truncated", "shorter than enc and the AEAD tag")
    if len(sealed) > MAX_SEALED_SIZE:
        raise GuardianShareError("too_large", f"a sealed share is at most {MAX_SEALED_SIZE} bytes")
    enc, ciphertext = bytes(sealed[:ENC_KEY_SIZE]), bytes(sealed[ENC_KEY_SIZE:])
    recipient = _SUITE.kem.deserialize_private_key(bytes(private_key))
    try:
        context = _SUITE.create_recipient_context(enc, recipient, info)
    except (ValueError, PyHPKEError):  # enc is a low-order point
        raise GuardianShareError("bad_key", "the sealed share's enc is unusable") from None
    try:
        return context.open(ciphertext, aad)
    except PyHPKEError:
        raise GuardianShareError(
            "decrypt", "does not open for this key, wallet and set version"
        ) from None


def seal_share(share: GuardianShare, enc_public_key: bytes, *, ikm: bytes | None = None) -> bytes:
    """Seal a share to its guardian's encryption key (HPKE, PROTOCOL.md §9.3).

    ``info`` is :func:`hpke_info` of the share's own wallet and set version, ``aad`` empty.

    Args:
        share: the share.
        enc_public_key: the guardian's X25519 public key, 32 bytes.
        ikm: when given (at least 32 bytes), the ephemeral key is DeriveKeyPair(ikm) and the
            output is deterministic; it must then be secret and never reused for another
            plaintext. ``None`` (the default): a fresh random ephemeral key.

    Returns:
        ``enc (32 bytes) || ciphertext`` (the plaintext plus a 16-byte tag).

    Raises:
        GuardianShareError: ``bad_key``, the public key is not a usable X25519 key.
        ValueError: ``ikm`` shorter than 32 bytes.
    """
    return _hpke_seal(
        enc_public_key,
        info=hpke_info(share.wallet, share.set_version),
        aad=b"",
        plaintext=encode_share(share),
        ikm=ikm,
    )


def open_share(
    sealed: bytes, enc_private_key: bytes, *, wallet: str, set_version: int
) -> GuardianShare:
    """Open a sealed share meant for ``wallet`` in set ``set_version`` and parse it strictly.

    Args:
        sealed: ``enc || ciphertext`` from :func:`seal_share`.
        enc_private_key: the guardian's X25519 private key, 32 bytes.
        wallet: the guardian's wallet (lowercase).
        set_version: the guardian set's version.

    Returns:
        The share; its ``wallet`` and ``set_version`` are the ones asked for.

    Raises:
        GuardianShareError: ``truncated`` / ``too_large`` (size), ``bad_key`` (``enc`` is
            unusable), ``decrypt`` (another key, wallet or set version, or tampering), a
            plaintext reason of :func:`parse_share`, or ``wrong_wallet`` / ``wrong_set`` (a
            well-sealed plaintext naming another guardian or set).
        ValueError: a malformed private key, wallet or set version argument.
    """
    info = hpke_info(wallet, set_version)
    plaintext = _hpke_open(enc_private_key, info=info, aad=b"", sealed=sealed)
    share = parse_share(plaintext)
    if share.wallet != wallet:
        raise GuardianShareError("wrong_wallet", "the share names another guardian")
    if share.set_version != set_version:
        raise GuardianShareError("wrong_set", "the share belongs to another guardian set")
    return share


# --------------------------------------------------------------------------------------------
# recovery


def _considered(threshold: int) -> int:
    """How many candidate shares :func:`recover` considers: the largest ``m`` with
    ``C(m, threshold) <= MAX_COMBINATIONS`` (at least 16, whatever the threshold)."""
    m = threshold
    while math.comb(m + 1, threshold) <= MAX_COMBINATIONS:
        m += 1
    return m


def recover(
    shares: Iterable[GuardianShare], *, threshold: int, pin_fingerprint: str
) -> bytes | None:
    """Recombine the master secret from guardian shares, some of which may be forged.

    Only shares with ``k == threshold`` and ``fp == pin_fingerprint`` are candidates (others
    are ignored), exact duplicates count once, and a combination only mixes shares that
    agree on ``n`` and the set version and have distinct ``x``. Combinations are tried in
    arrival order: first the earliest ``threshold`` candidates, then every combination whose
    latest share is the next candidate, and so on (what a caller retrying on each new share
    would try). The first combination whose secret has the pinned fingerprint wins.

    Bound: only the first ``m`` candidates are considered, ``m`` the largest with
    ``C(m, threshold) <= MAX_COMBINATIONS`` (12,870), so at most 12,870 combinations are
    tried; ``m >= 16`` for every threshold (160 for ``k = 2``, 43 for 3, 25 for 4, 16 for
    7 to 10). Guarantee: when ``threshold`` genuine shares with distinct ``x`` are among
    the first ``m`` candidates, the secret is returned, whatever forged shares come with
    them; a forged share never yields a wrong secret (the fingerprint is a Keccak-256 hash).

    Args:
        shares: the shares received, in arrival order (e.g. most recent first, if that is
            the order the caller prefers).
        threshold: the set's ``k`` (from the chain).
        pin_fingerprint: the expected fingerprint, ``0x`` + 64 hex (any case).

    Returns:
        The 32-byte master secret, or None when no considered combination gives it.

    Raises:
        ValueError: a malformed threshold or pin.
        TypeError: an item that is not a :class:`GuardianShare`.
    """
    if not _is_int(threshold) or not 1 <= threshold <= MAX_GUARDIANS:
        raise ValueError(f"threshold must be an int in 1..{MAX_GUARDIANS}")
    if (
        not isinstance(pin_fingerprint, str)
        or _FINGERPRINT_RE.fullmatch(pin_fingerprint.lower()) is None
    ):
        raise ValueError("pin_fingerprint must be '0x' + 64 hex digits")
    pin = pin_fingerprint.lower()
    limit = _considered(threshold)
    candidates: list[GuardianShare] = []
    seen: set[tuple[int, bytes, int, int]] = set()
    for share in shares:
        if not isinstance(share, GuardianShare):
            raise TypeError("recover takes GuardianShare values")
        if share.threshold != threshold or share.fingerprint != pin:
            continue
        key = (share.x, share.y, share.count, share.set_version)
        if key in seen:
            continue
        seen.add(key)
        candidates.append(share)
        if len(candidates) == limit:
            break
    # Candidates of one split (n, set version), by arrival index.
    groups: dict[tuple[int, int], list[int]] = {}
    for latest, share in enumerate(candidates):
        group = groups.setdefault((share.count, share.set_version), [])
        for earlier in combinations(group, threshold - 1):
            chosen = [candidates[i] for i in earlier] + [share]
            if len({c.x for c in chosen}) != threshold:
                continue
            secret = shamir.combine([c.share for c in chosen])
            if hmac.compare_digest(secret_fingerprint(secret), pin):
                return secret
        group.append(latest)
    return None
