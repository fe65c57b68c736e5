"""Strict argument reading for the operations: every key must be declared, every value checked."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from novakms.errors import BadRequest

__all__ = ["Args", "now_ms"]


def now_ms(now: float) -> int:
    """Unix seconds to unix milliseconds (the store's clock)."""
    return int(now * 1000)


class Args:
    """Strict reader of an ``args`` map: every key must be read by a declared accessor.

    Args:
        args: the received map.
        allowed: the keys the operation accepts.

    Raises:
        BadRequest: an unknown key.
    """

    def __init__(self, args: Mapping[str, Any], allowed: set[str] | frozenset[str]) -> None:
        if not allowed.issuperset(args):
            raise BadRequest(f"unknown arguments: {sorted(set(args) - allowed)}")
        self._args = args

    def text(
        self, name: str, *, max_bytes: int, min_bytes: int = 0, required: bool = False
    ) -> str | None:
        """A text argument whose UTF-8 size is within bounds (None when absent and optional).

        Raises:
            BadRequest: missing when required, not text, or out of bounds.
        """
        value = self._args.get(name)
        if value is None:
            if required or name in self._args:
                raise BadRequest(f"{name} is required and must be text")
            return None
        if not isinstance(value, str):
            raise BadRequest(f"{name} must be text")
        size = len(value.encode("utf-8"))
        if not min_bytes <= size <= max_bytes:
            raise BadRequest(f"{name} must be {min_bytes}..{max_bytes} bytes of UTF-8, got {size}")
        return value

    def uint(self, name: str, *, default: int, minimum: int, maximum: int) -> int:
        """An unsigned integer argument within bounds, or ``default`` when absent.

        Raises:
            BadRequest: not an integer in bounds.
        """
        value = self.optional_uint(name, minimum=minimum, maximum=maximum)
        return default if value is None else value

    def optional_uint(self, name: str, *, minimum: int, maximum: int) -> int | None:
        """An unsigned integer argument within bounds, or None when absent.

        Raises:
            BadRequest: not an integer in bounds.
        """
        if name not in self._args:
            return None
        value = self._args[name]
        if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= maximum:
            raise BadRequest(f"{name} must be an integer in {minimum}..{maximum}")
        return value

    def blob(self, name: str, *, required: bool = False) -> bytes | None:
        """A byte-string argument (sizes are checked by the operation).

        Raises:
            BadRequest: missing when required, or not bytes.
        """
        value = self._args.get(name)
        if value is None and not required and name not in self._args:
            return None
        if not isinstance(value, bytes):
            raise BadRequest(f"{name} must be bytes")
        return value

    def key(self) -> str:
        """The ``key`` argument of the KV operations (size rules are the store's).

        Raises:
            BadRequest: missing or not text.
        """
        value = self._args.get("key")
        if not isinstance(value, str):
            raise BadRequest("key is required and must be text")
        return value
