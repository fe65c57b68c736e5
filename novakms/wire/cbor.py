"""The strict CBOR subset of the novakms wire protocol (``protocol/PROTOCOL.md`` §3).

Two pure functions:

* :func:`encode` writes deterministic CBOR (RFC 8949 §4.2.1: shortest arguments, map keys
  sorted by their encoded bytes) for the subset types. Invalid input is a bug on our side, so
  it raises :class:`TypeError` / :class:`ValueError`, never :class:`ProtocolError`.
* :func:`decode` is a hand-written strict decoder for bytes that came from a peer. Anything
  outside the subset raises :class:`~novakms.errors.ProtocolError` and nothing else: no
  ``IndexError``, ``UnicodeDecodeError`` or ``RecursionError`` can escape it. It is iterative
  (an explicit stack bounded by ``max_depth``) and never allocates more than the input size,
  whatever lengths the input declares.

cbor2 is deliberately not used for decoding: it silently keeps the last of duplicate map keys
and accepts tags, floats and indefinite lengths, all of which the protocol must reject.
"""

from __future__ import annotations

import struct
from operator import itemgetter
from typing import Any, Final

from novakms.errors import ProtocolError

__all__ = ["MAX_DEPTH", "decode", "encode", "head_size"]

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


def encode(obj: object) -> bytes:
    """Encode a value as deterministic CBOR of the protocol subset.

    Supported: ``int`` (-2**64 .. 2**64-1), ``bytes``/``bytearray``/``memoryview`` (byte
    string), ``str`` (text string), ``list``/``tuple`` (array), ``dict`` with ``str`` keys
    (map, keys sorted), ``bool`` and ``None``.

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
    out: list[bytes] = []
    _encode_into(obj, out, 0)
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
