"""Message shapes of PROTOCOL.md §4 and §6, validated on construction and on parse.

Parsing functions take an already-decoded CBOR item (from :mod:`novakms.wire.cbor`) and either
return a small immutable value or raise a :class:`~novakms.errors.NovaKMSError` subclass.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from novakms.errors import InvalidRequest, NovaKMSError, ProtocolError, error_from_wire

__all__ = [
    "MAX_ID",
    "Request",
    "Response",
    "close_notice",
    "error_response",
    "ok_response",
    "parse_close_notice",
    "parse_request",
    "parse_response",
    "request_message",
]

MAX_ID = 2**64 - 1


def _is_uint(value: object, limit: int = MAX_ID) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= limit


class Request(NamedTuple):
    """A validated request: ``{"id": uint, "op": text, "args": map}``.

    A named tuple: one is built per request, at a third of a frozen dataclass's cost.
    """

    id: int
    op: str
    args: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Response:
    """A received response: exactly one of ``ok`` (result map) or ``error`` is set."""

    id: int
    ok: Mapping[str, Any] | None = None
    error: NovaKMSError | None = None


_REQUEST_KEYS = frozenset({"id", "op", "args"})


def parse_request(item: object) -> Request:
    """Validate a decoded request item.

    Raises:
        InvalidRequest: not a request; ``request_id`` tells whether an error response can be
            addressed (PROTOCOL.md §6.2) or the connection must be closed.
    """
    if not isinstance(item, dict):
        raise InvalidRequest("a request must be a map", None)
    rid = item.get("id")
    request_id = rid if _is_uint(rid) else None
    if request_id is None:
        raise InvalidRequest("request id must be an unsigned integer", None)
    if not _REQUEST_KEYS.issuperset(item):
        extra = sorted(set(item) - _REQUEST_KEYS)
        raise InvalidRequest(f"unknown request keys: {extra}", request_id)
    op = item.get("op")
    if not isinstance(op, str) or not op:
        raise InvalidRequest("request op must be a non-empty text", request_id)
    args = item.get("args")
    if not isinstance(args, dict):
        raise InvalidRequest("request args must be a map", request_id)
    return Request(id=request_id, op=op, args=args)


def request_message(request_id: int, op: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """Build a request map (client side)."""
    if not _is_uint(request_id):
        raise ValueError("request id out of range")
    return {"id": request_id, "op": op, "args": dict(args)}


def ok_response(request_id: int, result: Mapping[str, Any]) -> dict[str, Any]:
    """Build a success response map."""
    return {"id": request_id, "ok": result if type(result) is dict else dict(result)}


def error_response(request_id: int, error: NovaKMSError) -> dict[str, Any]:
    """Build an error response map from an error (its wire code, message and details)."""
    return {"id": request_id, "err": error.to_wire()}


def close_notice(error: NovaKMSError) -> dict[str, Any]:
    """Build a close notice (PROTOCOL.md §6.3)."""
    return {"close": error.to_wire()}


def _parse_err(err: object) -> NovaKMSError:
    if not isinstance(err, dict) or not isinstance(err.get("code"), str):
        raise ProtocolError("malformed error map")
    if not isinstance(err.get("message", ""), str):
        raise ProtocolError("malformed error message")
    return error_from_wire(err)


def parse_close_notice(item: object) -> NovaKMSError | None:
    """Return the error carried by a close notice, or None when ``item`` is not one."""
    if isinstance(item, dict) and set(item) == {"close"}:
        return _parse_err(item["close"])
    return None


def parse_response(item: object) -> Response:
    """Validate a decoded response (client side).

    Raises:
        ProtocolError: not a response (a close notice is reported by the caller before this).
    """
    if not isinstance(item, dict) or not _is_uint(item.get("id")):
        raise ProtocolError("a response must be a map with an unsigned id")
    keys = set(item)
    if keys == {"id", "ok"}:
        if not isinstance(item["ok"], dict):
            raise ProtocolError("response ok must be a map")
        return Response(id=item["id"], ok=item["ok"])
    if keys == {"id", "err"}:
        return Response(id=item["id"], error=_parse_err(item["err"]))
    raise ProtocolError("a response has exactly one of ok / err")
