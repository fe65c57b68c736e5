"""The strict CBOR subset of the novakms wire protocol (``protocol/PROTOCOL.md`` §3).

Two pure functions, each a fast path in front of a reference implementation:

* :func:`encode` writes deterministic CBOR (RFC 8949 §4.2.1: shortest arguments, map keys
  sorted by their encoded bytes) for the subset types. Invalid input is a bug on our side, so
  it raises :class:`TypeError` / :class:`ValueError`, never :class:`ProtocolError`.
* :func:`decode` is a hand-written strict decoder for bytes that came from a peer. Anything
  outside the subset raises :class:`~novakms.errors.ProtocolError` and nothing else: no
  ``IndexError``, ``UnicodeDecodeError`` or ``RecursionError`` can escape it. It never
  allocates more than the input size, whatever lengths the input declares, and never works
  more than the input's size (or its ``max_items`` budget) allows.

:func:`decode_byte_string` is :func:`decode` for the sealed frame of §5 (one byte string),
reading only its head.

The references, :func:`encode_reference` and :func:`decode_reference`, are the executable
definition: straightforward code (the decoder iterative, an explicit stack bounded by
``max_depth``) that the fast paths are tested against, byte for byte and error for error.
The fast paths are safe by construction rather than by duplication of every check:

* The encoder dispatches on the exact built-in types (``type(x) is str``, ``int``, ``bytes``,
  ``dict``, ``list``, ``tuple``) and inlines the common scalars; every other value (``None``
  and ``bool`` at the top, subclasses such as ``IntEnum``, ``bytearray``, ``memoryview``,
  floats, sets, anything) goes to the reference for its whole subtree, which writes the same
  bytes or raises its own error. A map's head and sorted encoded keys are cached by its key
  tuple when all keys are exact ``str`` (checked before the lookup, so nothing that merely
  compares equal to a cached key passes for it); the protocol's few constant key sets then
  cost one lookup instead of encoding and sorting each key. The depth check, the integer
  range and the lone-surrogate error are the reference's, raised in the same traversal order.
* The decoder is optimistic: it returns a value only for well-formed input of the subset and
  hands everything else (any fault, or any form it does not bother with: keys of 256 bytes
  or more, indefinite lengths, tags…) to :func:`decode_reference`, which decides and raises
  the precise error. So a fast-path bug can cost speed, never strictness, provided that
  whenever the fast path returns, the reference returns the same value — which holds because:
  positions only grow, and a read past the end raises ``IndexError`` while a slice past the
  end is merely short and leaves the position past the end, which the final ``pos == end``
  check refuses; strings are decoded as strict UTF-8; map keys must be texts and a map is
  refused unless it ends with as many keys as it declared pairs (a duplicate replaces an
  entry); only ``false``, ``true`` and ``null`` are accepted in major type 7 and major type 6
  never; the nesting room is counted down per container; and the ``max_items`` budget is
  charged for all the elements (pairs) of a container when it opens, so the charges add up to
  the reference's item count and a container declaring more than is left stops before
  anything in it is read. Its loops inline the common items (a call per item would cost more
  than the item); it recurses, one level per container, so it serves ``max_depth`` up to
  :data:`MAX_DEPTH` only (the reference, iterative, serves any). Hostile input costs at most
  about twice the reference's work (the fast attempt, then the reference's).

The only state is the encoder's bounded cache of map shapes, a memo that never changes a
result.

cbor2 is deliberately not used. Not for decoding: it silently keeps the last of duplicate map
keys and accepts tags, floats and indefinite lengths, all of which the protocol must reject.
Nor for encoding (measured, cbor2 6.3 and its compiled extension, the only implementation it
ships): with ``canonical=True`` it sorts every map through a Python-level key callback per
key, which leaves it barely faster than the reference and about twice as slow as the fast
path on the protocol's messages, while without it the key order is wrong; and it would need a
guard walk over the whole value anyway, since it writes bignum tags, floats and sets, encodes
a ``memoryview`` as an array of integers, and crashes the interpreter (stack overflow) on
deeply nested input.
"""

from __future__ import annotations

import struct
from operator import itemgetter
from typing import Any, Final

from novakms.errors import ProtocolError

__all__ = [
    "MAX_DEPTH",
    "decode",
    "decode_byte_string",
    "decode_reference",
    "encode",
    "encode_reference",
    "head_size",
]

#: Maximum nesting depth of arrays and maps; the top-level item is depth 1 (§3).
MAX_DEPTH: Final = 16

_UINT_MAX: Final = (1 << 64) - 1
_NINT_MIN: Final = -(1 << 64)

# Width in bytes of the argument that follows the initial byte, by additional information.
_ARG_WIDTH: Final = {24: 1, 25: 2, 26: 4, 27: 8}

# The only major-type-7 items of the subset.
_SIMPLE: Final[dict[int, bool | None]] = {0xF4: False, 0xF5: True, 0xF6: None}

_MT_TEXT: Final = 3
_MT_ARRAY: Final = 4
_MT_MAP: Final = 5


# --------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------

_PACK_B: Final = struct.Struct(">BB").pack
_PACK_H: Final = struct.Struct(">BH").pack
_PACK_I: Final = struct.Struct(">BI").pack
_PACK_Q: Final = struct.Struct(">BQ").pack


# Every single-byte string, so short heads cost a list lookup instead of an allocation.
_BYTE: Final = [bytes((i,)) for i in range(256)]


def head_size(arg: int) -> int:
    """Bytes of the shortest CBOR head whose argument is ``arg`` (any major type, §4.2.1).

    The one place the head widths are written down for sizing: a byte string of ``n`` bytes
    takes ``head_size(n) + n``, an array of ``n`` items ``head_size(n)`` plus its items.

    Args:
        arg: the head's argument (a length, a count or an unsigned value), ``0 .. 2**64 - 1``.

    Returns:
        1, 2, 3, 5 or 9.
    """
    if arg < 24:
        return 1
    if arg <= 0xFF:
        return 2
    if arg <= 0xFFFF:
        return 3
    return 5 if arg <= 0xFFFFFFFF else 9


def _head(major: int, arg: int) -> bytes:
    """Initial byte plus the shortest argument encoding (deterministic, §4.2.1)."""
    ib = major << 5
    if arg < 24:
        return _BYTE[ib | arg]
    if arg <= 0xFF:
        return _PACK_B(ib | 24, arg)
    if arg <= 0xFFFF:
        return _PACK_H(ib | 25, arg)
    if arg <= 0xFFFFFFFF:
        return _PACK_I(ib | 26, arg)
    return _PACK_Q(ib | 27, arg)


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates cannot be sent as a CBOR text
        raise ValueError("text is not encodable as UTF-8 (lone surrogate)") from exc


def _encode_into(obj: object, out: list[bytes], depth: int) -> None:
    # bool before int: bool is an int subclass but has its own CBOR encoding.
    if obj is None:
        out.append(b"\xf6")
    elif obj is True:
        out.append(b"\xf5")
    elif obj is False:
        out.append(b"\xf4")
    elif isinstance(obj, int):
        if 0 <= obj <= _UINT_MAX:
            out.append(_head(0, obj))
        elif _NINT_MIN <= obj < 0:
            out.append(_head(1, -1 - obj))
        else:
            raise ValueError("integer outside the CBOR range -2**64 .. 2**64-1")
    elif isinstance(obj, str):
        raw = _utf8(obj)
        out.append(_head(_MT_TEXT, len(raw)))
        out.append(raw)
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        raw = bytes(obj)
        out.append(_head(2, len(raw)))
        out.append(raw)
    elif isinstance(obj, (list, tuple)):
        if depth >= MAX_DEPTH:  # also stops self-referencing containers
            raise ValueError(f"nesting deeper than {MAX_DEPTH}")
        out.append(_head(_MT_ARRAY, len(obj)))
        for item in obj:
            _encode_into(item, out, depth + 1)
    elif isinstance(obj, dict):
        if depth >= MAX_DEPTH:
            raise ValueError(f"nesting deeper than {MAX_DEPTH}")
        pairs: list[tuple[bytes, object]] = []
        for key, value in obj.items():
            if not isinstance(key, str):
                raise TypeError(f"map keys must be str, not {type(key).__name__}")
            raw = _utf8(key)
            pairs.append((_head(_MT_TEXT, len(raw)) + raw, value))
        # Deterministic order: bytewise on the encoded keys (distinct keys never tie).
        pairs.sort(key=itemgetter(0))
        out.append(_head(_MT_MAP, len(pairs)))
        for encoded_key, value in pairs:
            out.append(encoded_key)
            _encode_into(value, out, depth + 1)
    elif isinstance(obj, float):
        raise TypeError("floats are not part of the novakms CBOR subset")
    else:
        raise TypeError(f"cannot encode {type(obj).__name__} in the novakms CBOR subset")


def encode_reference(obj: object) -> bytes:
    """Encode a value as deterministic CBOR of the protocol subset: the reference encoder.

    The straightforward encoder :func:`encode` is checked against (byte for byte, error for
    error); :func:`encode` also hands it every value outside its fast path. Supported values,
    result and errors: those of :func:`encode`.
    """
    out: list[bytes] = []
    _encode_into(obj, out, 0)
    return b"".join(out)


# --- The fast encoder ---------------------------------------------------------------------------

# Heads for the arguments below 256, one table per major type: a list lookup instead of a call.
_UINT_HEAD: Final = [_head(0, i) for i in range(256)]
_NINT_HEAD: Final = [_head(1, i) for i in range(256)]  # for -1 - i
_BSTR_HEAD: Final = [_head(2, i) for i in range(256)]
_TEXT_HEAD: Final = [_head(_MT_TEXT, i) for i in range(256)]
_ARRAY_HEAD: Final = [_head(_MT_ARRAY, i) for i in range(256)]

#: A map's head and its ``(encoded key, key)`` pairs in deterministic order.
_Shape = tuple[bytes, tuple[tuple[bytes, str], ...]]

# Shapes of the maps encoded lately, by their keys in iteration order: the few constant key
# sets of the protocol's messages then cost one lookup instead of encoding and sorting every
# key. Only exact-str keys are ever stored; bounded (cleared when full, so a stream of one-off
# key sets cannot grow it, and the constant ones come back at once).
_SHAPES: Final[dict[tuple[str, ...], _Shape]] = {}
_SHAPES_MAX: Final = 512
_SHAPE_MAX_KEYS: Final = 16  # larger maps are likely data (one-off keys): not cached


def _map_shape(keys: tuple[str, ...]) -> _Shape:
    """The shape of a map whose keys are all exact ``str`` (cached when small)."""
    pairs = []
    for key in keys:
        raw = _utf8(key)
        pairs.append((_head(_MT_TEXT, len(raw)) + raw, key))
    # Deterministic order: bytewise on the encoded keys (distinct keys never tie).
    pairs.sort(key=itemgetter(0))
    shape = (_head(_MT_MAP, len(pairs)), tuple(pairs))
    if len(keys) <= _SHAPE_MAX_KEYS:
        if len(_SHAPES) >= _SHAPES_MAX:
            _SHAPES.clear()
        _SHAPES[keys] = shape
    return shape


def _encode_fast(obj: Any, out: list[bytes], depth: int) -> None:
    """:func:`_encode_into` for the exact built-in types, anything else handed to it.

    Dispatch is on ``type(obj) is ...``, so subclasses (``IntEnum``, ``OrderedDict``, a
    ``str`` subclass…), ``bytearray``, ``memoryview`` and every type outside the subset take
    the reference path for their whole subtree, which writes the same bytes or raises the same
    error. Scalars inside maps and arrays are inlined (no call per item). The traversal order
    is the reference's (values in sorted key order, depth first), so with several faults the
    same one is reported first.
    """
    append = out.append
    t = type(obj)
    if t is str:
        raw = obj.encode()
        n = len(raw)
        append(_TEXT_HEAD[n] if n < 256 else _head(_MT_TEXT, n))
        append(raw)
    elif t is int:
        if 0 <= obj < 256:
            append(_UINT_HEAD[obj])
        elif 0 < obj <= _UINT_MAX:
            append(_head(0, obj))
        elif -257 < obj < 0:
            append(_NINT_HEAD[-1 - obj])
        else:
            _encode_into(obj, out, depth)  # long negative heads and the range check
    elif t is dict:
        if depth >= MAX_DEPTH:  # also stops self-referencing containers
            raise ValueError(f"nesting deeper than {MAX_DEPTH}")
        keys = tuple(obj)
        # Exact str keys only, checked before the cache lookup: an object comparing equal to
        # a cached key must not pass for it, and no foreign __eq__ or __hash__ is ever called.
        for key in keys:
            if type(key) is not str:
                _encode_into(obj, out, depth)  # raises the reference's TypeError
                return
        shape = _SHAPES.get(keys)
        if shape is None:
            shape = _map_shape(keys)
        append(shape[0])
        depth += 1
        for encoded_key, key in shape[1]:
            append(encoded_key)
            item = obj[key]
            ti = type(item)
            if ti is str:
                raw = item.encode()
                n = len(raw)
                append(_TEXT_HEAD[n] if n < 256 else _head(_MT_TEXT, n))
                append(raw)
            elif ti is int and 0 <= item < 256:
                append(_UINT_HEAD[item])
            elif ti is bytes:
                n = len(item)
                append(_BSTR_HEAD[n] if n < 256 else _head(2, n))
                append(item)
            elif item is None:
                append(b"\xf6")
            else:
                _encode_fast(item, out, depth)
    elif t is bytes:
        n = len(obj)
        append(_BSTR_HEAD[n] if n < 256 else _head(2, n))
        append(obj)
    elif t is list or t is tuple:
        if depth >= MAX_DEPTH:
            raise ValueError(f"nesting deeper than {MAX_DEPTH}")
        n = len(obj)
        append(_ARRAY_HEAD[n] if n < 256 else _head(_MT_ARRAY, n))
        depth += 1
        for item in obj:
            ti = type(item)
            if ti is str:
                raw = item.encode()
                n = len(raw)
                append(_TEXT_HEAD[n] if n < 256 else _head(_MT_TEXT, n))
                append(raw)
            elif ti is int and 0 <= item < 256:
                append(_UINT_HEAD[item])
            else:
                _encode_fast(item, out, depth)
    else:  # None, bool, subclasses, bytearray, memoryview, and everything outside the subset
        _encode_into(obj, out, depth)


def encode(obj: object) -> bytes:
    """Encode a value as deterministic CBOR of the protocol subset.

    Supported: ``int`` (-2**64 .. 2**64-1), ``bytes``/``bytearray``/``memoryview`` (byte
    string), ``str`` (text string), ``list``/``tuple`` (array), ``dict`` with ``str`` keys
    (map, keys sorted), ``bool`` and ``None``. The output and the errors are those of
    :func:`encode_reference`, only faster.

    Args:
        obj: the value to encode.

    Returns:
        The deterministic encoding (RFC 8949 §4.2.1).

    Raises:
        TypeError: a value of an unsupported type (float, set, custom objects…) or a map key
            that is not a ``str``.
        ValueError: an integer out of range, a text with lone surrogates, or nesting deeper
            than :data:`MAX_DEPTH` (the peer would reject it; this also catches cycles).
    """
    if type(obj) is bytes:  # a sealed frame body: one byte string
        n = len(obj)
        return (_BSTR_HEAD[n] if n < 256 else _head(2, n)) + obj
    out: list[bytes] = []
    try:
        _encode_fast(obj, out, 0)
    except UnicodeEncodeError:  # a lone surrogate: the reference raises its ValueError
        return encode_reference(obj)
    return b"".join(out)


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


def _long_arg(buf: bytes, pos: int, ai: int, end: int) -> tuple[int, int]:
    """Argument for additional information >= 24; ``pos`` is just after the initial byte.

    Returns:
        ``(argument, position after it)``.
    """
    width = _ARG_WIDTH.get(ai)
    if width is None:
        if ai == 31:
            raise ProtocolError("CBOR: indefinite length or break is not allowed")
        raise ProtocolError("CBOR: reserved additional information (28..30)")
    stop = pos + width
    if stop > end:
        raise ProtocolError("CBOR: truncated item")
    return int.from_bytes(buf[pos:stop], "big"), stop


def _bad_major7(ib: int) -> ProtocolError:
    """The error for a major-type-7 initial byte other than false/true/null."""
    if 0xF9 <= ib <= 0xFB:
        return ProtocolError("CBOR: floats are not allowed")
    if ib == 0xFF:
        return ProtocolError("CBOR: break outside an indefinite-length item")
    if 0xFC <= ib <= 0xFE:
        return ProtocolError("CBOR: reserved additional information (28..30)")
    return ProtocolError("CBOR: simple value other than false, true and null")


def decode_reference(
    data: bytes | bytearray | memoryview,
    *,
    max_depth: int = MAX_DEPTH,
    max_items: int | None = None,
) -> Any:
    """Decode exactly one CBOR item of the protocol subset: the reference decoder.

    The strict iterative decoder that defines what :func:`decode` accepts, what it returns and
    which error it raises; :func:`decode` hands it every input its fast path does not return
    a value for. Arguments, result and errors: as :func:`decode` documents them.
    """
    if max_depth < 1:
        raise ValueError("max_depth must be >= 1")
    if max_items is not None and max_items < 1:
        raise ValueError("max_items must be >= 1")
    # One copy to bytes: indexing bytes yields ints and slicing yields bytes, the fastest
    # combination in CPython (a memoryview slice would need a second conversion).
    buf = data if type(data) is bytes else bytes(data)
    end = len(buf)
    pos = 0

    # The innermost open container, the number of items (elements or pairs) it still needs,
    # the map key waiting for its value, and the same triple for every enclosing container.
    cont: list[Any] | dict[str, Any] | None = None
    left = 0
    key = ""
    stack: list[tuple[list[Any] | dict[str, Any] | None, int, str]] = []
    depth = 0
    value: Any
    # Every item needs at least one byte, so the input's size bounds the count already.
    budget = end if max_items is None else max_items

    while True:
        if pos >= end:
            raise ProtocolError("CBOR: truncated item")
        budget -= 1
        if budget < 0:
            raise ProtocolError(f"CBOR: more than {max_items} items")
        ib = buf[pos]
        pos += 1

        if type(cont) is dict:
            # A map pair starts with its key, which must be a text string.
            if ib >> 5 != _MT_TEXT:
                raise ProtocolError("CBOR: map key is not a text string")
            ai = ib & 0x1F
            if ai < 24:
                n = ai
            else:
                n, pos = _long_arg(buf, pos, ai, end)
            stop = pos + n
            if stop > end:
                raise ProtocolError("CBOR: truncated item")
            try:  # strict UTF-8: rejects surrogates, overlongs and > U+10FFFF
                key = buf[pos:stop].decode()
            except UnicodeDecodeError:
                raise ProtocolError("CBOR: text string is not valid UTF-8") from None
            if key in cont:
                raise ProtocolError("CBOR: duplicate map key")
            pos = stop
            if pos >= end:
                raise ProtocolError("CBOR: truncated item")
            ib = buf[pos]
            pos += 1

        mt = ib >> 5
        if mt == 7:
            # Checked on the initial byte, before reading any argument: no floats, no
            # undefined, no other simple values, no break.
            if ib not in _SIMPLE:
                raise _bad_major7(ib)
            value = _SIMPLE[ib]
        elif mt == 6:
            raise ProtocolError("CBOR: tags are not allowed")
        else:
            ai = ib & 0x1F
            if ai < 24:
                arg = ai
            elif ai == 24 and pos < end:  # inlined: one-byte arguments are common
                arg = buf[pos]
                pos += 1
            else:
                arg, pos = _long_arg(buf, pos, ai, end)

            if mt == 0:
                value = arg
            elif mt == 1:
                value = -1 - arg
            elif mt <= _MT_TEXT:
                # Bounds check before slicing: a declared length of 2**63 must cost nothing.
                stop = pos + arg
                if stop > end:
                    raise ProtocolError("CBOR: truncated item")
                if mt == 2:
                    value = buf[pos:stop]
                else:
                    try:
                        value = buf[pos:stop].decode()
                    except UnicodeDecodeError:
                        raise ProtocolError("CBOR: text string is not valid UTF-8") from None
                pos = stop
            else:  # array or map
                if depth >= max_depth:
                    raise ProtocolError(f"CBOR: nesting deeper than {max_depth}")
                if arg:
                    # Every element needs at least one byte (a pair two): reject impossible
                    # counts now instead of discovering the truncation item by item.
                    if (arg << 1 if mt == _MT_MAP else arg) > end - pos:
                        raise ProtocolError("CBOR: truncated item")
                    stack.append((cont, left, key))
                    cont = [] if mt == _MT_ARRAY else {}
                    left = arg
                    depth += 1
                    continue
                value = [] if mt == _MT_ARRAY else {}

        # Store the finished item in its container; close every container it completes.
        while True:
            if cont is None:
                if pos != end:
                    raise ProtocolError("CBOR: trailing bytes after the item")
                return value
            if isinstance(cont, list):
                cont.append(value)
            else:
                cont[key] = value
            left -= 1
            if left:
                break
            value = cont
            cont, left, key = stack.pop()
            depth -= 1


# --- The fast decoder ---------------------------------------------------------------------------


def _slow() -> ProtocolError:
    """What the fast decoder raises for anything it does not return a value for: the input
    goes to :func:`decode_reference`, which decides (and words any error) itself."""
    return ProtocolError("CBOR: left to the strict decoder")


def _fast_item(buf: bytes, ib: int, pos: int, room: int, budget: int) -> tuple[Any, int, int]:
    """The item whose initial byte ``ib`` was just read (``pos`` is after it).

    ``room``: container levels still allowed below the current one; ``budget``: items still
    allowed after those already counted. Returns ``(value, position after it, budget left)``.
    """
    if ib >= 0xC0:  # tags, floats, simple values, break
        if ib == 0xF6:
            return None, pos, budget
        if ib == 0xF5:
            return True, pos, budget
        if ib == 0xF4:
            return False, pos, budget
        raise _slow()
    ai = ib & 0x1F
    if ai < 24:
        arg = ai
    elif ai == 24:
        arg = buf[pos]
        pos += 1
    elif ai < 28:
        stop = pos + _ARG_WIDTH[ai]
        arg = int.from_bytes(buf[pos:stop], "big")  # short if truncated: then stop > end
        pos = stop
    else:  # indefinite lengths, reserved additional information
        raise _slow()
    mt = ib >> 5
    if mt == 0:
        return arg, pos, budget
    if mt == 1:
        return -1 - arg, pos, budget
    if mt <= _MT_TEXT:
        # A slice past the end is merely short (never larger than the input) and the position
        # lands past the end, which the next read or the final check refuses.
        stop = pos + arg
        if mt == 2:
            return buf[pos:stop], stop, budget
        return buf[pos:stop].decode(), stop, budget
    if not room:
        raise _slow()
    # The budget is charged for all the elements (pairs) when the container opens: a
    # container declaring more than is left stops here, before anything inside it is read.
    budget -= arg
    if budget < 0:
        raise _slow()
    if mt == _MT_ARRAY:
        return _fast_array(buf, pos, arg, room - 1, budget)
    return _fast_map(buf, pos, arg, room - 1, budget)


def _fast_array(buf: bytes, pos: int, n: int, room: int, budget: int) -> tuple[Any, int, int]:
    """The ``n`` elements of an array starting at ``pos``: ``(list, position, budget)``."""
    out: list[Any] = []
    append = out.append
    for _ in range(n):  # every element takes a byte: a count beyond the input ends in IndexError
        ib = buf[pos]
        pos += 1
        if ib < 0x18:  # unsigned integer below 24
            append(ib)
        elif 0x60 <= ib <= 0x78:  # text shorter than 256 bytes
            if ib == 0x78:
                pos += 1
                stop = pos + buf[pos - 1]
            else:
                stop = pos + ib - 0x60
            append(buf[pos:stop].decode())
            pos = stop
        elif 0x40 <= ib <= 0x58:  # byte string shorter than 256 bytes
            if ib == 0x58:
                pos += 1
                stop = pos + buf[pos - 1]
            else:
                stop = pos + ib - 0x40
            append(buf[pos:stop])
            pos = stop
        elif ib == 0x18:
            append(buf[pos])
            pos += 1
        elif 0x80 <= ib < 0x98 or 0xA0 <= ib < 0xB8:  # array or map of fewer than 24
            if not room:
                raise _slow()
            count = ib & 0x1F
            budget -= count
            if budget < 0:
                raise _slow()
            if ib < 0xA0:
                value, pos, budget = _fast_array(buf, pos, count, room - 1, budget)
            else:
                value, pos, budget = _fast_map(buf, pos, count, room - 1, budget)
            append(value)
        else:
            value, pos, budget = _fast_item(buf, ib, pos, room, budget)
            append(value)
    return out, pos, budget


def _fast_map(buf: bytes, pos: int, n: int, room: int, budget: int) -> tuple[Any, int, int]:
    """The ``n`` pairs of a map starting at ``pos``: ``(dict, position, budget)``."""
    out: dict[str, Any] = {}
    for _ in range(n):
        ib = buf[pos]
        if 0x60 <= ib < 0x78:  # the key: a short text (longer ones are left to the reference)
            pos += 1
            stop = pos + ib - 0x60
        elif ib == 0x78:
            pos += 2
            stop = pos + buf[pos - 1]
        else:
            raise _slow()
        key = buf[pos:stop].decode()
        ib = buf[stop]  # past the end if the key was truncated: IndexError
        pos = stop + 1
        if ib < 0x18:
            out[key] = ib
        elif 0x60 <= ib <= 0x78:  # text shorter than 256 bytes
            if ib == 0x78:
                pos += 1
                stop = pos + buf[pos - 1]
            else:
                stop = pos + ib - 0x60
            out[key] = buf[pos:stop].decode()
            pos = stop
        elif 0x40 <= ib <= 0x58:  # byte string shorter than 256 bytes
            if ib == 0x58:
                pos += 1
                stop = pos + buf[pos - 1]
            else:
                stop = pos + ib - 0x40
            out[key] = buf[pos:stop]
            pos = stop
        elif ib == 0x18:
            out[key] = buf[pos]
            pos += 1
        elif ib == 0xF6:
            out[key] = None
        elif 0x80 <= ib < 0x98 or 0xA0 <= ib < 0xB8:  # array or map of fewer than 24
            if not room:
                raise _slow()
            count = ib & 0x1F
            budget -= count
            if budget < 0:
                raise _slow()
            if ib < 0xA0:
                out[key], pos, budget = _fast_array(buf, pos, count, room - 1, budget)
            else:
                out[key], pos, budget = _fast_map(buf, pos, count, room - 1, budget)
        else:
            out[key], pos, budget = _fast_item(buf, ib, pos, room, budget)
    if len(out) != n:  # a key came twice (the later value replaced the earlier one)
        raise _slow()
    return out, pos, budget


def decode(
    data: bytes | bytearray | memoryview,
    *,
    max_depth: int = MAX_DEPTH,
    max_items: int | None = None,
) -> Any:
    """Decode exactly one CBOR item of the protocol subset.

    Integers may use non-minimal argument widths (§3). Byte strings decode to ``bytes``,
    arrays to ``list``, maps to ``dict`` (text keys only). ``max_depth`` counts arrays and
    maps: a top-level container is depth 1, a container inside it depth 2, and so on;
    scalars do not add depth.

    ``max_items`` is the decode budget (§10): every data item counts one (a container, a
    scalar, an array element; a map pair counts one for its key and value together). The
    decoder stops as soon as the budget is spent, so hostile input costs at most
    ``max_items`` steps whatever its size.

    The result and the errors are those of :func:`decode_reference`; an optimistic fast path
    returns the value of well-formed input directly and hands everything else to it.

    Args:
        data: the encoded item (e.g. a frame body), with nothing after it.
        max_depth: maximum container nesting depth (>= 1).
        max_items: the most items the input may hold (None: bounded by its size only).

    Returns:
        The decoded value.

    Raises:
        ProtocolError: the input is not exactly one well-formed item of the subset (tag,
            float, undefined or other simple value, indefinite length, break, reserved
            additional information, invalid UTF-8, non-text or duplicate map key, truncated
            item, trailing bytes, nesting deeper than ``max_depth``, more than ``max_items``
            items).
        ValueError: ``max_depth`` or ``max_items`` < 1 (caller bug).
    """
    buf = data if type(data) is bytes else bytes(data)
    if 1 <= max_depth <= MAX_DEPTH and (max_items is None or max_items >= 1):
        end = len(buf)
        budget = (end if max_items is None else max_items) - 1  # the top-level item's
        try:
            ib = buf[0]
            pairs = ib - 0xA0
            if 0 <= pairs < 24 and pairs <= budget:  # a message: a map (_fast_item, inlined)
                value, pos, _ = _fast_map(buf, 1, pairs, max_depth - 1, budget - pairs)
            else:
                value, pos, _ = _fast_item(buf, ib, 1, max_depth, budget)
            if pos == end:
                return value
        except (ProtocolError, IndexError, UnicodeDecodeError, RecursionError):
            pass
    return decode_reference(buf, max_depth=max_depth, max_items=max_items)


def decode_byte_string(data: bytes | bytearray | memoryview) -> bytes:
    """Decode exactly one CBOR byte string (the sealed frame of §5).

    Accepts what ``decode(data, max_items=1)`` accepts when it returns ``bytes`` (any
    argument width, nothing after the string), reading only the head.

    Raises:
        ProtocolError: anything else (the reference decoder's error, or "not a byte string"
            for another well-formed item).
    """
    buf = data if type(data) is bytes else bytes(data)
    end = len(buf)
    if end:
        ib = buf[0]
        if 0x40 <= ib < 0x58:
            if ib - 0x3F == end:
                return buf[1:]
        elif 0x58 <= ib <= 0x5B:
            pos = 1 + _ARG_WIDTH[ib - 0x40]
            # A truncated head reads short and puts pos past the end: never equal below.
            if pos + int.from_bytes(buf[1:pos], "big") == end:
                return buf[pos:]
    value = decode_reference(buf, max_items=1)  # raises its precise error for malformed input
    if type(value) is bytes:
        return value
    raise ProtocolError("CBOR: not a byte string")
