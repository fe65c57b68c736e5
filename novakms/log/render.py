"""A log event as one line of text: logfmt (the default) or JSON, every value escaped.

Pure. A log line may carry values a client chose (an op name, a source address it sent in a
PROXY header, an error message quoting its input): whatever they hold, the line stays one
record. In logfmt a value is written bare only when it is made of a small safe alphabet;
anything else is quoted, with ``\\``, ``"`` and every character outside printable ASCII escaped
(``\\n``, ``\\r``, ``\\t``, ``\\uXXXX``), so no value can end the line, open a new ``key=``,
or move a terminal's cursor. Keys come from the code; a key outside the alphabet is still
rewritten, never trusted. JSON lines are written with every non-ASCII character escaped.

The first fields are always ``ts level logger event``, in that order; the rest follow in the
order they were bound.
"""

from __future__ import annotations

import json
import math
import string
from collections.abc import Mapping
from typing import Any

__all__ = ["FIRST", "logfmt_key", "logfmt_value", "render_json", "render_logfmt"]

#: The fields every line starts with.
FIRST = ("ts", "level", "logger", "event")

_BARE = frozenset(string.ascii_letters + string.digits + "-_.:/@+,*#%[]()<>~^!?$&;'|{}")
_KEY = frozenset(string.ascii_letters + string.digits + "-_.")
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _text(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"  # never the bytes: they could be key material
    return str(value)


def _escape(char: str) -> str:
    if char in _ESCAPES:
        return _ESCAPES[char]
    if " " <= char <= "~":
        return char
    code = ord(char)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def logfmt_value(value: Any) -> str:
    """``value`` as a logfmt value: bare when safe, else quoted and escaped."""
    text = _text(value)
    if text and all(char in _BARE for char in text):
        return text
    return '"' + "".join(_escape(char) for char in text) + '"'


def logfmt_key(key: str) -> str:
    """``key`` with every character outside ``[A-Za-z0-9_.-]`` replaced by ``_``."""
    return "".join(char if char in _KEY else "_" for char in str(key)) or "_"


def _ordered(event: Mapping[str, Any]) -> list[tuple[str, Any]]:
    head = [(key, event[key]) for key in FIRST if key in event]
    return head + [(str(key), value) for key, value in event.items() if key not in FIRST]


def render_logfmt(event: Mapping[str, Any]) -> str:
    """One logfmt line (without the newline)."""
    return " ".join(f"{logfmt_key(key)}={logfmt_value(value)}" for key, value in _ordered(event))


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN or infinity
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return _text(value)


def render_json(event: Mapping[str, Any]) -> str:
    """One JSON object on one line (ASCII only)."""
    return json.dumps(
        {key: _jsonable(value) for key, value in _ordered(event)},
        ensure_ascii=True,
        separators=(",", ":"),
    )
