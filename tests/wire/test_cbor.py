"""Tests of the strict CBOR subset codec (PROTOCOL.md §3)."""

from __future__ import annotations

import enum
import tracemalloc
from typing import Any

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from novakms.errors import ProtocolError
from novakms.wire.cbor import MAX_DEPTH, decode, encode

U64_MAX = 2**64 - 1
NINT_MIN = -(2**64)

# --------------------------------------------------------------------------------------------
# Helpers and strategies
# --------------------------------------------------------------------------------------------


def same(a: Any, b: Any) -> bool:
    """Equality that also compares types (plain == says True == 1 and [] == [] of tuples)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def depth_of(value: Any) -> int:
    """Container nesting depth, counted like the decoder (scalars add nothing)."""
    if isinstance(value, list):
        return 1 + max((depth_of(x) for x in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth_of(x) for x in value.values()), default=0)
    return 0


INT_EDGES = [
    0,
    1,
    23,
    24,
    255,
    256,
    65535,
    65536,
    2**32 - 1,
    2**32,
    U64_MAX,
    -1,
    -24,
    -25,
    -256,
    -257,
    -65536,
    -65537,
    -(2**32),
    -(2**32) - 1,
    NINT_MIN,
]
ints = st.integers(NINT_MIN, U64_MAX) | st.sampled_from(INT_EDGES)
leaves = st.none() | st.booleans() | ints | st.binary() | st.text()
values = st.recursive(
    leaves,
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=8), children, max_size=6)
    ),
    max_leaves=30,
).filter(lambda v: depth_of(v) <= MAX_DEPTH)


@st.composite
def loose_encoding(draw: st.DrawFn, value: Any) -> bytes:
    """Encode ``value`` as valid subset CBOR with randomly chosen (often non-minimal) widths."""

    def head(major: int, arg: int) -> bytes:
        widths = [w for w in (1, 2, 4, 8) if arg < 2 ** (8 * w)]
        choices: list[int | None] = [None, *widths] if arg < 24 else list(widths)
        width = draw(st.sampled_from(choices))
        if width is None:
            return bytes([major << 5 | arg])
        ai = {1: 24, 2: 25, 4: 26, 8: 27}[width]
        return bytes([major << 5 | ai]) + arg.to_bytes(width, "big")

    def enc(v: Any) -> bytes:
        if v is None:
            return b"\xf6"
        if isinstance(v, bool):
            return b"\xf5" if v else b"\xf4"
        if isinstance(v, int):
            return head(0, v) if v >= 0 else head(1, -1 - v)
        if isinstance(v, bytes):
            return head(2, len(v)) + v
        if isinstance(v, str):
            raw = v.encode()
            return head(3, len(raw)) + raw
        if isinstance(v, list):
            return head(4, len(v)) + b"".join(enc(x) for x in v)
        assert isinstance(v, dict)
        items = list(v.items())
        order = draw(st.permutations(range(len(items))))  # any key order is valid on input
        return head(5, len(items)) + b"".join(enc(items[i][0]) + enc(items[i][1]) for i in order)

    return enc(value)


@st.composite
def value_and_loose_encoding(draw: st.DrawFn) -> tuple[Any, bytes]:
    value = draw(values)
    return value, draw(loose_encoding(value))


def nested_arrays(depth: int, inner: bytes = b"\x80") -> bytes:
    """``depth`` arrays inside each other; the innermost one is ``inner`` (an array itself)."""
    return b"\x81" * (depth - 1) + inner


REJECTED = object()


def decode_only_protocol_errors(data: bytes) -> Any:
    """Decode, turning a ProtocolError into REJECTED; any other exception fails the test."""
    try:
        return decode(data)
    except ProtocolError:
        return REJECTED


# --------------------------------------------------------------------------------------------
# Round trips and agreement with cbor2
# --------------------------------------------------------------------------------------------


@given(values)
def test_roundtrip(value: Any) -> None:
    assert same(decode(encode(value)), value)


@given(values)
def test_encode_is_deterministic_like_cbor2_canonical(value: Any) -> None:
    assert encode(value) == cbor2.dumps(value, canonical=True)


@given(value_and_loose_encoding())
def test_decode_agrees_with_cbor2_on_any_valid_encoding(case: tuple[Any, bytes]) -> None:
    value, data = case
    decoded = decode(data)
    assert same(decoded, value)
    assert same(decoded, cbor2.loads(data))


@given(value_and_loose_encoding())
def test_decode_accepts_bytearray_and_memoryview(case: tuple[Any, bytes]) -> None:
    value, data = case
    assert same(decode(bytearray(data)), value)
    assert same(decode(memoryview(data)), value)
    # A memoryview slice into a larger buffer: only the view is decoded.
    assert same(decode(memoryview(b"\xff" + data + b"\xff")[1:-1]), value)


@pytest.mark.parametrize(
    ("hex_in", "expected"),
    [
        ("00", 0),
        ("17", 23),
        ("1818", 24),
        ("18ff", 255),
        ("190100", 256),
        ("1a00010000", 65536),
        ("1b0000000100000000", 2**32),
        ("1bffffffffffffffff", U64_MAX),
        ("20", -1),
        ("3818", -25),
        ("3bffffffffffffffff", NINT_MIN),
        # Non-minimal arguments are accepted (§3).
        ("1800", 0),
        ("190000", 0),
        ("1b0000000000000017", 23),
        ("5800", b""),
        ("7a0000000161", "a"),
        ("9800", []),
        ("b900016161f6", {"a": None}),
        ("40", b""),
        ("43010203", b"\x01\x02\x03"),
        ("60", ""),
        ("6449455446", "IETF"),
        ("62c3bc", "\u00fc"),
        ("64f0908591", "\U00010151"),
        ("f4", False),
        ("f5", True),
        ("f6", None),
        ("80", []),
        ("a0", {}),
        ("8301820203820405", [1, [2, 3], [4, 5]]),
        ("a26161016162820203", {"a": 1, "b": [2, 3]}),
        # Keys in any order are accepted on input (only the sender must sort).
        ("a2616201616102", {"b": 1, "a": 2}),
        (
            "a362696407626f70666465726976656461726773a26470617468676170702f6b6579666c656e67746818"
            "20",
            {"id": 7, "op": "derive", "args": {"path": "app/key", "length": 32}},
        ),
    ],
)
def test_decode_vectors(hex_in: str, expected: Any) -> None:
    assert same(decode(bytes.fromhex(hex_in)), expected)


# --------------------------------------------------------------------------------------------
# Rejections
# --------------------------------------------------------------------------------------------

# Hand-written invalid inputs, grouped by the reason they must be rejected for (a regex on
# the error message, so that a case cannot pass by failing for an unrelated reason).
REJECT: dict[str, dict[str, str]] = {
    "duplicate": {
        "dup-key": "a2616101616102",
        "dup-key-nonminimal": "a26161017801610f",  # same key, longer length encoding
        "dup-key-nested": "a1617aa2616101616102",
    },
    "tag": {
        "tag-0": "c074323031332d30332d32315432303a30343a30305a",
        "tag-bignum": "c24101",
        "tag-1byte": "d82000",
        "tag-in-array": "81c100",
        "tag-as-map-value": "a16161c100",
        "tag-reserved-ai": "dc",
    },
    "float": {
        "float16": "f93c00",
        "float32": "fa3f800000",
        "float64": "fb3ff0000000000000",
        "float16-truncated": "f93c",
        "float-in-map": "a16161f93c00",
    },
    "simple value": {
        "undefined": "f7",
        "simple-0": "e0",
        "simple-16": "f0",
        "simple-19": "f3",
        "simple-1byte-32": "f820",
        "simple-1byte-false": "f814",
        "simple-1byte-255": "f8ff",
    },
    "indefinite": {
        "indef-bstr": "5f4100ff",
        "indef-bstr-empty": "5fff",
        "indef-tstr": "7f6161ff",
        "indef-array": "9fff",
        "indef-array-items": "9f0102ff",
        "indef-map": "bfff",
        "indef-map-items": "bf616101ff",
        "indef-key": "a17f6161ff01",
        "uint-ai31": "1f",
        "nint-ai31": "3f",
    },
    "break": {
        "break": "ff",
        "break-in-array": "81ff",
        "break-as-map-value": "a16161ff",
    },
    "reserved": {
        "reserved-1c": "1c",
        "reserved-1d": "1d",
        "reserved-1e": "1e",
        "reserved-nint": "3c",
        "reserved-bstr": "5d",
        "reserved-tstr": "7e",
        "reserved-array": "9c",
        "reserved-map": "bd",
        "reserved-key": "a17c0000",
        "reserved-simple-fc": "fc",
        "reserved-simple-fe": "fe",
        "reserved-in-array": "811c",
    },
    "UTF-8": {
        "utf8-bad-continuation": "62c328",
        "utf8-lone-continuation": "6180",
        "utf8-surrogate": "63eda080",
        "utf8-overlong": "62c0af",
        "utf8-above-10ffff": "64f4908080",
        "utf8-truncated-seq": "61e2",
        "utf8-in-key": "a161ff01",
    },
    "map key is not a text": {
        "key-uint": "a10102",
        "key-nint": "a12002",
        "key-bstr": "a1416101",
        "key-array": "a18001",
        "key-map": "a1a001",
        "key-null": "a1f601",
        "key-false": "a1f401",
        "key-tag": "a1c06161",
        "key-float": "a1f93c0001",
        "key-second-pair": "a26161010102",
    },
    "truncated": {
        "empty": "",
        "uint8-no-arg": "18",
        "uint16-short": "1900",
        "uint32-short": "1a000000",
        "uint64-short": "1b00000000000000",
        "bstr-short": "4200",
        "tstr-short": "636100",
        "tstr-len-short": "7900",
        "array-short": "830100",
        "array-empty-missing": "81",
        "map-missing-value": "a16161",
        "map-missing-key": "a1",
        "map-pair-short": "a2616101",
        "map-key-short": "a16261",
        "nested-short": "a1616181",
        # declared lengths far beyond the data
        "bstr-2^63": "5b7fffffffffffffff00",
        "bstr-2^64-1": "5bffffffffffffffff",
        "tstr-2^64-1": "7bffffffffffffffff61",
        "bstr-4G": "5affffffff",
        "array-2^64-1": "9bffffffffffffffff",
        "map-2^64-1": "bbffffffffffffffff",
        "map-count-beyond": "a3616101",
        "key-len-huge": "a17bffffffffffffffff",
    },
    "trailing": {
        "trailing-byte": "0000",
        "trailing-after-array": "8000",
        "trailing-after-map": "a000",
        "trailing-break": "a0ff",
        "two-items": "61616162",
    },
}
REJECT_CASES = [
    pytest.param(hex_in, reason, id=name)
    for reason, cases in REJECT.items()
    for name, hex_in in cases.items()
]


@pytest.mark.parametrize(("hex_in", "reason"), REJECT_CASES)
def test_rejects(hex_in: str, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        decode(bytes.fromhex(hex_in))


def test_rejections_are_valid_cbor_where_expected() -> None:
    """Sanity check of the table: the out-of-subset cases are well-formed CBOR that cbor2
    accepts, so our rejections are about the subset, not accidental malformation."""
    for reason, name in [
        ("tag", "tag-bignum"),
        ("float", "float16"),
        ("float", "float64"),
        ("simple value", "undefined"),
        ("simple value", "simple-16"),
        ("indefinite", "indef-array"),
        ("indefinite", "indef-map-items"),
    ]:
        cbor2.loads(bytes.fromhex(REJECT[reason][name]))


@pytest.mark.parametrize(
    "hex_in", ["5b7fffffffffffffff00", "9bffffffffffffffff00", "bbffffffffffffffff6161"]
)
def test_huge_declared_length_allocates_nothing(hex_in: str) -> None:
    data = bytes.fromhex(hex_in)
    tracemalloc.start()
    try:
        with pytest.raises(ProtocolError):
            decode(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024


def test_depth_limit_arrays() -> None:
    assert depth_of(decode(nested_arrays(MAX_DEPTH))) == MAX_DEPTH
    with pytest.raises(ProtocolError, match="nesting"):
        decode(nested_arrays(MAX_DEPTH + 1))


def test_depth_limit_maps_and_arrays_mixed() -> None:
    def build(depth: int) -> bytes:
        # Alternate map {"k": ...} and array [...], innermost an empty map.
        out = b""
        for level in range(depth - 1):
            out += bytes.fromhex("a1616b") if level % 2 == 0 else b"\x81"
        return out + b"\xa0"

    assert depth_of(decode(build(MAX_DEPTH))) == MAX_DEPTH
    with pytest.raises(ProtocolError):
        decode(build(MAX_DEPTH + 1))


def test_depth_counts_containers_not_scalars() -> None:
    # 16 arrays, the innermost holding scalars: still depth 16.
    assert decode(nested_arrays(MAX_DEPTH, bytes.fromhex("8301f66161"))) is not None


def test_depth_is_restored_after_closing_containers() -> None:
    # Two sibling chains of depth 16 under a common root must both be accepted.
    chain = nested_arrays(MAX_DEPTH - 1)
    assert len(decode(b"\x82" + chain + chain)) == 2


def test_max_depth_parameter() -> None:
    assert decode(b"\x81\x80", max_depth=2) == [[]]
    with pytest.raises(ProtocolError):
        decode(b"\x81\x80", max_depth=1)
    assert decode(b"\x01", max_depth=1) == 1
    with pytest.raises(ValueError, match="max_depth"):
        decode(b"\x01", max_depth=0)


def test_very_deep_input_with_large_max_depth_has_no_recursion_limit() -> None:
    depth = 20_000
    value = decode(nested_arrays(depth), max_depth=depth)
    for _ in range(depth - 1):
        value = value[0]
    assert value == []


# --------------------------------------------------------------------------------------------
# Fuzzing: nothing but ProtocolError may escape
# --------------------------------------------------------------------------------------------


@given(st.binary(max_size=64))
def test_random_bytes_raise_only_protocol_error(data: bytes) -> None:
    decoded = decode_only_protocol_errors(data)
    if decoded is not REJECTED:
        # Whatever we accept is valid CBOR that cbor2 reads the same way.
        assert same(decoded, cbor2.loads(data))


@given(value_and_loose_encoding(), st.data())
def test_mutated_encodings_raise_only_protocol_error(
    case: tuple[Any, bytes], data: st.DataObject
) -> None:
    _, encoded = case
    buf = bytearray(encoded)
    for _ in range(data.draw(st.integers(1, 3))):
        action = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        pos = data.draw(st.integers(0, len(buf)))
        if action == "insert":
            buf[pos:pos] = bytes([data.draw(st.integers(0, 255))])
        elif action == "truncate":
            del buf[pos:]
        elif buf and pos < len(buf):
            if action == "flip":
                buf[pos] = data.draw(st.integers(0, 255))
            else:
                del buf[pos]
    mutated = bytes(buf)
    decoded = decode_only_protocol_errors(mutated)
    if decoded is not REJECTED:
        assert same(decoded, cbor2.loads(mutated))


# --------------------------------------------------------------------------------------------
# Encoder
# --------------------------------------------------------------------------------------------


class Colour(enum.IntEnum):
    RED = 1


@pytest.mark.parametrize(
    ("value", "hex_out"),
    [
        (0, "00"),
        (23, "17"),
        (24, "1818"),
        (U64_MAX, "1bffffffffffffffff"),
        (NINT_MIN, "3bffffffffffffffff"),
        (-1, "20"),
        (True, "f5"),
        (False, "f4"),
        (None, "f6"),
        (Colour.RED, "01"),
        (b"\x01", "4101"),
        (bytearray(b"\x01"), "4101"),
        (memoryview(b"\x01\x02")[1:], "4102"),
        ("\u00fc", "62c3bc"),
        ((1, 2), "820102"),
        ([], "80"),
        ({}, "a0"),
        # Deterministic key order: bytewise on the encoded keys (shorter keys first).
        ({"bb": 1, "a": 2, "b": 3, "aa": 4}, "a461610261620362616104626262" + "01"),
        ({"\u00fc": 1, "z": 2}, "a2617a0262c3bc01"),
    ],
)
def test_encode_vectors(value: object, hex_out: str) -> None:
    assert encode(value).hex() == hex_out


def test_encode_bool_is_not_int() -> None:
    assert encode([True, 1]) == b"\x82\xf5\x01"


@pytest.mark.parametrize(
    "value",
    [1.0, float("nan"), [0.5], {"a": 1.5}, {1: "a"}, {b"k": 1}, {None: 1}, {1, 2}, object(), 1j],
)
def test_encode_rejects_unsupported_types(value: object) -> None:
    with pytest.raises(TypeError):
        encode(value)


@pytest.mark.parametrize("value", [U64_MAX + 1, NINT_MIN - 1, 2**200, "\ud800", {"\udfff": 1}])
def test_encode_rejects_unencodable_values(value: object) -> None:
    with pytest.raises(ValueError):
        encode(value)


def test_encode_depth_limit() -> None:
    value: list[Any] = []
    for _ in range(MAX_DEPTH - 1):
        value = [value]
    assert decode(encode(value)) == value
    with pytest.raises(ValueError, match="nesting"):
        encode([value])


def test_encode_rejects_cycles() -> None:
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    with pytest.raises(ValueError, match="nesting"):
        encode(cyclic)


@given(values)
def test_max_depth_is_exact(value: Any) -> None:
    depth = depth_of(value)
    data = encode(value)
    assert same(decode(data, max_depth=max(depth, 1)), value)
    if depth > 1:
        with pytest.raises(ProtocolError):
            decode(data, max_depth=depth - 1)


# --- decode budget (§3) ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "items"),
    [([1, 2, 3], 4), ({"a": 1, "b": [2]}, 4), ([[[0]]], 4), ([b"x" * 1000], 2)],
)
def test_decode_budget_counts_items(item: object, items: int) -> None:
    data = encode(item)
    assert decode(data, max_items=items) == item
    with pytest.raises(ProtocolError, match=f"more than {items - 1} items"):
        decode(data, max_items=items - 1)


def test_decode_budget_stops_a_huge_flat_array_early() -> None:
    data = b"\x9a" + (2_000_000).to_bytes(4, "big") + b"\x00" * 2_000_000
    with pytest.raises(ProtocolError, match="more than 1024 items"):
        decode(data, max_items=1024)


def test_decode_budget_must_be_positive() -> None:
    with pytest.raises(ValueError):
        decode(b"\x00", max_items=0)
    assert decode(b"\x00", max_items=1) == 0


@pytest.mark.parametrize("n", [0, 23, 24, 255, 256, 65535, 65536])
def test_head_size_is_what_encoding_writes(n: int) -> None:
    from novakms.wire.cbor import head_size

    assert head_size(n) == len(encode(bytes(n))) - n
    assert head_size(n) == len(encode([0] * n)) - n
    assert head_size(2**32 - 1) == 5 and head_size(2**32) == 9
