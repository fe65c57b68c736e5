"""Clients for apps: :mod:`novakms.client.aio` (trio), :mod:`novakms.client.blocking` (plain
sockets, no event loop) and the typed results both return (:mod:`novakms.client.results`).
The package carries ``py.typed``: ``mypy --strict`` in an app sees every signature.

Importing this package loads neither trio nor a socket: ``Client`` and ``BlockingClient`` are
imported on first use, so ``from novakms.client import BlockingClient`` stays trio-free.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from novakms.client.results import (
    DEFAULT_TIMEOUT,
    CertIssued,
    DeleteResult,
    DeriveResult,
    GuardianShare,
    Health,
    KVItem,
    KVPage,
    NodeEntry,
    Nodes,
    PutResult,
    RestoreResult,
    Status,
)

if TYPE_CHECKING:
    from novakms.client.aio import Client
    from novakms.client.blocking import BlockingClient

__all__ = [
    "DEFAULT_TIMEOUT",
    "BlockingClient",
    "CertIssued",
    "Client",
    "DeleteResult",
    "DeriveResult",
    "GuardianShare",
    "Health",
    "KVItem",
    "KVPage",
    "NodeEntry",
    "Nodes",
    "PutResult",
    "RestoreResult",
    "Status",
]


def __getattr__(name: str) -> Any:
    """``Client`` and ``BlockingClient``, imported when first asked for."""
    if name == "Client":
        from novakms.client.aio import Client

        return Client
    if name == "BlockingClient":
        from novakms.client.blocking import BlockingClient

        return BlockingClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
