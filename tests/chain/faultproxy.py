"""A trio HTTP/1.1 proxy in front of a JSON-RPC node, with switchable faults (tests only).

Listens on ``127.0.0.1:0``. The mode is read for every *request* (not per connection), so a
keep-alive connection opened while passing through fails as soon as the mode changes:

* ``PASS`` — forward to the upstream node (one fresh upstream connection per request), except
  for methods given to :meth:`FaultProxy.override`, which get a canned answer;
* ``REFUSE`` — close the connection without answering (new connections: at once);
* ``BLACKHOLE`` — read the request and never answer;
* ``GARBAGE`` — ``HTTP 200`` with a body that is not JSON;
* ``HTTP_ERROR`` — ``HTTP 500`` (with a JSON-RPC-looking body, which must be ignored);
* ``TRUNCATE`` — ``HTTP 200`` announcing more body than is sent, then close;
* ``CANNED`` — ``HTTP 200`` (or the given status) with a body computed from the request.
"""

from __future__ import annotations

import enum
import functools
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import trio

__all__ = ["FaultProxy", "Mode", "fault_proxy"]

_MAX_HEAD = 64 * 1024

Answer = Callable[[Any], Any]
"""Makes a response body from the decoded request: bytes are sent as is, anything else as JSON."""


class Mode(enum.Enum):
    PASS = "pass"
    REFUSE = "refuse"
    BLACKHOLE = "blackhole"
    GARBAGE = "garbage"
    HTTP_ERROR = "http_error"
    TRUNCATE = "truncate"
    CANNED = "canned"


class _Closed(Exception):
    """The peer closed the connection."""


async def _read_message(stream: trio.abc.Stream, buffer: bytearray) -> tuple[bytes, bytes]:
    """Read one HTTP/1.1 message (head and Content-Length body) from ``stream``."""
    while b"\r\n\r\n" not in buffer:
        if len(buffer) > _MAX_HEAD:
            raise _Closed
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise _Closed
        buffer += chunk
    end = buffer.index(b"\r\n\r\n") + 4
    head = bytes(buffer[:end])
    del buffer[:end]
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
        if name.strip().lower() == b"transfer-encoding":
            raise ValueError("chunked messages are not supported by this test proxy")
    while len(buffer) < length:
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise _Closed
        buffer += chunk
    body = bytes(buffer[:length])
    del buffer[:length]
    return head, body


def _response(status: int, body: bytes, content_type: str = "application/json") -> bytes:
    reason = {200: "OK", 500: "Internal Server Error"}.get(status, "Status")
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _chunked_response(body: bytes, chunk: int = 256) -> bytes:
    """``HTTP 200`` with a chunked body (no Content-Length)."""
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    parts = [head]
    for start in range(0, len(body), chunk):
        piece = body[start : start + chunk]
        parts.append(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
    parts.append(b"0\r\n\r\n")
    return b"".join(parts)


def _encode(value: Any) -> bytes:
    return value if isinstance(value, bytes) else json.dumps(value).encode()


class FaultProxy:
    """The proxy's control surface (see the module docstring).

    Attributes:
        mode: the current :class:`Mode`.
        requests: requests received so far (any mode).
        forwarded: requests passed to the upstream node.
        connections: connections accepted so far.
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.mode = Mode.PASS
        self.requests = 0
        self.forwarded = 0
        self.connections = 0
        self.port = 0
        self._upstream = (upstream_host, upstream_port)
        self._canned: Answer = lambda _request: b""
        self._canned_status = 200
        self._canned_chunked = False
        self._overrides: dict[str, Answer] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def canned(
        self, answer: Answer | bytes | dict[str, Any], *, status: int = 200, chunked: bool = False
    ) -> None:
        """Switch to ``CANNED``: answer every request with ``answer(request)`` (or the value),
        with Content-Length or, if ``chunked``, in 256-byte chunks (status 200 only)."""
        self._canned = answer if callable(answer) else (lambda _request: answer)
        self._canned_status = status
        self._canned_chunked = chunked
        self.mode = Mode.CANNED

    def override(self, method: str, answer: Answer | None) -> None:
        """In ``PASS`` mode, answer ``method`` with ``answer(request)``; None removes it."""
        if answer is None:
            self._overrides.pop(method, None)
        else:
            self._overrides[method] = answer

    async def _forward(self, head: bytes, body: bytes) -> bytes:
        upstream = await trio.open_tcp_stream(*self._upstream)
        async with upstream:
            await upstream.send_all(head + body)
            buffer = bytearray()
            try:
                response_head, response_body = await _read_message(upstream, buffer)
            except _Closed:
                return b""
        self.forwarded += 1
        return response_head + response_body

    async def _handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        async with stream:
            if self.mode is Mode.REFUSE:
                return
            buffer = bytearray()
            while True:
                try:
                    head, body = await _read_message(stream, buffer)
                except (_Closed, trio.BrokenResourceError):
                    return
                self.requests += 1
                mode = Mode(self.mode)  # re-read: the mode may have changed
                try:
                    request = json.loads(body)
                except ValueError:
                    request = None
                if mode is Mode.REFUSE:
                    return
                if mode is Mode.BLACKHOLE:
                    await trio.sleep_forever()
                if mode is Mode.GARBAGE:
                    answer = _response(200, b"<html>this is not JSON</html>", "text/html")
                elif mode is Mode.HTTP_ERROR:
                    fake = {"jsonrpc": "2.0", "id": 1, "result": "0x1"}
                    answer = _response(500, _encode(fake))
                elif mode is Mode.TRUNCATE:
                    full = _response(200, b'{"jsonrpc":"2.0","id":1,"result":"0x1"}')
                    await stream.send_all(full[:-10])
                    return
                elif mode is Mode.CANNED:
                    made = _encode(self._canned(request))
                    if self._canned_chunked:
                        answer = _chunked_response(made)
                    else:
                        answer = _response(self._canned_status, made)
                elif isinstance(request, dict) and request.get("method") in self._overrides:
                    made = self._overrides[str(request["method"])](request)
                    answer = _response(200, _encode(made))
                else:
                    answer = await self._forward(head, body)
                    if not answer:
                        return
                try:
                    await stream.send_all(answer)
                except trio.BrokenResourceError:
                    return


@asynccontextmanager
async def fault_proxy(upstream_url: str) -> AsyncIterator[FaultProxy]:
    """Run a :class:`FaultProxy` in front of ``upstream_url`` for the ``async with`` body."""
    url = httpx.URL(upstream_url)
    proxy = FaultProxy(url.host, url.port or 80)
    async with trio.open_nursery() as nursery:
        serve = functools.partial(trio.serve_tcp, proxy._handle, 0, host="127.0.0.1")
        listeners = await nursery.start(serve)
        proxy.port = listeners[0].socket.getsockname()[1]
        try:
            yield proxy
        finally:
            nursery.cancel_scope.cancel()
