"""The server's accept loop (``Server._serve_listener``), which does what ``trio.serve_listeners``
did for it: out of descriptors or memory it logs and retries; any other accept error stops the
server; it closes its listener when it stops; every accepted stream is closed exactly by its
connection's handler.
"""

from __future__ import annotations

import errno
import hashlib
import logging

import pytest
import trio
import trio.testing

from novakms.client.aio import Client
from novakms.config import Limits
from novakms.crypto.signer import LocalSigner
from novakms.server.server import Server
from tests.harness.build import build_node, build_server
from tests.harness.clock import unix_clock
from tests.harness.memory import MemoryNetwork
from tests.harness.server import app_registry

NODE = LocalSigner(hashlib.sha256(b"novakms accept loop test node").digest())
APP = LocalSigner(hashlib.sha256(b"novakms accept loop test app").digest())
ADDRESS = "kms:7000"


class FailingListener(trio.abc.Listener[trio.abc.Stream]):
    """A listener whose first ``accept`` calls fail with ``errors``, then accepts as ``inner``."""

    def __init__(self, inner: trio.abc.Listener[trio.abc.Stream], errors: list[int]) -> None:
        self.inner = inner
        self.errors = list(errors)
        self.closed = False

    async def accept(self) -> trio.abc.Stream:
        await trio.lowlevel.checkpoint()
        if self.errors:
            code = self.errors.pop(0)
            raise OSError(code, f"accept failed: {errno.errorcode[code]}")
        return await self.inner.accept()

    async def aclose(self) -> None:
        self.closed = True
        await self.inner.aclose()


def make_server(listener: trio.abc.Listener[trio.abc.Stream]) -> Server:
    node = build_node(
        signer=NODE,
        auth=app_registry(node=NODE, apps=[APP]),
        limits=Limits(sweep_interval=10**6, push_interval=10**6),
        master_secret=bytes(range(32)),
        clock=unix_clock(),
    )
    return build_server(node=node, listeners=[(listener, ADDRESS)])


@pytest.mark.parametrize("code", [errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS])
async def test_out_of_resources_is_logged_and_accepting_goes_on(
    code: int, caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    network = MemoryNetwork()
    listener = FailingListener(network.listen(ADDRESS), [code, code])
    server = make_server(listener)
    with caplog.at_level(logging.ERROR, logger="trio.serve_listeners"):
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            client = await Client.connect(
                ADDRESS, signer=APP, dial=network.dialer("test"), clock=unix_clock()
            )
            async with client:
                await client.health()
            server.shutdown()
    failures = [r for r in caplog.records if r.name == "trio.serve_listeners"]
    assert len(failures) == 2
    assert errno.errorcode[code] in failures[0].getMessage()
    assert failures[0].exc_info is not None
    assert listener.closed


async def test_another_accept_error_stops_the_server() -> None:
    network = MemoryNetwork()
    listener = FailingListener(network.listen(ADDRESS), [errno.EINVAL])
    server = make_server(listener)
    with pytest.RaisesGroup(OSError, flatten_subgroups=True):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.run)
    assert listener.closed


async def test_each_stream_is_closed_once_by_its_handler(
    autojump_clock: trio.testing.MockClock,
) -> None:
    network = MemoryNetwork()
    closes: list[int] = []
    inner = network.listen(ADDRESS)

    class CountingListener(trio.abc.Listener[trio.abc.Stream]):
        async def accept(self) -> trio.abc.Stream:
            stream = await inner.accept()
            original = stream.aclose

            async def aclose() -> None:
                closes.append(1)
                await original()

            stream.aclose = aclose  # type: ignore[method-assign]
            return stream

        async def aclose(self) -> None:
            await inner.aclose()

    server = make_server(CountingListener())
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        for _ in range(3):
            client = await Client.connect(
                ADDRESS, signer=APP, dial=network.dialer("test"), clock=unix_clock()
            )
            await client.aclose()
        await trio.testing.wait_all_tasks_blocked()
        assert len(closes) == 3
        server.shutdown()
