"""Shamir sharing over GF(2^8): field vectors, SLIP-39 cross-checks and properties."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st
from shamir_mnemonic.shamir import RawShare
from shamir_mnemonic.shamir import _interpolate as slip39_interpolate

from novakms.crypto import shamir
from novakms.crypto.shamir import Share, combine, gf_inv, gf_mul, interpolate, split
from novakms.errors import ShamirError

SEED = bytes(range(100, 132))
SECRET = bytes(range(32))


def slow_mul(a: int, b: int) -> int:
    """Schoolbook carry-less multiplication reduced by 0x11B (FIPS-197 §4.2)."""
    product = 0
    for bit in range(8):
        if b >> bit & 1:
            product ^= a << bit
    for bit in range(14, 7, -1):
        if product >> bit & 1:
            product ^= 0x11B << (bit - 8)
    return product


# --- the field -------------------------------------------------------------------------------


def test_fips197_multiplication_examples() -> None:
    # FIPS-197 §4.2: {57} . {83} = {c1}; §4.2.1: {57} . {13} = {fe}.
    assert gf_mul(0x57, 0x83) == 0xC1
    assert gf_mul(0x57, 0x13) == 0xFE
    # §4.2.1 xtime chain: {57}.{02} = {ae}, .{04} = {47}, .{08} = {8e}, .{10} = {07}.
    assert [gf_mul(0x57, m) for m in (0x02, 0x04, 0x08, 0x10)] == [0xAE, 0x47, 0x8E, 0x07]


def test_known_inverses() -> None:
    assert gf_inv(0x01) == 0x01
    assert gf_inv(0x53) == 0xCA  # the classic AES example (FIPS-197 §5.1.1 S-box derivation)
    assert gf_inv(0xCA) == 0x53
    assert gf_inv(0x02) == 0x8D  # x^-1 = x^7 + x^3 + x^2 + 1


def test_whole_multiplication_table_matches_schoolbook() -> None:
    for a in range(256):
        for b in range(256):
            assert gf_mul(a, b) == slow_mul(a, b)


def test_every_nonzero_element_has_its_inverse() -> None:
    for a in range(1, 256):
        assert gf_mul(a, gf_inv(a)) == 1
    for bad in (0, 256, -1, True):
        with pytest.raises(ShamirError):
            gf_inv(bad)


# --- against SLIP-39 (shamir-mnemonic, same field) -------------------------------------------


def raw(shares: list[Share]) -> list[RawShare]:
    return [RawShare(s.x, s.y) for s in shares]


@given(
    secret=st.binary(min_size=1, max_size=64),
    k=st.integers(1, 6),
    extra=st.integers(0, 4),
    seed=st.binary(min_size=32, max_size=48),
    at=st.integers(0, 255),
)
def test_slip39_interpolation_agrees(
    secret: bytes, k: int, extra: int, seed: bytes, at: int
) -> None:
    shares = split(secret, threshold=k, count=k + extra, seed=seed)
    subset = shares[extra:]  # any k of them will do; take the last ones
    assert slip39_interpolate(raw(subset[:k]), 0) == secret
    # Their interpolation and ours agree at any point, shares included.
    assert slip39_interpolate(raw(subset[:k]), at) == interpolate(subset[:k], at)
    for share in shares:
        assert slip39_interpolate(raw(subset[:k]), share.x) == share.y


@given(
    points=st.lists(st.integers(0, 255), min_size=1, max_size=8, unique=True),
    length=st.integers(1, 40),
    data=st.data(),
)
def test_combine_matches_slip39_on_arbitrary_points(
    points: list[int], length: int, data: st.DataObject
) -> None:
    """Any point set (not only our splits): both Lagrange implementations give f(0)."""
    xs = [x for x in points if x != 0] or [1]
    shares = [Share(x=x, y=data.draw(st.binary(min_size=length, max_size=length))) for x in xs]
    assert combine(shares) == slip39_interpolate(raw(shares), 0)


# --- properties of split / combine -----------------------------------------------------------


@given(
    secret=st.binary(min_size=1, max_size=33),
    n=st.integers(1, 6),
    data=st.data(),
    seed=st.binary(min_size=32, max_size=32),
)
def test_every_k_subset_recombines(secret: bytes, n: int, data: st.DataObject, seed: bytes) -> None:
    k = data.draw(st.integers(1, n))
    shares = split(secret, threshold=k, count=n, seed=seed)
    assert [s.x for s in shares] == list(range(1, n + 1))
    assert all(len(s.y) == len(secret) for s in shares)
    for size in range(k, n + 1):
        for subset in itertools.combinations(shares, size):
            assert combine(list(subset)) == secret
            assert combine(list(reversed(subset))) == secret


@given(
    k=st.integers(2, 6),
    data=st.data(),
    seed=st.binary(min_size=32, max_size=32),
)
def test_a_forged_share_always_changes_the_secret(k: int, data: st.DataObject, seed: bytes) -> None:
    """k-1 genuine shares and one modified share never give the secret.

    Deterministically so: the result moves by l_j(0) * (y' - y), and the Lagrange coefficient
    l_j(0) is a product of non-zero elements for distinct non-zero x.
    """
    shares = split(SECRET, threshold=k, count=k + 2, seed=seed)
    chosen = data.draw(st.permutations(shares))[:k]
    position = data.draw(st.integers(0, k - 1))
    delta = data.draw(st.binary(min_size=32, max_size=32).filter(any))
    forged_y = bytes(a ^ b for a, b in zip(chosen[position].y, delta, strict=True))
    forged = list(chosen)
    forged[position] = Share(x=chosen[position].x, y=forged_y)
    result = combine(forged)
    assert result != SECRET
    # Exactly the bytes where the forgery differs are wrong.
    assert [a != b for a, b in zip(result, SECRET, strict=True)] == [bool(d) for d in delta]


def test_k_minus_one_shares_and_a_forged_one_sample() -> None:
    """A fixed sample: every position, several forgeries, all x choices of a 3-of-5 split."""
    shares = split(SECRET, threshold=3, count=5, seed=SEED)
    for subset in itertools.combinations(shares, 3):
        for position in range(3):
            for flip in (0x01, 0x80, 0xFF):
                forged = list(subset)
                y = bytearray(forged[position].y)
                y[7] ^= flip
                forged[position] = Share(x=forged[position].x, y=bytes(y))
                assert combine(forged) != SECRET


def test_fewer_than_k_shares_do_not_give_the_secret() -> None:
    shares = split(SECRET, threshold=3, count=5, seed=SEED)
    for subset in itertools.combinations(shares, 2):
        assert combine(list(subset)) != SECRET


@given(secret=st.binary(min_size=1, max_size=32), seed=st.binary(min_size=32, max_size=40))
def test_deterministic_for_equal_seeds(secret: bytes, seed: bytes) -> None:
    assert split(secret, threshold=2, count=4, seed=seed) == split(
        secret, threshold=2, count=4, seed=bytes(seed)
    )


@given(
    a=st.binary(min_size=32, max_size=32),
    b=st.binary(min_size=32, max_size=32),
    k=st.integers(2, 5),
)
def test_different_seeds_give_different_shares(a: bytes, b: bytes, k: int) -> None:
    if a == b:
        return
    first = split(SECRET, threshold=k, count=5, seed=a)
    second = split(SECRET, threshold=k, count=5, seed=b)
    for one, other in zip(first, second, strict=True):
        assert one.y != other.y  # 2^-256 chance per share of a collision


def test_threshold_one_shares_are_the_secret() -> None:
    assert all(s.y == SECRET for s in split(SECRET, threshold=1, count=3, seed=SEED))


def test_a_prefix_of_a_larger_split_is_a_smaller_split() -> None:
    """The count is not bound into the coefficients: adding guardians keeps the first shares."""
    assert split(SECRET, threshold=2, count=5, seed=SEED)[:3] == split(
        SECRET, threshold=2, count=3, seed=SEED
    )


def test_threshold_is_bound_into_the_coefficients() -> None:
    two = split(SECRET, threshold=2, count=3, seed=SEED)
    three = split(SECRET, threshold=3, count=3, seed=SEED)
    assert all(a.y != b.y for a, b in zip(two, three, strict=True))


def test_coefficient_derivation_is_as_documented() -> None:
    """PROTOCOL §9.3: c_i = HKDF-SHA256(seed, salt "novakms/1 shamir", info u8(k) || u8(i))."""
    import hashlib
    import hmac

    prk = hmac.new(shamir.COEFFICIENT_SALT, SEED, hashlib.sha256).digest()
    c1 = hmac.new(prk, bytes([2, 1]) + b"\x01", hashlib.sha256).digest()
    shares = split(SECRET, threshold=2, count=2, seed=SEED)
    assert shares[0].y == bytes(s ^ c for s, c in zip(SECRET, c1, strict=True))  # x = 1
    assert shares[1].y == bytes(s ^ gf_mul(c, 2) for s, c in zip(SECRET, c1, strict=True))


# --- refusals --------------------------------------------------------------------------------


def test_combine_refuses_bad_share_sets() -> None:
    shares = split(SECRET, threshold=2, count=3, seed=SEED)
    with pytest.raises(ShamirError, match="same x"):
        combine([shares[0], shares[0]])
    with pytest.raises(ShamirError, match="same x"):
        combine([shares[0], Share(x=1, y=bytes(32))])
    with pytest.raises(ShamirError, match="different lengths"):
        combine([shares[0], Share(x=2, y=bytes(31))])
    with pytest.raises(ShamirError, match="no shares"):
        combine([])
    with pytest.raises(TypeError):
        combine([(1, bytes(32))])  # type: ignore[list-item]
    assert issubclass(ShamirError, ValueError)


@pytest.mark.parametrize("x", [0, 256, -1, True])
def test_share_refuses_bad_x(x: int) -> None:
    with pytest.raises(ShamirError):
        Share(x=x, y=b"\x01")


def test_share_refuses_empty_y_and_hides_it() -> None:
    with pytest.raises(ShamirError):
        Share(x=1, y=b"")
    share = Share(x=3, y=bytes.fromhex("deadbeef"))
    assert "dead" not in repr(share) and "beef" not in repr(share) and "3" in repr(share)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"threshold": 0, "count": 3}, "threshold"),
        ({"threshold": 4, "count": 3}, "threshold"),
        ({"threshold": 1, "count": 0}, "count"),
        ({"threshold": 2, "count": 256}, "count"),
        ({"threshold": 2, "count": 3, "seed": bytes(31)}, "seed"),
        ({"threshold": 2, "count": 3, "secret": b""}, "secret"),
        ({"threshold": 2, "count": 3, "secret": bytes(shamir.MAX_SECRET_SIZE + 1)}, "secret"),
    ],
)
def test_split_refuses_bad_parameters(kwargs: dict[str, object], match: str) -> None:
    args: dict[str, object] = {"secret": SECRET, "seed": SEED, **kwargs}
    secret = args.pop("secret")
    with pytest.raises(ShamirError, match=match) as info:
        split(secret, **args)  # type: ignore[arg-type]
    assert SECRET.hex() not in str(info.value)


def test_split_refuses_bool_counts() -> None:
    with pytest.raises(TypeError):
        split(SECRET, threshold=True, count=3, seed=SEED)


def test_maximum_split() -> None:
    shares = split(SECRET, threshold=255, count=255, seed=SEED)
    assert combine(shares) == SECRET
    assert combine(shares[1:]) != SECRET
