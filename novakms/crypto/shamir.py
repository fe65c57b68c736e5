"""Shamir secret sharing over GF(2^8), byte-wise (PROTOCOL.md §9.3).

The field is GF(2^8) with the AES polynomial x^8 + x^4 + x^3 + x + 1 (0x11B, FIPS-197 §4.2),
the same field as SLIP-39. Every byte position of the secret is shared with its own polynomial
of degree ``threshold - 1`` whose constant term is that byte; share ``x`` holds the values of
all those polynomials at ``x``.

:func:`split` is **deterministic**: the polynomial coefficients are HKDF-SHA256 output over a
caller-supplied ``seed`` (the guardian layer derives it from the secret and the guardian set,
so every node holding the secret hands out the same shares). The seed is as secret as the
secret itself: with the seed and any one share the secret follows.

Theory of operation. Multiplication by a field element is a lookup in one 256-byte row of a
multiplication table, so multiplying a whole byte string by a *public* scalar (an ``x``, or a
Lagrange coefficient computed from the ``x`` values) is one ``bytes.translate`` call, and
addition is XOR. Evaluating a polynomial at ``x`` (Horner) and interpolating (Lagrange) then
never branch on a secret byte. Table lookups indexed by secret bytes are not constant-time in
the cache-timing sense; nothing in pure Python is, and the brief does not require it.

This module is pure: no I/O, no clock, no randomness. Nothing here logs or formats a share
value or a secret (a :class:`Share`'s ``repr`` omits ``y``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from novakms.errors import ShamirError

__all__ = [
    "COEFFICIENT_SALT",
    "MAX_SECRET_SIZE",
    "MAX_SHARES",
    "MIN_SEED_SIZE",
    "POLYNOMIAL",
    "Share",
    "combine",
    "gf_inv",
    "gf_mul",
    "interpolate",
    "split",
]

POLYNOMIAL = 0x11B
"""The AES reduction polynomial x^8 + x^4 + x^3 + x + 1."""

MAX_SHARES = 255
"""Most shares of one split: ``x`` runs over the non-zero field elements 1..255."""

MAX_SECRET_SIZE = 255 * 32
"""Longest secret, in bytes: one coefficient is one HKDF-SHA256 output (at most 255 blocks)."""

MIN_SEED_SIZE = 32
"""Shortest seed accepted, in bytes (the coefficients have no more entropy than the seed)."""

COEFFICIENT_SALT = b"novakms/1 shamir"
"""HKDF salt of the coefficient derivation (PROTOCOL.md §9.3)."""


# --------------------------------------------------------------------------------------------
# GF(2^8)


def _build_tables() -> tuple[tuple[bytes, ...], bytes]:
    """The full multiplication table (row ``a`` = ``a * b`` for every ``b``) and inverses.

    Built from exp/log tables over the generator 0x03 (0x02 does not generate the
    multiplicative group of this field).
    """
    exp = [0] * 510  # doubled, so exp[log a + log b] needs no reduction mod 255
    log = [0] * 256
    value = 1
    for power in range(255):
        exp[power] = exp[power + 255] = value
        log[value] = power
        value ^= value << 1  # times (x + 1), i.e. times 0x03
        if value & 0x100:
            value ^= POLYNOMIAL
    rows = tuple(
        bytes(exp[log[a] + log[b]] if a and b else 0 for b in range(256)) for a in range(256)
    )
    inverse = bytes([0] + [exp[255 - log[a]] for a in range(1, 256)])
    return rows, inverse


_MUL, _INV = _build_tables()


def gf_mul(a: int, b: int) -> int:
    """Product of two elements of GF(2^8) (AES polynomial).

    Args:
        a: an element, 0..255.
        b: an element, 0..255.

    Returns:
        ``a * b`` in the field.

    Raises:
        IndexError: an argument outside 0..255.
    """
    return _MUL[a][b]


def gf_inv(a: int) -> int:
    """Multiplicative inverse in GF(2^8).

    Args:
        a: a non-zero element, 1..255.

    Returns:
        ``a^-1``, so that ``gf_mul(a, gf_inv(a)) == 1``.

    Raises:
        ShamirError: ``a`` is 0 or not a field element.
    """
    if isinstance(a, bool) or not isinstance(a, int) or not 1 <= a <= 255:
        raise ShamirError("only the non-zero field elements 1..255 have an inverse")
    return _INV[a]


def _xor(a: bytes, b: bytes) -> bytes:
    """Byte-wise XOR (field addition) of two strings of the same length."""
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def _scale(vector: bytes, scalar: int) -> bytes:
    """Every byte of ``vector`` times the public field element ``scalar``."""
    return vector.translate(_MUL[scalar])


# --------------------------------------------------------------------------------------------
# shares


@dataclass(frozen=True, slots=True)
class Share:
    """One Shamir share: the value ``y`` of every byte's polynomial at ``x``.

    ``y`` is secret material and is left out of ``repr``.

    Args:
        x: the evaluation point, 1..255 (0 would be the secret itself).
        y: the values, as many bytes as the secret.

    Raises:
        ShamirError: ``x`` outside 1..255 or ``y`` empty / not bytes.
    """

    x: int
    y: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.x, bool) or not isinstance(self.x, int) or not 1 <= self.x <= 255:
            raise ShamirError("a share's x must be an int in 1..255")
        if not isinstance(self.y, bytes) or not self.y:
            raise ShamirError("a share's y must be non-empty bytes")


def _coefficients(seed: bytes, threshold: int, size: int) -> list[bytes]:
    """The non-constant coefficients c_1 .. c_{k-1}, each ``size`` bytes (PROTOCOL.md §9.3)."""
    return [
        HKDF(
            algorithm=hashes.SHA256(),
            length=size,
            salt=COEFFICIENT_SALT,
            info=bytes([threshold, index]),
        ).derive(seed)
        for index in range(1, threshold)
    ]


def _check_count(name: str, value: int, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int")
    if not low <= value <= high:
        raise ShamirError(f"{name} must be in {low}..{high}, got {value}")


def split(secret: bytes, *, threshold: int, count: int, seed: bytes) -> list[Share]:
    """Split ``secret`` into ``count`` shares, any ``threshold`` of which recombine it.

    Deterministic: equal inputs give equal shares. Share ``i`` (0-based) has ``x = i + 1``,
    so the first ``m`` shares of a split into ``n >= m`` equal a split into ``m``.

    Args:
        secret: the secret, 1..MAX_SECRET_SIZE bytes.
        threshold: shares needed to recombine, ``1 <= threshold <= count`` (1 makes every
            share equal to the secret).
        count: shares to make, at most :data:`MAX_SHARES`.
        seed: at least :data:`MIN_SEED_SIZE` secret, uniformly random (or pseudorandom)
            bytes; the coefficients are derived from it.

    Returns:
        The shares, ``x = 1 .. count`` in order.

    Raises:
        ShamirError: a parameter out of range (never shows the secret).
        TypeError: an argument of the wrong type.
    """
    if not isinstance(secret, bytes | bytearray) or not 1 <= len(secret) <= MAX_SECRET_SIZE:
        raise ShamirError(f"the secret must be 1..{MAX_SECRET_SIZE} bytes")
    if not isinstance(seed, bytes | bytearray) or len(seed) < MIN_SEED_SIZE:
        raise ShamirError(f"the seed must be at least {MIN_SEED_SIZE} bytes")
    _check_count("count", count, 1, MAX_SHARES)
    _check_count("threshold", threshold, 1, count)
    constant = bytes(secret)
    coefficients = _coefficients(bytes(seed), threshold, len(constant))
    shares = []
    for x in range(1, count + 1):
        # Horner: ((c_{k-1} x + c_{k-2}) x + ... + c_1) x + secret.
        acc = bytes(len(constant))
        for coefficient in reversed(coefficients):
            acc = _scale(_xor(acc, coefficient), x)
        shares.append(Share(x=x, y=_xor(acc, constant)))
    return shares


def _check_shares(shares: Sequence[Share]) -> None:
    if not shares:
        raise ShamirError("no shares")
    for share in shares:
        if not isinstance(share, Share):
            raise TypeError("shares must be Share values")
    xs = {share.x for share in shares}
    if len(xs) != len(shares):
        raise ShamirError("two shares have the same x")
    if not xs <= set(range(1, 256)):
        raise ShamirError("a share's x must be in 1..255")
    if len({len(share.y) for share in shares}) != 1:
        raise ShamirError("the shares have different lengths")


def interpolate(shares: Sequence[Share], x: int) -> bytes:
    """Evaluate, at ``x``, the polynomials of lowest degree through ``shares`` (Lagrange).

    With at least ``threshold`` shares of one split this gives the share at ``x`` (or the
    secret at ``x = 0``); with fewer it gives a value unrelated to the secret.

    Args:
        shares: shares with distinct ``x`` and equal lengths.
        x: where to evaluate, 0..255.

    Returns:
        The values at ``x``, as many bytes as each share.

    Raises:
        ShamirError: no shares, a duplicate or zero ``x``, different lengths, ``x`` out of
            range.
        TypeError: an item that is not a :class:`Share`.
    """
    _check_count("x", x, 0, 255)
    _check_shares(shares)
    points = [share.x for share in shares]
    result = bytes(len(shares[0].y))
    for j, share in enumerate(shares):
        # l_j(x) = prod_{m != j} (x - x_m) / (x_j - x_m); minus is XOR in GF(2^8). It depends
        # only on the public x values.
        numerator = denominator = 1
        for m, other in enumerate(points):
            if m != j:
                numerator = _MUL[numerator][x ^ other]
                denominator = _MUL[denominator][points[j] ^ other]
        result = _xor(result, _scale(share.y, _MUL[numerator][_INV[denominator]]))
    return result


def combine(shares: Sequence[Share]) -> bytes:
    """Recombine a secret from shares (Lagrange interpolation at 0).

    Any ``threshold`` shares of one split give its secret; fewer, or a set containing a share
    of another split or a modified share, give a different value and nothing says so: check
    the result (the guardian layer compares its fingerprint with a pin).

    Args:
        shares: at least one share; distinct ``x`` in 1..255, equal lengths.

    Returns:
        The recombined secret.

    Raises:
        ShamirError: no shares, a duplicate or zero ``x``, or different lengths.
        TypeError: an item that is not a :class:`Share`.
    """
    return interpolate(shares, 0)
