"""Operations: ``op -> handler(node, session, args, now)``. Handlers never see a stream.

Each handler validates its own arguments strictly (unknown keys are errors), authorizes the
caller *per request* through the node's authorization source, and returns the result map or
raises a :class:`~novakms.errors.RequestError`.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from novakms.auth.model import Identity
from novakms.crypto.kdf import derive_app_key
from novakms.errors import BadRequest, Forbidden, RateLimited, Unauthenticated, UnknownOp
from novakms.node import Node
from novakms.wire.handshake import Role

__all__ = ["OPS", "Args", "Session", "handle"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Session:
    """Who is on the other end of a connection, as proven by the handshake."""

    role: Role
    wallet: str | None
    source: str


class Args:
    """Strict reader of an ``args`` map: every key must be read by a declared accessor.

    Args:
        args: the received map.
        allowed: the keys the operation accepts.

    Raises:
        BadRequest: an unknown key.
    """

    def __init__(self, args: Mapping[str, Any], allowed: set[str]) -> None:
        unknown = set(args) - allowed
        if unknown:
            raise BadRequest(f"unknown arguments: {sorted(unknown)}")
        self._args = args

    def text(
        self, name: str, *, max_bytes: int, min_bytes: int = 0, required: bool = False
    ) -> str | None:
        """A text argument whose UTF-8 size is within bounds (None when absent and optional)."""
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
        """An unsigned integer argument within bounds, or ``default`` when absent."""
        if name not in self._args:
            return default
        value = self._args[name]
        if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= maximum:
            raise BadRequest(f"{name} must be an integer in {minimum}..{maximum}")
        return value


Handler = Callable[[Node, Session, Mapping[str, Any], float], Awaitable[dict[str, Any]]]
Auth = Literal["none", "app"]


async def authorize_app(node: Node, session: Session) -> Identity:
    """The caller's app identity, checked against the authorization source now.

    Raises:
        Unauthenticated: anonymous connection.
        Forbidden: a peer connection, or the wallet is not an authorized app instance.
        Unavailable: the authorization source cannot decide.
    """
    if session.wallet is None:
        raise Unauthenticated("this operation needs an authenticated app wallet")
    if session.role != "app":
        raise Forbidden("this operation is for apps, not peers", reason="wrong_role")
    return await node.auth.authorize_app(session.wallet)


async def op_health(
    node: Node, session: Session, args: Mapping[str, Any], now: float
) -> dict[str, Any]:
    Args(args, set())
    return {"status": "ok"}


async def op_status(
    node: Node, session: Session, args: Mapping[str, Any], now: float
) -> dict[str, Any]:
    Args(args, set())
    ready = node.master_secret is not None
    return {
        "node": {"wallet": node.wallet, "version": node.version, "mode": node.mode.value},
        "ready": ready,
        "reason": None if ready else "not_ready",
        "secret": {"initialized": ready, "fingerprint": node.fingerprint()},
        "auth": {"source": node.auth.name, **node.auth.describe()},
        "connections": node.connections,
    }


async def op_derive(
    node: Node, session: Session, args: Mapping[str, Any], now: float
) -> dict[str, Any]:
    identity = await authorize_app(node, session)
    a = Args(args, {"path", "context", "length"})
    limits = node.limits
    path = a.text("path", required=True, min_bytes=1, max_bytes=limits.max_path_bytes)
    assert path is not None  # required=True
    context = a.text("context", max_bytes=limits.max_context_bytes)
    length = a.uint("length", default=32, minimum=1, maximum=limits.max_derive_length)
    key = derive_app_key(
        master_secret=node.require_secret(),
        app_id=identity.app_id,
        path=path,
        context=context,
        length=length,
    )
    return {"app_id": identity.app_id, "path": path, "key": key, "length": length}


OPS: dict[str, tuple[Auth, Handler]] = {
    "health": ("none", op_health),
    "status": ("none", op_status),
    "derive": ("app", op_derive),
}


async def handle(
    node: Node, session: Session, op: str, args: Mapping[str, Any], now: float
) -> dict[str, Any]:
    """Run one operation.

    Raises:
        UnknownOp: no such operation.
        RateLimited: the caller's token bucket is empty (``retry_after_ms`` says when to retry).
        RequestError: whatever the operation raises.
    """
    entry = OPS.get(op)
    if entry is None:
        raise UnknownOp(f"unknown operation {op!r}")
    key = session.wallet if session.wallet is not None else f"anonymous:{session.source}"
    wait = node.wallet_limiter.take(key, now)
    if wait > 0:
        raise RateLimited("too many requests", retry_after_ms=max(1, math.ceil(wait * 1000)))
    _, handler = entry
    return await handler(node, session, args, now)
