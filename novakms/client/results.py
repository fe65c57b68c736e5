"""What the trio client (:mod:`novakms.client.aio`) and the blocking client
(:mod:`novakms.client.blocking`) share: the typed results and their parsing, the argument maps,
the default timeout.

No trio, no sockets: a program that only needs the blocking client (or only these types) never
loads an event loop. The errors either client raises are those of :mod:`novakms.errors`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from novakms.errors import ProtocolError

__all__ = [
    "DEFAULT_TIMEOUT",
    "DeriveResult",
    "KVItem",
    "optional_args",
    "parse_derive_result",
    "parse_kv_item",
]

DEFAULT_TIMEOUT = 10.0  # seconds for connecting + handshake, and the default per-call timeout


@dataclass(frozen=True, slots=True)
class DeriveResult:
    """Result of ``derive``."""

    app_id: int
    path: str
    key: bytes
    length: int

    def __repr__(self) -> str:  # never show key material
        return f"DeriveResult(app_id={self.app_id}, path={self.path!r}, length={self.length})"


@dataclass(frozen=True, slots=True)
class KVItem:
    """Result of ``kv.get``."""

    key: str
    value: bytes
    version: str
    updated_at_ms: int
    expires_at_ms: int | None

    def __repr__(self) -> str:  # values are secrets: never show them
        return f"KVItem(key={self.key!r}, version={self.version!r}, size={len(self.value)})"


def optional_args(**items: Any) -> dict[str, Any]:
    """An args map without the None entries (shared by the trio and blocking clients)."""
    return {k: v for k, v in items.items() if v is not None}


def parse_derive_result(result: Mapping[str, Any]) -> DeriveResult:
    """Check and wrap a ``derive`` result.

    Args:
        result: the ``ok`` map of the server's response.

    Returns:
        The typed result.

    Raises:
        ProtocolError: the answer carries no key bytes.
    """
    key = result.get("key")
    if not isinstance(key, bytes):
        raise ProtocolError("derive answered without key bytes")
    return DeriveResult(
        app_id=int(result["app_id"]),
        path=str(result["path"]),
        key=key,
        length=int(result["length"]),
    )


def parse_kv_item(result: Mapping[str, Any]) -> KVItem:
    """Check and wrap a ``kv.get`` result.

    Args:
        result: the ``ok`` map of the server's response.

    Returns:
        The typed item.

    Raises:
        ProtocolError: the answer carries no value bytes.
    """
    value = result.get("value")
    if not isinstance(value, bytes):
        raise ProtocolError("kv.get answered without value bytes")
    expires = result.get("expires_at_ms")
    return KVItem(
        key=str(result["key"]),
        value=value,
        version=str(result["version"]),
        updated_at_ms=int(result["updated_at_ms"]),
        expires_at_ms=None if expires is None else int(expires),
    )
