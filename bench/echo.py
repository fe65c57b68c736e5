"""Baseline server for the benchmarks: bare trio + length-prefixed CBOR, nothing else.

Each frame is ``u32be(L) || body`` (the novakms framing, PROTOCOL.md §2) with a cbor2 body.
For a request map ``{"id": n, "op": "kv.get", "args": {"key": k}}`` the server answers
``{"id": n, "ok": {"key": k, "value": <64 zero bytes>, "version": <24 letters>,
"updated_at_ms": <a fixed time>, "expires_at_ms": None}}``, the shape and size of a real
``kv.get`` answer for a 64-byte value; for any other op, ``{"id": n, "op": ..., "args":
{"path": p}}``, it answers ``{"id": n, "ok": {"app_id": 1, "path": p, "key": <32 zero bytes>,
"length": 32}}``, the shape and size of a real ``derive`` answer. All without any handshake,
encryption, authorization, key derivation, store or strict decoding. Requests of one
connection are answered in order, inline in the connection's task.

Run by ``bench/bench_derive.py`` in its own process::

    python bench/echo.py --listen 127.0.0.1:7499

SIGINT / SIGTERM stop it.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from functools import partial
from typing import Any

import cbor2
import trio

__all__ = ["FAKE_KEY", "FAKE_VALUE", "main", "respond", "serve"]

HEADER_SIZE = 4
MAX_FRAME = 2_097_152
RECEIVE_CHUNK = 65536
FAKE_KEY = bytes(32)
FAKE_VALUE = bytes(64)  # the size of the value bench_derive.py puts and gets
FAKE_VERSION = "a" * 24  # a version token is 24 lowercase base32 characters
FAKE_UPDATED_AT_MS = 1_764_000_000_000


def respond(request: Any) -> bytes:
    """The encoded response body for one decoded request."""
    if not isinstance(request, dict) or not isinstance(request.get("id"), int):
        raise ValueError("not a request map")
    args = request.get("args")
    if not isinstance(args, dict):
        args = {}
    result: dict[str, Any]
    if request.get("op") == "kv.get":
        result = {
            "key": args.get("key", ""),
            "value": FAKE_VALUE,
            "version": FAKE_VERSION,
            "updated_at_ms": FAKE_UPDATED_AT_MS,
            "expires_at_ms": None,
        }
    else:
        path = args.get("path", "")
        result = {"app_id": 1, "path": path, "key": FAKE_KEY, "length": len(FAKE_KEY)}
    body: bytes = cbor2.dumps({"id": request["id"], "ok": result})
    return body


async def handle_connection(stream: trio.SocketStream) -> None:
    """Answer every complete frame as it arrives; close on end of stream or bad input."""
    buf = bytearray()
    async with stream:
        while True:
            try:
                data = await stream.receive_some(RECEIVE_CHUNK)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not data:
                return
            buf += data
            while len(buf) >= HEADER_SIZE:
                length = int.from_bytes(buf[:HEADER_SIZE], "big")
                if not 1 <= length <= MAX_FRAME:
                    return
                stop = HEADER_SIZE + length
                if len(buf) < stop:
                    break
                try:
                    body = respond(cbor2.loads(bytes(buf[HEADER_SIZE:stop])))
                except (ValueError, cbor2.CBORDecodeError):
                    return
                del buf[:stop]
                # One send per response, as the KMS server does (no write coalescing).
                try:
                    await stream.send_all(len(body).to_bytes(HEADER_SIZE, "big") + body)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return


async def serve(host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(trio.serve_tcp, handle_connection, port, host=host))
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: ``--listen HOST:PORT``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--listen", default="127.0.0.1:7499", help="HOST:PORT (default %(default)s)"
    )
    args = parser.parse_args(argv)
    host, _, port = str(args.listen).rpartition(":")
    trio.run(serve, host or "127.0.0.1", int(port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
