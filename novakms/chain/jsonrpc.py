"""The JSON-RPC 2.0 envelope and the strict parsers of Ethereum JSON-RPC values (pure).

What the trio client (:mod:`novakms.chain.rpc`) and the blocking one
(:mod:`novakms.chain.blocking_rpc`) share: the checks of a response object against its request,
and the parsers of quantities, data, addresses and block ids. No I/O, no clock: a response is
either a validated value or a :class:`~novakms.errors.ChainError`.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from novakms.crypto.eth import normalize_wallet
from novakms.errors import ChainUnavailable, RpcError

__all__ = [
    "BLOCK_TAGS",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DEFAULT_TIMEOUT",
    "HEADERS",
    "BlockId",
    "block_param",
    "check_response",
    "check_timeout",
    "decode_json",
    "hash_text",
    "normalize_address",
    "parse_data",
    "parse_quantity",
    "short",
]

DEFAULT_TIMEOUT = 5.0
"""Seconds allowed for one JSON-RPC call, end to end."""

DEFAULT_MAX_RESPONSE_BYTES = 16 * 1024 * 1024
"""Largest response body accepted (decoded), in bytes."""

BLOCK_TAGS = frozenset({"earliest", "latest", "safe", "finalized", "pending"})
"""The named block tags of the JSON-RPC API."""

BlockId = str | int
"""A block: one of :data:`BLOCK_TAGS`, a block number, or a ``0x`` hex quantity."""

_QUANTITY_RE = re.compile(r"0x[0-9a-fA-F]{1,64}")
_DATA_RE = re.compile(r"0x(?:[0-9a-fA-F]{2})*")
HEADERS = {"accept": "application/json", "content-type": "application/json"}


def short(value: Any) -> str:
    """A bounded repr of a received value, for error messages."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def parse_quantity(value: Any, *, what: str) -> int:
    """Decode a JSON-RPC quantity (``0x`` + 1..64 hex digits).

    Args:
        value: the received JSON value.
        what: what it is, for the error message.

    Returns:
        The integer.

    Raises:
        ChainUnavailable: not a hex quantity.
    """
    if not isinstance(value, str) or _QUANTITY_RE.fullmatch(value) is None:
        raise ChainUnavailable(f"{what}: expected a hex quantity, got {short(value)}")
    return int(value, 16)


def parse_data(value: Any, *, what: str, size: int | None = None) -> bytes:
    """Decode JSON-RPC data (``0x`` + an even number of hex digits).

    Args:
        value: the received JSON value.
        what: what it is, for the error message.
        size: the exact byte length required, if any.

    Returns:
        The bytes.

    Raises:
        ChainUnavailable: not hex data, or not ``size`` bytes long.
    """
    if not isinstance(value, str) or _DATA_RE.fullmatch(value) is None:
        raise ChainUnavailable(f"{what}: expected hex data, got {short(value)}")
    raw = bytes.fromhex(value[2:])
    if size is not None and len(raw) != size:
        raise ChainUnavailable(f"{what}: expected {size} bytes, got {len(raw)}")
    return raw


def hash_text(value: Any, *, what: str) -> str:
    """Validate a 32-byte hash and return it as lowercase ``0x`` hex."""
    return "0x" + parse_data(value, what=what, size=32).hex()


def normalize_address(address: str) -> str:
    """Validate an address given by the caller.

    Args:
        address: ``0x`` + 40 hex digits (any case; the EIP-55 checksum is not enforced).

    Returns:
        Lowercase ``0x`` + 40 hex digits.

    Raises:
        ValueError: not an address.
    """
    try:
        return normalize_wallet(address)  # the one normalizer; only the message says "address"
    except ValueError:
        raise ValueError("address must be '0x' followed by 40 hex digits") from None


def block_param(block: BlockId) -> str:
    """The JSON-RPC form of a block id given by the caller.

    Args:
        block: a tag from :data:`BLOCK_TAGS`, a block number >= 0, or a hex quantity.

    Returns:
        The tag, or the number as a hex quantity.

    Raises:
        ValueError: anything else (including booleans).
    """
    if isinstance(block, int) and not isinstance(block, bool):
        if block < 0:
            raise ValueError("block number must be >= 0")
        return hex(block)
    if isinstance(block, str):
        if block in BLOCK_TAGS:
            return block
        if _QUANTITY_RE.fullmatch(block):
            return hex(int(block, 16))
    raise ValueError(f"block must be one of {sorted(BLOCK_TAGS)} or a block number")


def _reject_constant(name: str) -> Any:
    """``json.loads`` hook: NaN and Infinity are not JSON."""
    raise ValueError(f"invalid JSON constant {name}")


def check_timeout(timeout: float) -> float:
    """Validate a positive finite number of seconds."""
    value = float(timeout)
    if not (math.isfinite(value) and value > 0):
        raise ValueError("timeout must be a positive finite number of seconds")
    return value


def check_response(answer: Any, *, request_id: int, method: str) -> Any:
    """Check one JSON-RPC response object and return its result.

    Args:
        answer: the decoded response.
        request_id: the id that was sent.
        method: the method, for messages.

    Returns:
        The ``result`` value.

    Raises:
        ChainUnavailable: not a JSON-RPC 2.0 response to this request.
        RpcError: a well-formed error object.
    """
    if not isinstance(answer, dict):
        raise ChainUnavailable(f"{method}: the answer is not a JSON-RPC response object")
    if answer.get("jsonrpc") != "2.0":
        raise ChainUnavailable(f"{method}: the answer is not JSON-RPC 2.0")
    answer_id = answer.get("id")
    if isinstance(answer_id, bool) or answer_id != request_id:
        raise ChainUnavailable(f"{method}: the answer has the wrong id {short(answer_id)}")
    has_result = "result" in answer
    has_error = "error" in answer
    if has_result == has_error:
        raise ChainUnavailable(f"{method}: the answer needs exactly one of result and error")
    if has_result:
        return answer["result"]
    error = answer["error"]
    if not isinstance(error, dict):
        raise ChainUnavailable(f"{method}: malformed error object")
    code = error.get("code")
    message = error.get("message")
    if not isinstance(code, int) or isinstance(code, bool) or not isinstance(message, str):
        raise ChainUnavailable(f"{method}: malformed error object")
    raise RpcError(message[:1000], rpc_code=code, data=error.get("data"), method=method)


def decode_json(body: bytes, *, what: str) -> Any:
    """Decode a response body (NaN and Infinity refused: they are not JSON).

    Raises:
        ChainUnavailable: the body is not JSON.
    """
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise ChainUnavailable(f"{what}: the answer is not JSON") from None
