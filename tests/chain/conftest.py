"""Fixtures: a fresh anvil per test (it starts in tens of milliseconds), and RPC clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from novakms.chain.rpc import JsonRpcClient
from novakms.dev.anvil import AnvilProcess


@pytest.fixture
def start_anvil() -> Iterator[Callable[..., AnvilProcess]]:
    """A factory: ``start_anvil(**AnvilProcess.start options)``; every anvil is stopped after
    the test."""
    started: list[AnvilProcess] = []

    def start(**options: Any) -> AnvilProcess:
        node = AnvilProcess()
        started.append(node)
        return node.start(**options)

    yield start
    for node in started:
        node.stop()


@pytest.fixture
def anvil(start_anvil: Callable[..., AnvilProcess]) -> AnvilProcess:
    """A fresh anvil on a free port (defaults: automine, ``finalized`` == ``latest``)."""
    return start_anvil()


@pytest.fixture
async def rpc(anvil: AnvilProcess) -> AsyncIterator[JsonRpcClient]:
    """A JSON-RPC client of :func:`anvil`."""
    async with JsonRpcClient(anvil.url, timeout=5.0) as client:
        yield client
