"""A hand-driven client handshake, for tests that send what the client library never would."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import trio

from novakms.crypto.signer import LocalSigner
from novakms.net.framed import FramedStream, SealedStream
from novakms.wire.handshake import ClientHandshake


async def handshake(
    stream: trio.abc.Stream,
    signer: LocalSigner | None = None,
    *,
    prefix: bytes = b"",
    clock: Callable[[], float] = time.time,
) -> SealedStream:
    """Run the client side of the handshake by hand over ``stream`` (``clock``: unix seconds)."""
    if prefix:
        await stream.send_all(prefix)
    framed = FramedStream(stream, max_frame=2_097_152)
    hs = ClientHandshake(role="app", eph_private=os.urandom(32))
    await framed.send_body(hs.hello())
    body = await framed.receive_body()
    assert body is not None
    sealed = SealedStream(framed, hs.receive_challenge(body))
    if signer is None:
        await sealed.send({})
    else:
        ts = int(clock())
        sig = signer.sign_text_sync(hs.auth_text(ts))
        await sealed.send(hs.auth_message(wallet=signer.wallet, ts=ts, sig=sig))
    hs.receive_ready(await sealed.receive())
    return sealed
