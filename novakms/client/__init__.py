"""Clients for apps: :mod:`novakms.client.aio` (trio), :mod:`novakms.client.blocking` (plain
sockets, no event loop) and the results both return (:mod:`novakms.client.results`).

Importing this package loads neither trio nor a socket: ``Client`` and ``BlockingClient`` are
imported on first use, so ``from novakms.client import BlockingClient`` stays trio-free.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from novakms.client.results import DEFAULT_TIMEOUT, DeriveResult, KVItem

if TYPE_CHECKING:
    from novakms.client.aio import Client
    from novakms.client.blocking import BlockingClient

__all__ = ["DEFAULT_TIMEOUT", "BlockingClient", "Client", "DeriveResult", "KVItem"]


def __getattr__(name: str) -> Any:
    """``Client`` and ``BlockingClient``, imported when first asked for."""
    if name == "Client":
        from novakms.client.aio import Client

        return Client
    if name == "BlockingClient":
        from novakms.client.blocking import BlockingClient

        return BlockingClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
