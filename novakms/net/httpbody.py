"""An httpx request body for trio that leaves nothing behind when a connection breaks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Self

import httpx

__all__ = ["OneShotBody"]


class OneShotBody(httpx.AsyncByteStream):
    """A request body that is not an async generator (set as ``request.stream``).

    httpx wraps ``content=bytes`` (or any async iterable) in an async generator; when the
    connection breaks while the body is being sent, httpcore leaves that generator suspended,
    and trio warns (``ResourceWarning``) when it is garbage collected. A plain iterator has
    nothing to leak.
    """

    def __init__(self, content: bytes) -> None:
        self._content = content

    def __aiter__(self) -> AsyncIterator[bytes]:
        return _Once(self._content)


class _Once:
    """Async iterator yielding one bytes chunk."""

    def __init__(self, content: bytes) -> None:
        self._content: bytes | None = content

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> bytes:
        content, self._content = self._content, None
        if content is None:
            raise StopAsyncIteration
        return content
