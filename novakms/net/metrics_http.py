"""The metrics listener: ``GET /metrics`` over HTTP/1.x, one request per connection.

Trio glue around :mod:`novakms.wire.http_request`. It is a separate listener from the KMS
protocol's (``--metrics tcp://127.0.0.1:9464``, or a vsock address inside an enclave) and
answers only ``GET /metrics`` (200, the text format), any other path 404, any other method
405, a malformed or oversized head 400. At most :data:`MAX_CONNECTIONS` scrapes are served at
once (more are closed at once) and each must send its head within :data:`HEAD_TIMEOUT`
seconds; answers are bounded by the same deadline.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import trio

from novakms.errors import ProtocolError
from novakms.wire.http_request import MAX_HEAD, parse_head, response

__all__ = ["HEAD_TIMEOUT", "MAX_CONNECTIONS", "MAX_LINGER", "serve_metrics"]

HEAD_TIMEOUT = 5.0
MAX_CONNECTIONS = 8
MAX_LINGER = 65536


async def serve_metrics(
    listener: trio.abc.Listener[trio.abc.Stream],
    render: Callable[[], bytes],
    *,
    content_type: str,
) -> None:
    """Serve ``render()`` at ``/metrics`` on ``listener`` until cancelled."""
    slots = trio.Semaphore(MAX_CONNECTIONS)

    async def handle(stream: trio.abc.Stream) -> None:
        try:
            slots.acquire_nowait()
        except trio.WouldBlock:
            await stream.aclose()
            return
        try:
            with trio.move_on_after(HEAD_TIMEOUT):
                answer = await _answer(stream, render, content_type)
                if answer is not None:
                    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                        await stream.send_all(answer)
                        await _linger(stream)
        finally:
            slots.release()
            await trio.aclose_forcefully(stream)

    await trio.serve_listeners(handle, [listener])


async def _linger(stream: trio.abc.Stream) -> None:
    """End our side and read what the client still sends (at most :data:`MAX_LINGER` bytes).

    Closing a socket with unread input resets the connection, and the reset can destroy the
    answer before the client reads it (an oversized head answered with 400).
    """
    if isinstance(stream, trio.abc.HalfCloseableStream):
        await stream.send_eof()
    left = MAX_LINGER
    while left > 0 and (chunk := await stream.receive_some(left)):
        left -= len(chunk)


async def _answer(
    stream: trio.abc.Stream, render: Callable[[], bytes], content_type: str
) -> bytes | None:
    data = b""
    try:
        while True:
            request = parse_head(data)
            if request is not None:
                break
            chunk = await stream.receive_some(MAX_HEAD)
            if not chunk:
                return None
            data += chunk
    except ProtocolError as exc:
        return response(400, exc.message.encode("ascii", "replace") + b"\n")
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        return None
    if request.method != "GET":
        return response(405, b"only GET is served\n")
    if request.path != "/metrics":
        return response(404, b"metrics are at /metrics\n")
    return response(200, render(), content_type=content_type)
