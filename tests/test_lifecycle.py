"""A connection's lifetime on a memory server under a MockClock: handshake deadline, idle
timeouts, the drain on graceful shutdown. No port is bound and no test waits on the wall clock:
trio's clock jumps to each deadline as soon as nothing else can run.

These replace the real-socket versions in test_server.py
(``test_handshake_timeout_closes_silent_connections``, ``test_idle_timeout_sends_a_notice``,
``test_graceful_shutdown_finishes_inflight_requests``) and test_abuse.py
(``test_anonymous_sessions_have_a_short_idle_timeout``).
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import pytest
import trio
import trio.testing
from trio.testing import MockClock

from novakms.config import Limits
from novakms.crypto.kdf import derive_app_key
from novakms.crypto.signer import LocalSigner
from novakms.errors import NovaKMSError, TransportError, Unavailable
from novakms.net.framed import END_OF_STREAM, SealedStream
from novakms.wire.messages import parse_close_notice
from tests.harness.clock import unix_clock
from tests.harness.registry import GatedSource
from tests.harness.server import MemoryServer, app_registry, start_memory_server

SECRET = bytes(range(32))
NODE = LocalSigner(hashlib.sha256(b"novakms lifecycle test node").digest())
APP = LocalSigner(hashlib.sha256(b"novakms lifecycle test app").digest())
WATCHER = LocalSigner(hashlib.sha256(b"novakms lifecycle test watcher").digest())


async def serve(nursery: trio.Nursery, limits: Limits, *, gated: bool = False) -> MemoryServer:
    """A server of SECRET, alone: its store sweeper and replicator (a static registry has
    peers) sleep through the test rather than waking every second / push interval."""
    limits = dataclasses.replace(limits, sweep_interval=10**6, push_interval=10**6)
    registry: Any = app_registry(node=NODE, apps=[APP, WATCHER])
    return await start_memory_server(
        nursery,
        signer=NODE,
        auth=GatedSource(registry) if gated else registry,
        clock=unix_clock(),
        limits=limits,
        master_secret=SECRET,
    )


async def next_notice(sealed: SealedStream) -> NovaKMSError | None:
    item = await sealed.receive()
    assert item is not END_OF_STREAM
    return parse_close_notice(item)


async def test_the_handshake_deadline_closes_a_silent_connection(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    srv = await serve(nursery, Limits(handshake_timeout=10.0))
    stream = await srv.dial()
    began = trio.current_time()
    with trio.fail_after(20):  # virtual seconds: a broken deadline fails rather than hangs
        assert await stream.receive_some(100) == b""  # closed by the server
    assert trio.current_time() - began == pytest.approx(10.0)
    await stream.aclose()


async def test_an_idle_session_gets_a_notice_then_the_end_of_the_stream(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    srv = await serve(nursery, Limits())  # the real idle_timeout: 300 s, no real time
    s = await srv.session(APP)
    await s.send({"id": 1, "op": "health", "args": {}})
    assert (await s.receive())["ok"] == {"status": "ok"}
    answered = trio.current_time()
    with trio.fail_after(2 * Limits().idle_timeout):
        notice = await next_notice(s)  # then nothing: the sealed notice, then the end of stream
    assert isinstance(notice, Unavailable) and notice.reason == "idle_timeout"
    assert trio.current_time() - answered == pytest.approx(Limits().idle_timeout)
    assert await s.receive() is END_OF_STREAM
    await s.framed.aclose()


async def test_a_request_restarts_the_idle_timeout(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    limits = Limits(idle_timeout=60.0)
    srv = await serve(nursery, limits)
    async with await srv.connect(signer=APP) as kms:
        for _ in range(5):
            await trio.sleep(limits.idle_timeout * 0.9)
            assert (await kms.health()).status == "ok"


async def test_anonymous_sessions_have_a_short_idle_timeout(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    limits = Limits()
    srv = await serve(nursery, limits)
    async with await srv.connect(signer=APP) as app:
        anonymous = await srv.session()
        began = trio.current_time()
        with trio.fail_after(2 * limits.anonymous_idle_timeout):
            notice = await next_notice(anonymous)
        assert notice is not None and notice.details["reason"] == "idle_timeout"
        assert trio.current_time() - began == pytest.approx(limits.anonymous_idle_timeout)
        await anonymous.framed.aclose()
        assert (await app.health()).status == "ok"  # the app's session outlives it


async def test_graceful_shutdown_finishes_inflight_requests(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    srv = await serve(nursery, Limits(drain_timeout=5), gated=True)
    gated = srv.node.registry
    assert isinstance(gated, GatedSource)
    watcher = await srv.session(WATCHER)
    async with await srv.connect(signer=APP) as kms:
        result: list[Any] = []

        async def pending() -> None:
            result.append(await kms.derive("drain"))

        async with trio.open_nursery() as requests:
            requests.start_soon(pending)
            await trio.testing.wait_all_tasks_blocked()
            srv.server.shutdown()
            await trio.sleep(1.0)  # within the drain deadline
            with pytest.raises(TransportError):  # no longer listening
                await srv.connect()
            gated.gate.set()
        assert result[0].key == derive_app_key(master_secret=SECRET, app_id=1, path="drain")
        # Every open session is told why it ends: the sealed notice, then the end of the stream.
        with trio.fail_after(1):
            notice = await next_notice(watcher)
        assert isinstance(notice, Unavailable) and notice.reason == "shutting_down"
        assert await watcher.receive() is END_OF_STREAM
        await watcher.framed.aclose()


async def test_the_drain_deadline_cuts_a_request_that_never_finishes(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    limits = Limits(drain_timeout=5)
    srv = await serve(nursery, limits, gated=True)
    stopped = trio.Event()
    async with await srv.connect(signer=APP) as kms:

        async def stuck() -> None:
            with pytest.raises(NovaKMSError):  # the connection ends under the request
                await kms.call("derive", {"path": "never"}, timeout=3600)
            stopped.set()

        nursery.start_soon(stuck)
        await trio.testing.wait_all_tasks_blocked()
        began = trio.current_time()
        srv.server.shutdown()
        with trio.fail_after(2 * limits.drain_timeout):
            await stopped.wait()
        # cut at the drain deadline, not before, and not left hanging
        assert trio.current_time() - began == pytest.approx(limits.drain_timeout)
