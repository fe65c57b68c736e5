"""The fast paths of the CBOR codec against its references (issue 15).

:func:`encode` must write the bytes of :func:`encode_reference` and raise its errors for
everything; :func:`decode` must return the value of :func:`decode_reference` and raise its
errors for every input, whatever ``max_depth`` and ``max_items``; and
:func:`decode_byte_string` must accept exactly what ``decode(data, max_items=1)`` returns a
byte string for. cbor2's canonical encoder is the independent check of the byte order.
"""

from __future__ import annotations

import collections
import datetime
import decimal
import enum
import fractions
import functools
import types
import uuid
from collections.abc import Callable
from typing import Any

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from novakms.errors import ProtocolError
from novakms.wire import cbor
from novakms.wire.cbor import (
    MAX_DEPTH,
    decode,
    decode_byte_string,
    decode_reference,
    encode,
    encode_reference,
)
from tests.wire.test_cbor import (
    INT_EDGES,
    REJECT_CASES,
    depth_of,
    same,
    value_and_loose_encoding,
)

# Every head width boundary (§4.2.1): the last argument of one width and the first of the next.
HEAD_EDGES = [0, 1, 23, 24, 25, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1]
# Lengths that can be built in memory (a string of 2**32 bytes cannot).
LENGTH_EDGES = [0, 1, 23, 24, 25, 255, 256, 65535, 65536]


class Colour(enum.IntEnum):
    RED = 1
    BIG = 2**40


class Text(str):
    """A str subclass: encoded by its value, through the reference path."""

    __slots__ = ()


# --------------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------------

ints = (
    st.integers(-(2**64), 2**64 - 1)
    | st.sampled_from(INT_EDGES)
    | st.sampled_from(HEAD_EDGES)
    | st.sampled_from([-1 - n for n in HEAD_EDGES])
    | st.integers(-300, 300)
)
# Multi-byte characters so that a text's byte length differs from its length, and lengths
# around the head boundaries so that a longer key sorts after a shorter one with a larger byte.
alphabet = st.sampled_from(["a", "b", "z", "\x00", "\x7f", "é", "ÿ", "€", "\U0001f600"])
texts = st.text(alphabet, max_size=30) | st.sampled_from(LENGTH_EDGES).flatmap(
    lambda n: st.sampled_from(["a" * n, "é" * (n // 2), "€" * (n // 3) + "z" * (n % 3)])
)
keys = (
    st.text(alphabet, max_size=12)
    | st.text(max_size=4)
    | st.sampled_from([*"abz", "aa", "ab", "ba", "é", "€", "a" * 23, "a" * 24, "b" * 23, "z" * 255])
)
binaries = st.binary(max_size=40) | st.sampled_from(LENGTH_EDGES).map(lambda n: b"\xa5" * n)
byte_likes = (
    binaries | binaries.map(bytearray) | binaries.map(lambda b: memoryview(b"\x00" + b)[1:])
)
leaves = (
    st.none()
    | st.booleans()
    | ints
    | texts
    | byte_likes
    | st.sampled_from([Colour.RED, Colour.BIG, Text("t"), Text("é" * 12)])
)


def containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return (
        st.lists(children, max_size=6)
        | st.lists(children, max_size=6).map(tuple)
        | st.dictionaries(keys, children, max_size=6)
        | st.dictionaries(keys, children, max_size=3).map(collections.OrderedDict)
        | st.dictionaries(keys.map(Text), children, max_size=3)
        | st.sampled_from([23, 24, 255, 256]).map(lambda n: [0] * n)
        | st.sampled_from([23, 24, 25]).map(lambda n: {f"k{i}": i for i in range(n)})
    )


def depth(value: Any) -> int:
    """Container nesting depth of an encoder input (tuples and dict subclasses count too)."""
    if isinstance(value, list | tuple):
        return 1 + max((depth(x) for x in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(x) for x in value.values()), default=0)
    return 0


subset_values = st.recursive(leaves, containers, max_leaves=40).filter(
    lambda v: depth(v) <= MAX_DEPTH
)


class Impostor:
    """Hashes and compares like the text it names: must still be refused as a map key."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __hash__(self) -> int:
        return hash(self.text)

    def __eq__(self, other: object) -> bool:
        return other == self.text or (isinstance(other, Impostor) and other.text == self.text)


# Values outside the subset, each raising TypeError or ValueError on its own.
INVALID: list[Any] = [
    1.0,
    float("nan"),
    -0.0,
    1j,
    2**64,
    -(2**64) - 1,
    2**200,
    Colour.RED * 2**70,  # an int (not the enum) out of range
    "\ud800",
    "ok\udfff",
    {1, 2},
    frozenset(),
    object(),
    b"x".decode,  # a callable
    iter(()),  # an iterator
    range(3),
    collections.deque([1]),
    types.MappingProxyType({"a": 1}),
    datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
    datetime.date(2026, 1, 1),
    decimal.Decimal(1),
    fractions.Fraction(1, 3),
    uuid.UUID(int=0),
    cbor2.CBORTag(2, b"\x01"),
    cbor2.CBORSimpleValue(16),
    cbor2.undefined,
    {1: "a"},
    {b"k": 1},
    {None: 1},
    {(): 1},
    {"ok": 1, 2: 3},
    {"\ud800": 1},
    {Impostor("id"): 1},
    {"id": 1, Impostor("ok"): 2},
]

invalid_leaves = st.sampled_from(INVALID)
values_with_faults = st.recursive(leaves | invalid_leaves, containers, max_leaves=20)


def outcome(fn: Callable[[], Any]) -> tuple[Any, ...]:
    """What calling ``fn`` did: its result, or the type and message of what it raised."""
    try:
        return ("ok", fn())
    except (TypeError, ValueError, ProtocolError) as exc:
        return ("raised", type(exc), str(exc))


def for_cbor2(value: Any) -> Any:
    """The same value as cbor2 sees it (it encodes a memoryview as an array of integers)."""
    if isinstance(value, memoryview):
        return bytes(value)
    if isinstance(value, list | tuple):
        return [for_cbor2(x) for x in value]
    if isinstance(value, dict):
        return {str(k): for_cbor2(v) for k, v in value.items()}
    if isinstance(value, str):
        return str(value)
    return value


# --------------------------------------------------------------------------------------------
# Encoder
# --------------------------------------------------------------------------------------------


@given(subset_values)
def test_encode_is_byte_identical_to_the_reference(value: Any) -> None:
    data = encode(value)
    assert data == encode_reference(value)
    assert data == cbor2.dumps(for_cbor2(value), canonical=True)
    assert encode(value) == data  # again, now with the map shapes cached


@pytest.mark.parametrize("n", HEAD_EDGES)
def test_encode_head_edges(n: int) -> None:
    for value in (n, -1 - n):
        assert encode(value) == encode_reference(value) == cbor2.dumps(value)
        assert encode([value, {"k": value}]) == encode_reference([value, {"k": value}])
    if n <= 65536:
        sized: list[Any] = [
            b"\x01" * n,
            "é" * (n // 2),
            [None] * n,
            {str(i): i for i in range(n % 300)},
        ]
        for item in sized:
            assert encode(item) == encode_reference(item) == cbor2.dumps(item, canonical=True)


def test_encode_key_order_is_bytewise_on_encoded_keys() -> None:
    # Length first (in bytes, not characters), then bytewise: "z" < "aa", "é" (2 bytes) > "z",
    # and a 23-byte key (one-byte head) < a 24-byte one (two-byte head) < a 256-byte one.
    value = {k: 0 for k in ["aa", "z", "é", "b" * 24, "a" * 23, "a" * 256, "\x7f", "\U0001f600"]}
    expected_order = ["z", "\x7f", "aa", "é", "\U0001f600", "a" * 23, "b" * 24, "a" * 256]
    assert decode_keys_in_order(encode(value)) == expected_order
    assert encode(value) == encode_reference(value) == cbor2.dumps(value, canonical=True)


def decode_keys_in_order(data: bytes) -> list[str]:
    """The keys of an encoded map of ``0`` values, in the order they were written."""
    assert data[0] >> 5 == 5 and data[0] & 0x1F < 24  # a map of fewer than 24 pairs
    pos, out = 1, []
    while pos < len(data):
        ib = data[pos]
        ai = ib & 0x1F
        if ai < 24:
            n, pos = ai, pos + 1
        else:
            width = 1 << (ai - 24)
            n, pos = int.from_bytes(data[pos + 1 : pos + 1 + width], "big"), pos + 1 + width
        out.append(data[pos : pos + n].decode())
        pos += n + 1  # the value 0
    return out


@given(values_with_faults)
def test_encode_raises_what_the_reference_raises(value: Any) -> None:
    assert outcome(lambda: encode(value)) == outcome(lambda: encode_reference(value))


@pytest.mark.parametrize("value", INVALID, ids=repr)
def test_encode_refuses_every_value_outside_the_subset(value: Any) -> None:
    for wrapped in (value, [value], {"k": value}, {"a": [1, {"b": (value,)}]}, [0, "x", value]):
        with pytest.raises((TypeError, ValueError)) as caught:
            encode(wrapped)
        assert outcome(functools.partial(encode, wrapped)) == outcome(
            functools.partial(encode_reference, wrapped)
        )
        assert not isinstance(caught.value, ProtocolError)


def test_encode_depth_limit_and_cycles_like_the_reference() -> None:
    for make in (lambda v: [v], lambda v: (v,), lambda v: {"k": v}, lambda v: {"a": 1, "k": [v]}):
        value: Any = 0
        while depth(make(value)) <= MAX_DEPTH:
            value = make(value)
        assert depth(value) == MAX_DEPTH
        assert encode(value) == encode_reference(value)
        too_deep = make(value)
        assert outcome(functools.partial(encode, too_deep)) == outcome(
            functools.partial(encode_reference, too_deep)
        )
        with pytest.raises(ValueError, match="nesting"):
            encode(too_deep)
    cyclic: dict[str, Any] = {}
    cyclic["self"] = [cyclic]
    with pytest.raises(ValueError, match="nesting"):
        encode(cyclic)


def test_encode_impostor_key_is_refused_even_with_the_key_set_cached() -> None:
    assert encode({"id": 1}) == encode_reference({"id": 1})  # ("id",) is now cached
    with pytest.raises(TypeError, match="map keys must be str, not Impostor"):
        encode({Impostor("id"): 1})


def test_encode_str_subclass_keys_and_values_encode_as_their_text() -> None:
    assert encode({"id": 1, "op": "x"}) == encode({Text("id"): 1, Text("op"): Text("x")})


def test_shape_cache_stays_bounded_and_correct() -> None:
    for i in range(3 * cbor._SHAPES_MAX):
        value = {f"key-{i}": i, "id": i}
        assert encode(value) == encode_reference(value)
        assert len(cbor._SHAPES) <= cbor._SHAPES_MAX
    big = {f"k{i}": i for i in range(cbor._SHAPE_MAX_KEYS + 1)}
    assert encode(big) == encode_reference(big)
    assert tuple(big) not in cbor._SHAPES


def test_encode_top_level_byte_string_fast_path() -> None:
    for n in LENGTH_EDGES:
        data = bytes(range(256)) * (n // 256) + bytes(n % 256)
        assert encode(data) == encode_reference(data) == cbor2.dumps(data)


# --------------------------------------------------------------------------------------------
# Decoder
# --------------------------------------------------------------------------------------------

budgets = st.none() | st.integers(1, 40)
depths = st.integers(1, MAX_DEPTH + 2)


def decoded(fn: Callable[[], Any]) -> tuple[Any, ...]:
    """Like :func:`outcome`, with types compared too (True is not 1, a list not a tuple)."""
    result = outcome(fn)
    if result[0] == "ok":
        return ("ok", repr(result[1]))
    return result


def agree(data: bytes, max_depth: int = MAX_DEPTH, max_items: int | None = None) -> None:
    fast = decoded(lambda: decode(data, max_depth=max_depth, max_items=max_items))
    ref = decoded(lambda: decode_reference(data, max_depth=max_depth, max_items=max_items))
    assert fast == ref
    if fast[0] == "ok":
        assert same(
            decode(data, max_depth=max_depth, max_items=max_items),
            decode_reference(data, max_depth=max_depth, max_items=max_items),
        )


@given(value_and_loose_encoding(), depths, budgets)
def test_decode_agrees_with_the_reference_on_valid_encodings(
    case: tuple[Any, bytes], max_depth: int, max_items: int | None
) -> None:
    agree(case[1], max_depth, max_items)


@given(st.binary(max_size=64), depths, budgets)
def test_decode_agrees_with_the_reference_on_random_bytes(
    data: bytes, max_depth: int, max_items: int | None
) -> None:
    agree(data, max_depth, max_items)


@given(value_and_loose_encoding(), st.data(), depths, budgets)
def test_decode_agrees_with_the_reference_on_mutated_encodings(
    case: tuple[Any, bytes], data: st.DataObject, max_depth: int, max_items: int | None
) -> None:
    buf = bytearray(case[1])
    for _ in range(data.draw(st.integers(1, 3))):
        pos = data.draw(st.integers(0, len(buf)))
        action = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if action == "insert":
            buf[pos:pos] = bytes([data.draw(st.integers(0, 255))])
        elif action == "truncate":
            del buf[pos:]
        elif pos < len(buf):
            if action == "flip":
                buf[pos] = data.draw(st.integers(0, 255))
            else:
                del buf[pos]
    agree(bytes(buf), max_depth, max_items)


@given(subset_values.filter(lambda v: depth(v) <= MAX_DEPTH), budgets)
def test_decode_agrees_with_the_reference_on_deterministic_encodings(
    value: Any, max_items: int | None
) -> None:
    data = encode(value)
    agree(data, MAX_DEPTH, max_items)
    assert same(decode(data), decode_reference(data))


@pytest.mark.parametrize(("hex_in", "reason"), REJECT_CASES)
@pytest.mark.parametrize("max_items", [None, 1, 2, 3])
def test_rejections_are_the_references(hex_in: str, reason: str, max_items: int | None) -> None:
    agree(bytes.fromhex(hex_in), MAX_DEPTH, max_items)


# Where an item can sit: each position has its own inlined fast path in the decoder.
POSITIONS = {
    "top": "{}",
    "map-value": "a1617a{}",
    "second-map-value": "a2617900617a{}",
    "array-element": "81{}",
    "second-array-element": "8200{}",
    "nested-map-value": "a1617aa1617b{}",
    "nested-array-element": "818181{}",
}


@pytest.mark.parametrize(("hex_in", "reason"), REJECT_CASES)
@pytest.mark.parametrize("position", POSITIONS)
def test_rejections_anywhere_are_the_references(hex_in: str, reason: str, position: str) -> None:
    data = bytes.fromhex(POSITIONS[position].format(hex_in))
    agree(data)
    if position == "top" or reason not in ("trailing", "truncated", "map key is not a text"):
        with pytest.raises(ProtocolError):
            decode(data)


@pytest.mark.parametrize(
    "hex_in",
    [
        "83010203",  # [1, 2, 3]: 4 items
        "a2616101616202",  # {"a": 1, "b": 2}: 3 items
        "a3616101616202616380",  # {"a": 1, "b": 2, "c": []}: 5 items
        "a2616101616282ff02",  # over budget at a container holding a fault
        "8301028261",  # truncated after the budget runs out
        "830102a1616101",  # a map as the over-budget item
        "a3616101616202616102",  # duplicate key found after the budget ran out
        "82820102820304",
        "9a00000003010203",  # a non-minimal count
    ],
)
@pytest.mark.parametrize("max_items", [1, 2, 3, 4, 5, 6, 7, None])
@pytest.mark.parametrize("max_depth", [1, 2, 3])
def test_budget_and_depth_errors_are_the_references(
    hex_in: str, max_items: int | None, max_depth: int
) -> None:
    agree(bytes.fromhex(hex_in), max_depth, max_items)


@pytest.mark.parametrize(
    "item",
    [
        {"id": 7, "op": "derive", "args": {"path": "bench/derive"}},
        {"id": 7, "ok": {"app_id": 1, "path": "bench/derive", "key": bytes(32), "length": 32}},
        {"k" * 300: 1, "é" * 200: [b"\x00" * 300, "x" * 70000], "": {"": -(2**64)}},
        [True, False, None, 2**64 - 1, -(2**64), 24, -25, 255, 256, "", b""],
    ],
)
def test_decode_messages(item: Any) -> None:
    data = encode(item)
    assert same(decode(data), item)
    assert same(decode(memoryview(data)), item)
    agree(data)


@pytest.mark.parametrize("inner", ["80", "9800", "9a00000000", "a0", "b800", "bb0000000000000000"])
@pytest.mark.parametrize("wrapper", ["81", "a1617a", "980200", "b801617a", "8200"])
@pytest.mark.parametrize("max_depth", [1, 2, MAX_DEPTH])
def test_depth_limit_whatever_the_container_heads(inner: str, wrapper: str, max_depth: int) -> None:
    """Short heads and long ones (a different path in the decoder) hit the same limit."""
    deepest = bytes.fromhex(wrapper * (max_depth - 1) + inner)
    assert depth_of(decode(deepest, max_depth=max_depth)) == max_depth
    too_deep = bytes.fromhex(wrapper * max_depth + inner)
    with pytest.raises(ProtocolError, match="nesting"):
        decode(too_deep, max_depth=max_depth)
    agree(deepest, max_depth)
    agree(too_deep, max_depth)


def test_decode_with_a_large_max_depth_uses_the_reference() -> None:
    data = b"\x81" * (MAX_DEPTH + 10) + b"\x80"
    agree(data, MAX_DEPTH + 11)
    agree(data, MAX_DEPTH + 10)
    with pytest.raises(ValueError, match="max_depth"):
        decode(b"\x00", max_depth=0)
    with pytest.raises(ValueError, match="max_items"):
        decode(b"\x00", max_items=0)


def fast_path(data: bytes, max_depth: int = MAX_DEPTH, max_items: int | None = None) -> Any:
    """The fast decoder alone (no hand-over): its value, or ``REFUSED`` however it gave up."""
    budget = len(data) if max_items is None else max_items
    try:
        value, pos, _ = cbor._fast_item(data, data[0], 1, max_depth, budget - 1)
    except (ProtocolError, IndexError, UnicodeDecodeError):
        return REFUSED
    return value if pos == len(data) else REFUSED


REFUSED = object()


@given(
    value_and_loose_encoding() | subset_values.map(lambda v: (v, encode(v))),
    st.data(),
    depths.filter(lambda d: d <= MAX_DEPTH),
    budgets,
)
def test_whatever_the_fast_path_returns_is_the_references_value(
    case: tuple[Any, bytes], data: st.DataObject, max_depth: int, max_items: int | None
) -> None:
    """The safety property of the hand-over design, on valid, mutated and random inputs."""
    encoded = bytearray(case[1])
    if data.draw(st.booleans()):
        for _ in range(data.draw(st.integers(1, 3))):
            pos = data.draw(st.integers(0, len(encoded)))
            if data.draw(st.booleans()) or pos == len(encoded):
                encoded[pos:pos] = bytes([data.draw(st.integers(0, 255))])
            else:
                encoded[pos] = data.draw(st.integers(0, 255))
    for candidate in (bytes(encoded), data.draw(st.binary(min_size=1, max_size=40))):
        value = fast_path(candidate, max_depth, max_items)
        if value is not REFUSED:
            reference = decode_reference(candidate, max_depth=max_depth, max_items=max_items)
            assert same(value, reference)


def test_long_key_heads_are_not_misread() -> None:
    """A key of 263 bytes (head 79 01 07) whose text is itself CBOR ('Y' 01 05: a byte string
    of 261 bytes): misreading the key's head as a one-byte length would parse the whole input
    as {"\\x07": <261 bytes>}, with nothing left over."""
    key = "Y\x01\x05" + "a" * 260
    data = encode({key: 0})
    assert data[:4] == bytes.fromhex("a1790107")
    assert same(decode(data), {key: 0})
    assert fast_path(data) in (REFUSED, {key: 0})


@pytest.mark.parametrize(
    "item",
    [
        [1, "a", b"b", {"c": None}],
        {"id": 1},
        {"k" * 24: 1, "k" * 255: [True, False]},
        {"id": 7, "ok": {"app_id": 1, "path": "bench/derive", "key": bytes(32), "length": 32}},
        [2**64 - 1, -(2**64), 65536, -257, "é" * 300, b"\x00" * 70000],
        5,
        "x",
        b"",
        [],
        {},
    ],
)
def test_fast_path_decodes_typical_messages_itself(item: Any) -> None:
    data = encode(item)
    value = fast_path(data)
    assert value is not REFUSED, "the fast path handed a typical message over"
    assert same(value, item)


# --------------------------------------------------------------------------------------------
# decode_byte_string (the sealed frame)
# --------------------------------------------------------------------------------------------


def as_byte_string(data: bytes) -> tuple[Any, ...]:
    """What decode(data, max_items=1) makes of a sealed frame: its bytes, or a refusal."""
    try:
        value = decode(data, max_items=1)
    except ProtocolError:
        return ("refused",)
    return ("ok", value) if type(value) is bytes else ("refused",)


def via_fast(data: bytes | bytearray) -> tuple[Any, ...]:
    try:
        return ("ok", decode_byte_string(data))
    except ProtocolError:
        return ("refused",)


@st.composite
def byte_string_encodings(draw: st.DrawFn) -> bytes:
    """A byte string with any head width, sometimes cut short or followed by a byte."""
    body = draw(st.binary(max_size=300))
    widths = [w for w in (0, 1, 2, 4, 8) if (len(body) < 24 if w == 0 else len(body) < 256**w)]
    width = draw(st.sampled_from(widths))
    if width == 0:
        head = bytes([0x40 | len(body)])
    else:
        head = bytes([0x40 | {1: 24, 2: 25, 4: 26, 8: 27}[width]]) + len(body).to_bytes(
            width, "big"
        )
    data = head + body
    cut = draw(st.sampled_from(["none", "none", "truncate", "append"]))
    if cut == "truncate" and data:
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif cut == "append":
        data += bytes([draw(st.integers(0, 255))])
    return data


@given(byte_string_encodings() | st.binary(max_size=40))
def test_decode_byte_string_is_decode_of_one_item(data: bytes) -> None:
    assert via_fast(data) == as_byte_string(data)
    assert via_fast(bytearray(data)) == as_byte_string(data)


@pytest.mark.parametrize(
    "hex_in",
    [
        "",
        "40",
        "5800",
        "590000",
        "5a00000000",
        "5b0000000000000000",
        "4101",
        "5b000000000000000141",
    ],
)
def test_decode_byte_string_accepts_any_head_width(hex_in: str) -> None:
    data = bytes.fromhex(hex_in)
    if data:
        assert decode_byte_string(data) == decode(data)
    else:
        with pytest.raises(ProtocolError, match="truncated"):
            decode_byte_string(data)


@pytest.mark.parametrize(
    ("hex_in", "reason"),
    [
        ("00", "not a byte string"),
        ("6161", "not a byte string"),
        ("80", "not a byte string"),
        ("8100", "more than 1 items"),
        ("5f4100ff", "indefinite"),
        ("4200", "truncated"),
        ("590001", "truncated"),
        ("5b7fffffffffffffff00", "truncated"),
        ("410000", "trailing"),
        ("5c", "reserved"),
        ("c24101", "tag"),
    ],
)
def test_decode_byte_string_refusals(hex_in: str, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        decode_byte_string(bytes.fromhex(hex_in))
